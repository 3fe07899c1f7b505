//! One file per runc operation.

pub mod create;
pub mod delete;
pub mod kill;
pub mod list;
pub mod run;
pub mod start;
pub mod state_cmd;

use std::path::Path;

use crate::state::{ContainerState, Status};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Spec(#[from] crate::spec::SpecError),
    #[error(transparent)]
    Launch(#[from] crate::process::parent::LaunchError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error("cgroup: {0}")]
    Cgroup(#[from] cgroups::Error),
    #[error(transparent)]
    Util(#[from] crate::utils::UtilError),
    #[error(transparent)]
    Tty(#[from] crate::tty::TtyError),
    #[error("{0}")]
    Precondition(String),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Sys { what: String, source: nix::Error },
}

pub fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
    let what = what.into();
    move |source| ContainerError::Io { what, source }
}

/// The runtime-spec state JSON that hooks read on stdin.
pub fn hook_state(st: &ContainerState, status: Status) -> Vec<u8> {
    serde_json::json!({
        "ociVersion": crate::state::OCI_VERSION,
        "id": st.id,
        "status": status.to_string(),
        "pid": st.pid,
        "bundle": st.bundle,
        "annotations": st.annotations,
    })
    .to_string()
    .into_bytes()
}

/// Waits until `pid` (a process we did not fork) has gone, up to `timeout`.
pub fn wait_gone(st: &ContainerState, timeout: std::time::Duration) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if !st.init_alive() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    !st.init_alive()
}

pub fn load(root: &Path, id: &str) -> Result<ContainerState, ContainerError> {
    Ok(ContainerState::load(root, id)?)
}
