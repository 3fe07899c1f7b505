//! A process in the foreground (`run`, `exec`, `restore` without -d): the
//! runtime forwards the signals it receives to the process, relays its pty
//! when it has one, and returns its exit code (128+N when killed by signal
//! N), as runc's signal handler does.
//!
//! Signals are blocked and read from a signalfd, so one poll(2) loop serves
//! signals, the child's exit (SIGCHLD) and the pty at once, with no signal
//! handler. The blocked mask is inherited by children forked while it is in
//! place; the container process unblocks everything before execve.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::stdio::write_all;
use super::ContainerError;

/// Every signal except those the kernel raises synchronously for a fault of
/// the runtime itself (which must keep their default action), SIGKILL and
/// SIGSTOP (which cannot be caught) and SIGURG (which Go, and so runc,
/// keeps for itself). SIGCHLD and SIGWINCH are blocked too but handled.
fn forwarded() -> SigSet {
    let mut set = SigSet::empty();
    let skip = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGSEGV,
        libc::SIGBUS,
        libc::SIGFPE,
        libc::SIGILL,
        libc::SIGTRAP,
        libc::SIGURG,
    ];
    for sig in 1..=31 {
        if skip.contains(&sig) {
            continue;
        }
        if let Ok(s) = Signal::try_from(sig) {
            set.add(s);
        }
    }
    set
}

/// Signals blocked for forwarding; dropping it restores the old mask.
pub struct Foreground {
    old: SigSet,
    sfd: SignalFd,
}

impl Foreground {
    /// Blocks the forwarded signals: from now on they queue for [`wait`].
    pub fn block() -> Result<Foreground, ContainerError> {
        let set = forwarded();
        let mut old = SigSet::empty();
        nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), Some(&mut old)).map_err(
            |source| ContainerError::Sys {
                what: "block signals".into(),
                source,
            },
        )?;
        let sfd = SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
            .map_err(|source| ContainerError::Sys {
                what: "signalfd".into(),
                source,
            })?;
        Ok(Foreground { old, sfd })
    }

    /// Forwards signals to `pid` (our child) until it exits; returns its
    /// exit code. With a console, relays between our stdio and its pty.
    pub fn wait(&mut self, pid: i32, mut console: Option<&mut Console>) -> i32 {
        if let Some(c) = console.as_deref_mut() {
            c.resize();
        }
        loop {
            if let Some(code) = reap(pid) {
                if let Some(c) = console.as_deref_mut() {
                    c.drain();
                }
                return code;
            }
            let sfd = unsafe { BorrowedFd::borrow_raw(self.sfd.as_raw_fd()) };
            let mut fds = vec![PollFd::new(sfd, PollFlags::POLLIN)];
            if let Some(c) = console.as_deref() {
                fds.push(PollFd::new(c.master.as_fd(), PollFlags::POLLIN));
                if c.stdin_open {
                    fds.push(PollFd::new(
                        unsafe { BorrowedFd::borrow_raw(0) },
                        PollFlags::POLLIN,
                    ));
                }
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(e) => {
                    log::warn!("poll: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            if ready[0] {
                while let Ok(Some(info)) = self.sfd.read_signal() {
                    let sig = info.ssi_signo as i32;
                    match sig {
                        libc::SIGCHLD => {}
                        libc::SIGWINCH if console.is_some() => {
                            if let Some(c) = console.as_deref_mut() {
                                c.resize();
                            }
                        }
                        _ => {
                            log::debug!("forwarding signal {sig} to {pid}");
                            unsafe { libc::kill(pid, sig) };
                        }
                    }
                }
            }
            if let Some(c) = console.as_deref_mut() {
                if ready.get(1) == Some(&true) {
                    c.pump_out();
                }
                if ready.get(2) == Some(&true) {
                    c.pump_in();
                }
            }
        }
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.old), None);
    }
}

/// Reaps every exited child; the exit code of `pid` once it has exited.
fn reap(pid: i32) -> Option<i32> {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, c)) if p.as_raw() == pid => return Some(c),
            Ok(WaitStatus::Signaled(p, s, _)) if p.as_raw() == pid => return Some(128 + s as i32),
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) => continue,
            // Not our child (any more): nothing to wait for.
            Err(nix::Error::ECHILD) => return Some(255),
            Err(nix::Error::EINTR) => continue,
            Err(_) => return None,
        }
    }
}

/// The process's pty master, relayed to our stdio; our terminal (if we have
/// one) is in raw mode meanwhile, as runc puts it.
pub struct Console {
    master: OwnedFd,
    host: Option<(OwnedFd, Termios)>,
    stdin_open: bool,
}

impl Console {
    /// Our terminal, as runc finds it: the first of stderr, stdout, stdin
    /// that is one, else the controlling terminal. Call before starting the
    /// process, so that a missing terminal fails early.
    pub fn host_terminal() -> Result<OwnedFd, ContainerError> {
        for fd in [2, 1, 0] {
            if nix::unistd::isatty(fd).unwrap_or(false) {
                let dup = nix::unistd::dup(fd).map_err(|source| ContainerError::Sys {
                    what: "dup terminal".into(),
                    source,
                })?;
                return Ok(unsafe { OwnedFd::from_raw_fd(dup) });
            }
        }
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/tty")
            .map_err(super::io_err("open /dev/tty"))?;
        Ok(f.into())
    }

    /// Takes over `master`; puts `host` in raw mode until dropped.
    pub fn new(master: OwnedFd, host: OwnedFd) -> Result<Console, ContainerError> {
        // Like runc: no "\n" -> "\r\n" translation on the process's side.
        if let Ok(mut t) = termios::tcgetattr(&master) {
            t.output_flags.remove(termios::OutputFlags::ONLCR);
            let _ = termios::tcsetattr(&master, SetArg::TCSANOW, &t);
        }
        let saved = termios::tcgetattr(&host).map_err(|source| ContainerError::Sys {
            what: "get terminal attributes".into(),
            source,
        })?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        // runc's "raw" mode (containerd/console) keeps output processing on:
        // what the process writes reaches the caller's terminal as under runc.
        raw.output_flags.insert(termios::OutputFlags::OPOST);
        termios::tcsetattr(&host, SetArg::TCSANOW, &raw).map_err(|source| ContainerError::Sys {
            what: "set the terminal to raw mode".into(),
            source,
        })?;
        set_nonblocking(master.as_raw_fd());
        Ok(Console {
            master,
            host: Some((host, saved)),
            stdin_open: true,
        })
    }

    fn resize(&mut self) {
        let Some((host, _)) = &self.host else { return };
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        if unsafe { libc::ioctl(host.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) } == 0 {
            unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        }
    }

    /// master -> stdout, what is available now.
    fn pump_out(&mut self) {
        let mut buf = [0u8; 32 * 1024];
        loop {
            match nix::unistd::read(self.master.as_raw_fd(), &mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    write_all(1, &buf[..n]);
                }
            }
        }
    }

    /// stdin -> master, one read; EOF or an error ends the copy.
    fn pump_in(&mut self) {
        let mut buf = [0u8; 32 * 1024];
        match nix::unistd::read(0, &mut buf) {
            Ok(0) => self.stdin_open = false,
            Ok(n) => {
                write_all(self.master.as_raw_fd(), &buf[..n]);
            }
            Err(nix::Error::EAGAIN) | Err(nix::Error::EINTR) => {}
            Err(_) => self.stdin_open = false,
        }
    }

    /// What the process wrote before it exited.
    fn drain(&mut self) {
        self.pump_out();
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some((host, saved)) = self.host.take() {
            let _ = termios::tcsetattr(&host, SetArg::TCSANOW, &saved);
        }
    }
}

fn set_nonblocking(fd: RawFd) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let _ = fcntl(
            fd,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
        );
    }
}
