//! `delete`: remove a stopped (or, with `--force`, any) container: its
//! processes, cgroup and state dir; then run poststop hooks.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

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
            return Err(ContainerError::Precondition(format!(
                "cannot delete container {id} that is not stopped: {s}"
            )));
        }
    }
    destroy(root, &st)
}

fn kill_and_wait(st: &ContainerState) {
    // Opened before the kill, and only if the pid is still our init's: the
    // pidfd then cannot refer to a process that reused the pid.
    let pidfd = pidfd_open(st.pid).filter(|_| st.init_alive());
    if let Some(cg) = &st.cgroup {
        let _ = cg.kill_all(libc::SIGKILL);
    }
    if st.init_alive() {
        unsafe { libc::kill(st.pid, libc::SIGKILL) };
    }
    let timeout = Duration::from_secs(10);
    match pidfd {
        // Readable once init has exited (a zombie included), with no polling delay.
        Some(fd) => {
            let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
            let _ = poll(
                &mut fds,
                PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX),
            );
        }
        None => {
            super::wait_gone(st, timeout);
        }
    }
}

/// pidfd_open(2); None on kernels without it (before 5.3) or if `pid` is gone.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    if pid <= 0 {
        return None;
    }
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // Safety: a new fd that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
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
    std::fs::remove_dir_all(st.dir(root))
        .map_err(super::io_err(format!("remove {}", st.dir(root).display())))?;
    run_poststop(st);
    Ok(())
}

/// Runs the poststop hooks of a container whose init is gone (so, as in
/// runc, their state has no pid). Failures are logged, not fatal: the
/// container is gone already.
pub(super) fn run_poststop(st: &ContainerState) {
    let poststop = st.hooks.as_ref().and_then(|h| h.poststop().clone());
    let gone = ContainerState {
        pid: 0,
        ..st.clone()
    };
    if let Err(e) = crate::hooks::run_all(
        "poststop",
        poststop.as_ref(),
        &hook_state(&gone, Status::Stopped),
    ) {
        log::warn!("{e}");
    }
}
