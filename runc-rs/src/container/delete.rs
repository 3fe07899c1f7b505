//! `delete`: remove a stopped (or, with `--force`, any) container: its
//! processes, cgroup and state dir; then run poststop hooks.

use std::path::Path;
use std::time::Duration;

use super::{hook_state, ContainerError};
use crate::state::{ContainerState, StateError, Status};

pub fn delete(root: &Path, id: &str, force: bool) -> Result<(), ContainerError> {
    let st = match ContainerState::load(root, id) {
        Ok(st) => st,
        Err(StateError::NotExist) => {
            // A create that died before writing state may have left the dir.
            let dir = crate::state::container_dir(root, id);
            crate::state::validate_id(id)?;
            let existed = dir.exists();
            let _ = std::fs::remove_dir_all(&dir);
            if force || existed {
                return Ok(());
            }
            return Err(StateError::NotExist.into());
        }
        Err(e) if force => {
            log::warn!("delete --force: unreadable state of {id}: {e}; removing its dir");
            let _ = std::fs::remove_dir_all(crate::state::container_dir(root, id));
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    match st.status(root) {
        Status::Stopped => {}
        Status::Created | Status::Creating => kill_and_wait(&st),
        s if force => {
            if s == Status::Paused {
                if let Some(cg) = &st.cgroup {
                    let _ = cg.thaw();
                }
            }
            kill_and_wait(&st);
        }
        s => {
            return Err(ContainerError::Precondition(format!("cannot delete container {id} that is not stopped: {s}")));
        }
    }
    destroy(root, &st)
}

fn kill_and_wait(st: &ContainerState) {
    if let Some(cg) = &st.cgroup {
        let _ = cg.kill_all(libc::SIGKILL);
    }
    if st.init_alive() {
        unsafe { libc::kill(st.pid, libc::SIGKILL) };
    }
    super::wait_gone(st, Duration::from_secs(10));
}

/// Removes what is left of a container that has no running process.
fn destroy(root: &Path, st: &ContainerState) -> Result<(), ContainerError> {
    if st.shared_pid_ns {
        // Without its own pid namespace, init's death does not take the
        // other processes with it.
        if let Some(cg) = &st.cgroup {
            let _ = cg.kill_all(libc::SIGKILL);
        }
    }
    if let Some(cg) = &st.cgroup {
        cg.delete()?;
    }
    std::fs::remove_dir_all(st.dir(root)).map_err(super::io_err(format!("remove {}", st.dir(root).display())))?;
    run_poststop(st);
    Ok(())
}

/// Runs the poststop hooks of a container whose init is gone (so, as in
/// runc, their state has no pid). Failures are logged, not fatal: the
/// container is gone already.
pub(super) fn run_poststop(st: &ContainerState) {
    let poststop = st.hooks.as_ref().and_then(|h| h.poststop().clone());
    let gone = ContainerState { pid: 0, ..st.clone() };
    if let Err(e) = crate::hooks::run_all("poststop", poststop.as_ref(), &hook_state(&gone, Status::Stopped)) {
        log::warn!("{e}");
    }
}
