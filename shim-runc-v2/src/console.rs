//! The console socket: where the runtime sends a terminal process's pty
//! master (`--console-socket`), received with SCM_RIGHTS.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{io_ctx, Error, Result};

/// A unix socket the runtime sends the pty master to (`--console-socket`),
/// in a private temporary directory removed on drop.
pub struct ConsoleSocket {
    dir: PathBuf,
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// The directory is made in `$TMPDIR` (else /tmp), as the Go shim's
    /// is: where an operator has moved containerd's temporary files.
    pub fn new() -> Result<ConsoleSocket> {
        let template = std::env::temp_dir().join("pty-rs-XXXXXX");
        let dir = nix::unistd::mkdtemp(&template)
            .map_err(|e| Error::sys(format!("mkdtemp {}", template.display()), e))?;
        let path = dir.join("pty.sock");
        let listener = UnixListener::bind(&path).map_err(io_ctx("bind console socket"))?;
        Ok(ConsoleSocket {
            dir,
            path,
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept the runtime's connection and receive the master (SCM_RIGHTS).
    pub fn receive_master(&self) -> Result<File> {
        let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(10_000u16)) {
            Ok(0) => {
                return Err(Error::Runtime(
                    "no console from the runtime within 10s".into(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(Error::sys("poll console socket", e)),
        }
        let (conn, _) = self.listener.accept().map_err(io_ctx("accept console"))?;
        let mut name = [0u8; 4096];
        let mut iov = [io::IoSliceMut::new(&mut name)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| Error::sys("receive console master", e))?;
        for c in msg.cmsgs().map_err(|e| Error::sys("console cmsg", e))? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                if let Some(&fd) = fds.first() {
                    use std::os::fd::FromRawFd;
                    for &extra in &fds[1..] {
                        let _ = nix::unistd::close(extra);
                    }
                    return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
        }
        Err(Error::Runtime(
            "console socket message carried no fd".into(),
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}
