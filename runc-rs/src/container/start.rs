//! `start`: release init from exec.fifo.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::{load, ContainerError};
use crate::state::{ContainerState, Status, EXEC_FIFO};

pub fn start(root: &Path, id: &str) -> Result<ContainerState, ContainerError> {
    let st = load(root, id)?;
    match st.status(root) {
        Status::Created => {}
        Status::Stopped => {
            return Err(ContainerError::Precondition(
                "cannot start a container that has stopped".into(),
            ))
        }
        Status::Running | Status::Paused => {
            return Err(ContainerError::Precondition(
                "cannot start an already running container".into(),
            ))
        }
        Status::Creating => {
            return Err(ContainerError::Precondition(
                "cannot start a container that is still being created".into(),
            ))
        }
    }
    let fifo_path = st.dir(root).join(EXEC_FIFO);
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo_path)
        .map_err(super::io_err(format!("open {}", fifo_path.display())))?;
    // Wait for init's byte, but give up if init dies instead of opening the
    // fifo (a blocking open would hang forever then).
    loop {
        let mut fds = [PollFd::new(fifo.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(n) if n > 0 => {
                let mut b = [0u8; 1];
                let r = nix::unistd::read(fifo.as_raw_fd(), &mut b);
                if matches!(r, Ok(1)) {
                    break;
                }
                // POLLHUP without data: the writer went away.
                if !st.init_alive() {
                    return Err(ContainerError::Precondition(
                        "container init exited before start".into(),
                    ));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            _ => {
                if !st.init_alive() {
                    return Err(ContainerError::Precondition(
                        "container init exited before start".into(),
                    ));
                }
            }
        }
    }
    let _ = std::fs::remove_file(&fifo_path);
    // No poststart hooks here: runc 1.1 runs them at the end of `create`.
    Ok(st)
}

use std::os::unix::fs::OpenOptionsExt;
