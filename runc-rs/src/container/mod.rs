//! One file per runc operation.

pub mod checkpoint;
pub mod create;
pub mod criu;
pub mod criu_rpc;
pub mod delete;
pub mod events;
pub mod exec;
pub mod foreground;
pub mod kill;
pub mod list;
pub mod pause;
pub mod ps;
pub mod restore;
pub mod run;
pub mod start;
pub mod state_cmd;
pub mod stats;
pub mod stdio;
pub mod update;

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
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Sys { what: String, source: nix::Error },
}

pub fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ContainerError {
    let what = what.into();
    move |source| ContainerError::Io { what, source }
}

/// The runtime-spec state JSON that hooks read on stdin. As in runc (Go's
/// `omitempty`), a zero pid and empty annotations are left out: poststop
/// hooks, which run once init is gone, get no pid.
pub fn hook_state(st: &ContainerState, status: Status) -> Vec<u8> {
    state_json(&st.id, status, st.pid, &st.bundle, &st.annotations)
}

pub fn state_json(
    id: &str,
    status: Status,
    pid: i32,
    bundle: &Path,
    annotations: &std::collections::BTreeMap<String, String>,
) -> Vec<u8> {
    let mut v = serde_json::json!({
        "ociVersion": crate::state::OCI_VERSION,
        "id": id,
        "status": status.to_string(),
        "bundle": bundle,
    });
    if pid > 0 {
        v["pid"] = pid.into();
    }
    if !annotations.is_empty() {
        v["annotations"] = serde_json::json!(annotations);
    }
    v.to_string().into_bytes()
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
