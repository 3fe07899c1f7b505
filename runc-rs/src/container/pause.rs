//! `pause` and `resume`: the cgroup freezer. The status "paused" is not
//! stored; `state` reads it from the freezer.

use std::path::Path;

use super::{load, ContainerError};
use crate::state::{ContainerState, Status};

fn cgroup(st: &ContainerState) -> Result<&cgroups::Manager, ContainerError> {
    st.cgroup.as_ref().ok_or_else(|| {
        ContainerError::Precondition(
            "the container has no cgroup (not delegated to this user?): cannot freeze it".into(),
        )
    })
}

/// Freezes a running (or created) container, as runc does.
pub fn pause(root: &Path, id: &str) -> Result<(), ContainerError> {
    let st = load(root, id)?;
    match st.status(root) {
        Status::Running | Status::Created => Ok(cgroup(&st)?.freeze()?),
        _ => Err(ContainerError::Precondition("container not running".into())),
    }
}

/// Thaws a paused container.
pub fn resume(root: &Path, id: &str) -> Result<(), ContainerError> {
    let st = load(root, id)?;
    if st.status(root) != Status::Paused {
        return Err(ContainerError::Precondition("container not paused".into()));
    }
    Ok(cgroup(&st)?.thaw()?)
}
