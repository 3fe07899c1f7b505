//! `run`: create + start, and in the foreground wait for the container,
//! forwarding signals to it, then delete it and return its exit code.

use std::path::Path;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::create::{create, CreateOpts};
use super::{delete, start, ContainerError};

const FORWARDED: [Signal; 9] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGPIPE,
];

pub fn run(root: &Path, opts: &CreateOpts, detach: bool) -> Result<i32, ContainerError> {
    let st = create(root, opts)?;
    if detach {
        start::start(root, &opts.id)?;
        return Ok(0);
    }
    // Block the signals we forward (and SIGCHLD) now that the container's
    // process exists: a mask set before the fork would have been inherited.
    let mut set = SigSet::empty();
    for s in FORWARDED {
        set.add(s);
    }
    set.add(Signal::SIGCHLD);
    let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&set), None);
    if let Err(e) = start::start(root, &opts.id) {
        let _ = delete::delete(root, &opts.id, true);
        return Err(e);
    }
    let pid = Pid::from_raw(st.pid);
    let code = loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, c)) => break c,
            Ok(WaitStatus::Signaled(_, s, _)) => break 128 + s as i32,
            Ok(_) => {}
            Err(nix::Error::ECHILD) => break 255,
            Err(_) => {}
        }
        let ts = libc::timespec { tv_sec: 0, tv_nsec: 200_000_000 };
        let sig = unsafe { libc::sigtimedwait(set.as_ref(), std::ptr::null_mut(), &ts) };
        if sig > 0 && sig != libc::SIGCHLD {
            unsafe { libc::kill(st.pid, sig) };
        }
    };
    delete::delete(root, &opts.id, true)?;
    Ok(code)
}
