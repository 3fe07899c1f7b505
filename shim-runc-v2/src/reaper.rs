//! Child processes: the shim is a subreaper, so every container process
//! (reparented to it once `runc create` exits) and every runtime command it
//! runs becomes its child. One thread (the signal loop) reaps them all on
//! SIGCHLD; exits of commands the shim is waiting for go to their waiter,
//! every other exit goes to the task manager's exit channel. A command's
//! waiter also watches the command's pidfd and reaps it itself when it
//! gets there first: the kernel wakes it at the exit, one thread hop
//! sooner than through the signal thread.
//!
//! A container process's exit can be claimed the same way by the thread
//! that answers its Wait ([`claim_child`]): it handles the exit itself.
//!
//! A command's exit must never be taken for a container's, nor be lost
//! before its waiter registered: [`spawn`] forks with the command table
//! locked and records the pid before unlocking (so does [`spawn_fds`]), and the reaper first peeks
//! at a zombie (`waitid(WNOWAIT)`), then takes the lock, then reaps it. The
//! lock is held for the fork only, never while a command runs.
//!
//! Outside the serving shim (the `start` and `delete` actions) no reaper is
//! installed and [`Spawned::wait`] waits on the child directly.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::process::{ChildStdin, Command};
use std::sync::mpsc::Sender;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// A container process (or any unclaimed child) that exited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    /// Exit code, or 128 + signal number when killed by a signal.
    pub status: i32,
}

struct Reaper {
    /// Commands being waited for: pid -> exit status once reaped.
    cmds: Mutex<HashMap<i32, Option<i32>>>,
    cv: Condvar,
    sink: Mutex<Sender<Exit>>,
}

static REAPER: OnceLock<Reaper> = OnceLock::new();

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Make this process a child subreaper (orphaned descendants are
/// reparented to it instead of to pid 1).
pub fn set_subreaper() -> io::Result<()> {
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Install the process-wide reaper; exits not claimed by a command waiter
/// are sent to `sink`. The caller must call [`reap`] on every SIGCHLD.
pub fn install(sink: Sender<Exit>) {
    let _ = REAPER.set(Reaper {
        cmds: Mutex::new(HashMap::new()),
        cv: Condvar::new(),
        sink: Mutex::new(sink),
    });
}

/// A started command.
pub struct Spawned {
    pid: i32,
    /// The command's stdin when it was configured as piped.
    pub stdin: Option<ChildStdin>,
    /// Whether the reaper collects the exit status (into the command
    /// table); otherwise (no reaper installed) `waitpid` on the pid does.
    reaped: bool,
    /// Readable once the command exited: its waiter wakes on the exit
    /// itself and reaps it, rather than after the signal thread did.
    pidfd: Option<OwnedFd>,
}

/// A pidfd of `pid`, opened while the command table is locked (so the pid
/// cannot have been reaped and reused). None where the kernel has none.
fn open_pidfd(pid: i32) -> Option<OwnedFd> {
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Record `pid` in the command table, which was locked before the spawn
/// (see the module docs); whether the reaper is to collect it.
fn register(table: Option<MutexGuard<'_, HashMap<i32, Option<i32>>>>, pid: i32) -> bool {
    match table {
        Some(mut cmds) => {
            cmds.insert(pid, None);
            true
        }
        None => false,
    }
}

/// Start `cmd`, registering it with the reaper (when installed) so that its
/// exit status comes back through [`Spawned::wait`]. The child starts with
/// an empty signal mask (the serving shim blocks the signals it waits for,
/// and `std` does not reset the mask) and default SIGPIPE handling.
///
/// This forks the shim; runtime commands go through [`spawn_fds`] instead.
pub fn spawn(cmd: &mut Command) -> io::Result<Spawned> {
    use std::os::unix::process::CommandExt;
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            Ok(())
        });
    }
    let table = REAPER.get().map(|r| lock(&r.cmds));
    // Dropping the Child neither kills nor waits for it.
    let mut child = cmd.spawn()?;
    let pid = child.id() as i32;
    let stdin = child.stdin.take();
    let pidfd = table.as_ref().and_then(|_| open_pidfd(pid));
    let reaped = register(table, pid);
    Ok(Spawned {
        pid,
        stdin,
        reaped,
        pidfd,
    })
}

/// Start `program` with `args`, this process's environment, and `stdio` as
/// its fds 0, 1 and 2 (`None`: /dev/null), registered like [`spawn`].
///
/// Through `posix_spawn`, which neither forks the shim's address space nor
/// runs Rust in the child (the libc shares the parent's memory until the
/// exec, as vfork): the path every runtime command takes, several per
/// container. The child gets an empty signal mask and default SIGPIPE; an
/// exec failure is returned as the error.
pub fn spawn_fds(
    program: &std::path::Path,
    args: &[std::ffi::OsString],
    stdio: [Option<std::os::fd::OwnedFd>; 3],
) -> io::Result<Spawned> {
    use std::ffi::CString;
    use std::os::fd::AsRawFd;
    use std::os::unix::ffi::OsStrExt;

    let cstr = |b: &[u8]| CString::new(b).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let path = cstr(program.as_os_str().as_bytes())?;
    let mut argv_owned = vec![path.clone()];
    for a in args {
        argv_owned.push(cstr(a.as_bytes())?);
    }
    let mut argv: Vec<*mut libc::c_char> =
        argv_owned.iter().map(|c| c.as_ptr() as *mut _).collect();
    argv.push(std::ptr::null_mut());
    let devnull = c"/dev/null";

    let check = |rc: libc::c_int| {
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(rc))
        }
    };
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(e);
        }
        let result = (|| {
            for (target, fd) in stdio.iter().enumerate() {
                let target = target as libc::c_int;
                match fd {
                    // dup2 onto itself would keep close-on-exec.
                    Some(fd) if fd.as_raw_fd() == target => {}
                    Some(fd) => check(libc::posix_spawn_file_actions_adddup2(
                        &mut actions,
                        fd.as_raw_fd(),
                        target,
                    ))?,
                    None => check(libc::posix_spawn_file_actions_addopen(
                        &mut actions,
                        target,
                        devnull.as_ptr(),
                        libc::O_RDWR,
                        0,
                    ))?,
                }
            }
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            let mut pipe: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pipe);
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigmask(&mut attr, &empty))?;
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &pipe))?;
            check(libc::posix_spawnattr_setflags(
                &mut attr,
                (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short,
            ))?;
            extern "C" {
                static environ: *const *mut libc::c_char;
            }
            let table = REAPER.get().map(|r| lock(&r.cmds));
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &actions,
                &attr,
                argv.as_mut_ptr(),
                environ,
            ))?;
            let pidfd = table.as_ref().and_then(|_| open_pidfd(pid));
            let reaped = register(table, pid);
            Ok(Spawned {
                pid,
                stdin: None,
                reaped,
                pidfd,
            })
        })();
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        result
    }
}

impl Spawned {
    /// Without a reaper: `waitpid` on the command, polling when there is a
    /// deadline.
    fn waitpid_deadline(&self, deadline: Option<Instant>) -> io::Result<Option<i32>> {
        let flags = if deadline.is_some() { libc::WNOHANG } else { 0 };
        loop {
            let mut status: libc::c_int = 0;
            match unsafe { libc::waitpid(self.pid, &mut status, flags) } {
                p if p == self.pid => return Ok(Some(decode(status))),
                0 => {}
                _ => {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EINTR) {
                        return Err(e);
                    }
                    continue;
                }
            }
            match deadline {
                Some(d) if Instant::now() >= d => return Ok(None),
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Wait for the command to exit; its exit code (128 + signal if killed).
    pub fn wait(mut self) -> io::Result<i32> {
        self.wait_deadline(None)
            .and_then(|s| s.ok_or_else(|| io::Error::from(io::ErrorKind::TimedOut)))
    }

    /// Wait at most `timeout`: `None` if the command still runs (it can be
    /// waited for again).
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<i32>> {
        self.wait_deadline(Some(Instant::now() + timeout))
    }

    /// Without the reaper `waitpid`, with it [`wait_registered`].
    fn wait_deadline(&mut self, deadline: Option<Instant>) -> io::Result<Option<i32>> {
        if !self.reaped {
            return self.waitpid_deadline(deadline);
        }
        wait_registered(self.pid, self.pidfd.as_ref().map(|f| f.as_fd()), deadline)
    }
}

/// Wait for the exit of `pid`, registered in the command table: the status
/// from the table if the signal thread reaped it, else, once `pidfd` says
/// it exited, by reaping it here (with the table locked, so the signal
/// thread skips it). Without a pidfd, the table's condvar wakes the waiter.
/// `None` when `deadline` passed first.
fn wait_registered(
    pid: i32,
    pidfd: Option<BorrowedFd<'_>>,
    deadline: Option<Instant>,
) -> io::Result<Option<i32>> {
    let r = REAPER.get().expect("reaper installed");
    let mut cmds = lock(&r.cmds);
    loop {
        match cmds.get(&pid) {
            Some(Some(status)) => {
                let status = *status;
                cmds.remove(&pid);
                return Ok(Some(status));
            }
            Some(None) if pidfd.is_some() => {
                let mut status: libc::c_int = 0;
                let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                if got == pid {
                    cmds.remove(&pid);
                    return Ok(Some(decode(status)));
                }
                if got < 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() == Some(libc::ECHILD) {
                        cmds.remove(&pid);
                        return Err(e);
                    }
                }
            }
            Some(None) => {}
            None => {
                return Err(io::Error::other(format!(
                    "pid {pid} is not a registered command"
                )))
            }
        }
        let left = match deadline {
            None => None,
            Some(d) => match d.saturating_duration_since(Instant::now()) {
                left if left.is_zero() => return Ok(None),
                left => Some(left),
            },
        };
        cmds = match (pidfd, left) {
            (Some(pidfd), left) => {
                drop(cmds);
                wait_readable(pidfd, left)?;
                lock(&r.cmds)
            }
            (None, None) => r.cv.wait(cmds).unwrap_or_else(|e| e.into_inner()),
            (None, Some(left)) => {
                r.cv.wait_timeout(cmds, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        };
    }
}

/// The exit of a child (a container process), claimed by the thread that
/// will handle it: that thread wakes at the exit itself (the pidfd) and
/// reaps it, or finds the status the signal thread reaped for it, instead
/// of the exit going signal thread → exit channel → whoever waits, each a
/// wake-up that waits for a CPU.
pub struct ChildExit {
    pid: i32,
    pidfd: OwnedFd,
}

/// Claim the exit of the child `pid`; None when it is no (longer a) child,
/// or there is no reaper: its exit then comes through the exit channel.
pub fn claim_child(pid: i32) -> Option<ChildExit> {
    let r = REAPER.get()?;
    // Locked: the signal thread cannot reap `pid` (nor its number be
    // reused) between the check and the claim.
    let mut cmds = lock(&r.cmds);
    if cmds.contains_key(&pid) {
        return None;
    }
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::waitid(
            libc::P_PID,
            pid as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    if rc != 0 {
        return None; // ECHILD: reaped already, or never ours
    }
    let pidfd = open_pidfd(pid)?;
    cmds.insert(pid, None);
    Some(ChildExit { pid, pidfd })
}

impl ChildExit {
    /// Block until the child exited; its exit, reaped (None: someone else
    /// reaped it, which the claim rules out).
    pub fn wait(self) -> Option<Exit> {
        match wait_registered(self.pid, Some(self.pidfd.as_fd()), None) {
            Ok(status) => status.map(|status| Exit {
                pid: self.pid,
                status,
            }),
            Err(e) => {
                log::warn!("pid {}: {e}", self.pid);
                None
            }
        }
    }
}

/// Wait until `fd` is readable, at most `timeout` (None: no limit).
fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<()> {
    let timeout = match timeout {
        None => PollTimeout::NONE,
        Some(t) => PollTimeout::try_from(t.as_millis().max(1) as i32).unwrap_or(PollTimeout::MAX),
    };
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, timeout) {
        Ok(_) | Err(nix::errno::Errno::EINTR) => Ok(()),
        Err(e) => Err(io::Error::from(e)),
    }
}

fn decode(status: libc::c_int) -> i32 {
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        status
    }
}

/// Reap every child that has exited. Call on SIGCHLD, from one thread.
pub fn reap() {
    let Some(r) = REAPER.get() else {
        return;
    };
    loop {
        // Peek without reaping, so that a command whose spawn is still
        // registering (table locked) is not reaped behind its back.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let rc = unsafe {
            libc::waitid(
                libc::P_ALL,
                0,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return; // ECHILD: no children at all
        }
        let pid = unsafe { info.si_pid() };
        if pid == 0 {
            return; // children, but none exited
        }
        let mut cmds = lock(&r.cmds);
        let mut status: libc::c_int = 0;
        let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if got != pid {
            // Reaped meanwhile (std waits for a child whose exec failed).
            continue;
        }
        let status = decode(status);
        if let Some(slot) = cmds.get_mut(&pid) {
            *slot = Some(status);
            r.cv.notify_all();
            continue;
        }
        drop(cmds);
        log::debug!("reaped pid {pid} (exit status {status})");
        let _ = lock(&r.sink).send(Exit { pid, status });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_status() {
        assert_eq!(decode(3 << 8), 3);
        assert_eq!(decode(9), 137);
    }

    #[test]
    fn spawn_without_reaper_waits_directly() {
        // The test binary never installs the reaper.
        let s = spawn(Command::new("sh").args(["-c", "exit 7"])).unwrap();
        assert!(s.pid() > 0);
        assert_eq!(s.wait().unwrap(), 7);
    }

    fn memfd() -> std::fs::File {
        let fd = unsafe { libc::memfd_create(c"out".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(fd >= 0);
        unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) }
    }

    /// Run `args` through [`spawn_fds`] with `input` as stdin, stdout to a
    /// memfd, stderr to /dev/null; its exit code and output.
    fn run_fds(args: &[&str], input: &[u8]) -> (i32, String) {
        use std::io::{Read, Seek, Write};
        use std::os::fd::OwnedFd;
        let mut stdin = memfd();
        stdin.write_all(input).unwrap();
        stdin.rewind().unwrap();
        let mut out = memfd();
        let argv: Vec<std::ffi::OsString> = args[1..].iter().map(Into::into).collect();
        let s = spawn_fds(
            std::path::Path::new(args[0]),
            &argv,
            [
                Some(OwnedFd::from(stdin)),
                Some(OwnedFd::from(out.try_clone().unwrap())),
                None,
            ],
        )
        .unwrap();
        let code = s.wait().unwrap();
        let mut text = String::new();
        out.rewind().unwrap();
        out.read_to_string(&mut text).unwrap();
        (code, text)
    }

    #[test]
    fn spawn_fds_maps_stdio() {
        let script = "read line; echo \"in:$line\"; echo err >&2; exit 3";
        let (code, text) = run_fds(&["/bin/sh", "-c", script], b"hello\n");
        assert_eq!(code, 3);
        // stdin from the first fd, stderr to /dev/null (not into stdout).
        assert_eq!(text, "in:hello\n");
    }

    #[test]
    fn spawn_fds_clears_the_signal_mask_and_sigpipe() {
        // Block a signal in this thread, as the serving shim does in all of
        // its threads: the child must not inherit it. (grep itself, not a
        // shell: a shell may reset its mask.)
        let mut set = nix::sys::signal::SigSet::empty();
        set.add(nix::sys::signal::Signal::SIGUSR2);
        set.thread_block().unwrap();
        let (code, text) = run_fds(
            &["/bin/grep", "-E", "^Sig(Blk|Ign)", "/proc/self/status"],
            b"",
        );
        set.thread_unblock().unwrap();
        assert_eq!(code, 0);
        let mask = |name: &str| {
            let line = text.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(mask("SigBlk:"), 0, "{text}");
        // SIGPIPE back to default: std ignores it in this process.
        assert_eq!(mask("SigIgn:") & (1 << (libc::SIGPIPE - 1)), 0, "{text}");
    }

    #[test]
    fn spawn_fds_reports_a_missing_program() {
        let e = spawn_fds(
            std::path::Path::new("/nonexistent/runtime"),
            &[],
            [None, None, None],
        )
        .err()
        .expect("spawn of a missing program fails");
        assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}");
    }
}
