//! `kill`: a signal to init, or with `--all` to every process of the cgroup.

use std::path::Path;

use nix::sys::signal::Signal;

use super::{load, ContainerError};
use crate::state::Status;

pub fn kill(root: &Path, id: &str, signal: i32, all: bool) -> Result<(), ContainerError> {
    let st = load(root, id)?;
    let status = st.status(root);
    if status == Status::Stopped && !all {
        return Err(ContainerError::Precondition("container not running".into()));
    }
    if all {
        if let Some(cg) = &st.cgroup {
            cg.kill_all(signal)?;
            return Ok(());
        }
    }
    let sig = Signal::try_from(signal).ok();
    let rc = unsafe { libc::kill(st.pid, signal) };
    if rc != 0 {
        let e = nix::Error::last();
        if e == nix::Error::ESRCH {
            return Err(ContainerError::Precondition("container not running".into()));
        }
        return Err(ContainerError::Sys {
            what: format!("kill {} {:?}", st.pid, sig),
            source: e,
        });
    }
    Ok(())
}
