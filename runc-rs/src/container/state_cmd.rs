//! `state`: the runtime-spec state of one container as JSON.

use std::path::Path;

use super::{load, ContainerError};

pub fn state_json(root: &Path, id: &str) -> Result<String, ContainerError> {
    let st = load(root, id)?;
    let mut public = st.public(root);
    // runc's `state` leaves "owner" empty; only `list` fills it in.
    public.owner = String::new();
    Ok(serde_json::to_string_pretty(&public).expect("state serializes"))
}
