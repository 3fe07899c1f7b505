//! `state`: the runtime-spec state of one container as JSON.

use std::path::Path;

use super::{load, ContainerError};

pub fn state_json(root: &Path, id: &str) -> Result<String, ContainerError> {
    let st = load(root, id)?;
    Ok(serde_json::to_string_pretty(&st.public(root)).expect("state serializes"))
}
