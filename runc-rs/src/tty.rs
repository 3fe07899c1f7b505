//! Console handling: the container's pty is created inside the container
//! (so it belongs to the container's devpts) and its master is sent to the
//! caller's `--console-socket` over SCM_RIGHTS, as runc does.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

#[derive(Debug, thiserror::Error)]
pub enum TtyError {
    #[error("connect console socket {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("create pty: {0}")]
    Pty(nix::Error),
    #[error("send pty master over the console socket: {0}")]
    Send(nix::Error),
    #[error("set up the pty as stdio: {0}")]
    Stdio(nix::Error),
}

pub fn connect(path: &Path) -> Result<OwnedFd, TtyError> {
    let s = std::os::unix::net::UnixStream::connect(path).map_err(|source| TtyError::Connect {
        path: path.display().to_string(),
        source,
    })?;
    Ok(s.into())
}

/// Sends `fd` with `name` as the payload (runc sends the pty's path).
pub fn send_fd(sock: RawFd, name: &str, fd: RawFd) -> nix::Result<()> {
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(name.as_bytes())];
    sendmsg::<()>(sock, &iov, &cmsg, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receives one fd sent with [`send_fd`] (the payload is discarded);
/// `None` when the peer closed the socket without sending one.
pub fn recv_fd(sock: RawFd) -> nix::Result<Option<OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned};
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = loop {
        match recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
            Err(nix::Error::EINTR) => continue,
            r => break r?,
        }
    };
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                return Ok(Some(unsafe { OwnedFd::from_raw_fd(*fd) }));
            }
        }
    }
    Ok(None)
}

/// Opens a new pty in the container's /dev/pts. Returns (master, slave, slave path).
pub fn open_pty() -> Result<(OwnedFd, OwnedFd, String), TtyError> {
    use nix::fcntl::OFlag;
    let master = nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(TtyError::Pty)?;
    nix::pty::grantpt(&master).map_err(TtyError::Pty)?;
    nix::pty::unlockpt(&master).map_err(TtyError::Pty)?;
    let name = nix::pty::ptsname_r(&master).map_err(TtyError::Pty)?;
    let slave = nix::fcntl::open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(TtyError::Pty)?;
    let master_fd = unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(master)) };
    let slave = unsafe { OwnedFd::from_raw_fd(slave) };
    Ok((master_fd, slave, name))
}

/// Makes `slave` the controlling terminal and stdin/stdout/stderr.
pub fn become_stdio(slave: &OwnedFd) -> Result<(), TtyError> {
    // Container processes are session leaders already (see init).
    match nix::unistd::setsid() {
        Ok(_) | Err(nix::Error::EPERM) => {}
        Err(e) => return Err(TtyError::Stdio(e)),
    }
    let rc = unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) };
    if rc != 0 {
        return Err(TtyError::Stdio(nix::Error::last()));
    }
    for target in 0..3 {
        nix::unistd::dup2(slave.as_raw_fd(), target).map_err(TtyError::Stdio)?;
    }
    Ok(())
}

pub fn set_size(fd: RawFd, rows: u16, cols: u16) {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}
