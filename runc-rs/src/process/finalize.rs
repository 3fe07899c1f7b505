//! The last steps of a container process before execve, shared by
//! `create`'s init and `exec`'s: the console, the session keyring, AppArmor,
//! the environment and program lookup, fds, capabilities, seccomp, the user,
//! no_new_privs and the working directory. Both paths call these so that a
//! process started by `exec` is confined exactly like the container's init.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxSeccomp, Process};

use super::channel::{Channel, Message};
use super::identity;
use crate::{capabilities, seccomp, tty};

/// What execve gets, resolved before the process reports ready so that a
/// missing binary fails the command instead of a started container.
pub struct ExecTarget {
    pub path: CString,
    pub args: Vec<CString>,
    pub env: Vec<CString>,
}

/// How a container process is finalized.
pub struct Identity<'a> {
    pub process: &'a Process,
    /// The container's filter (exec applies the container's, not its own).
    pub seccomp: Option<&'a LinuxSeccomp>,
    /// Extra environment (LISTEN_FDS/LISTEN_PID).
    pub extra_env: &'a [String],
    /// How many fds above stdio pass into the process.
    pub passed_fds: i32,
    /// Join a fresh session keyring `_ses.<id>` (unless --no-new-keyring).
    pub keyring: Option<&'a str>,
    /// create sets the rlimits here; exec sets them before it joins the
    /// container's user namespace, where it could no longer raise them.
    pub set_rlimits: bool,
    /// runc's init sets the umask; its setns init (exec) keeps the caller's.
    pub set_umask: bool,
}

fn cstring(s: &str, what: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what}: {s:?} contains a NUL byte"))
}

/// Everything from the keyring to the working directory, in runc's order:
/// bounding set first (needs CAP_SETPCAP), seccomp while still privileged
/// unless no_new_privs lets an unprivileged process load it, then the user,
/// the other capability sets, and no_new_privs.
pub fn apply(id: &Identity, chan: &Channel) -> Result<ExecTarget, String> {
    let process = id.process;
    if let Some(name) = id.keyring {
        join_session_keyring(name);
    }
    apply_apparmor(process.apparmor_profile().as_deref())?;
    if id.set_rlimits {
        identity::set_rlimits(process.rlimits().as_deref().unwrap_or_default())?;
    }

    // Environment and program, resolved in the container's filesystem.
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    env.extend(id.extra_env.iter().cloned());
    let env = identity::process_env(&env, || identity::home_for(process.user().uid()))?;
    let args = process.args().as_deref().unwrap_or_default();
    let first = args
        .first()
        .ok_or("process.args: must contain at least one element")?;
    let path = identity::look_path(first, &env)?;
    let target = ExecTarget {
        path: cstring(&path.to_string_lossy(), "process.args[0]")?,
        args: args
            .iter()
            .map(|a| cstring(a, "process.args"))
            .collect::<Result<_, _>>()?,
        env: env
            .iter()
            .map(|e| cstring(e, "process.env"))
            .collect::<Result<_, _>>()?,
    };

    close_exec_from(3 + id.passed_fds);
    for fd in 3..3 + id.passed_fds {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        );
    }

    let nnp = process.no_new_privileges().unwrap_or(false);
    let filter = match id.seccomp {
        Some(s) => {
            seccomp::validate(s).map_err(|e| e.to_string())?;
            Some((
                seccomp::build(s).map_err(|e| e.to_string())?,
                seccomp::uses_notify(s),
            ))
        }
        None => None,
    };
    if let Some(c) = process.capabilities() {
        capabilities::drop_bounding(c).map_err(|e| e.to_string())?;
    }
    if !nnp {
        load_seccomp(chan, filter.as_ref())?;
    }
    identity::switch_user(process.user(), identity::setgroups_allowed())?;
    if let Some(c) = process.capabilities() {
        capabilities::apply(c).map_err(|e| e.to_string())?;
    } else {
        caps_clear_all();
    }
    if nnp {
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!(
                "process.noNewPrivileges: {}",
                std::io::Error::last_os_error()
            ));
        }
        load_seccomp(chan, filter.as_ref())?;
    }
    if id.set_umask {
        let umask = process.user().umask().unwrap_or(0o022);
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    }
    nix::unistd::chdir(process.cwd())
        .map_err(|e| format!("process.cwd: chdir {}: {e}", process.cwd().display()))?;
    Ok(target)
}

fn load_seccomp(
    chan: &Channel,
    filter: Option<&(libseccomp::ScmpFilterContext, bool)>,
) -> Result<(), String> {
    let Some((ctx, notify)) = filter else {
        return Ok(());
    };
    if let Some(fd) = seccomp::load(ctx, *notify).map_err(|e| e.to_string())? {
        chan.send(&Message::SeccompNotifyFd)
            .map_err(|e| e.to_string())?;
        tty::send_fd(chan.raw(), "seccomp", fd)
            .map_err(|e| format!("send seccomp notify fd: {e}"))?;
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}

/// Replaces the process image. Only returns (the error) if execve failed.
pub fn exec(t: &ExecTarget) -> String {
    reset_signals();
    let e = nix::unistd::execve(&t.path, &t.args, &t.env).unwrap_err();
    format!("exec {:?}: {e}", t.path)
}

/// Creates the process's pty in the container's /dev/pts, hands its master
/// to the console socket and makes the slave the controlling terminal and
/// stdio. create also binds it over /dev/console, as runc does; runc's exec
/// leaves /dev/console alone.
pub fn console(
    sock: Option<&OwnedFd>,
    process: &Process,
    bind_dev_console: bool,
) -> Result<(), String> {
    let sock = sock.ok_or("process.terminal is true but no --console-socket was given")?;
    let (master, slave, name) = tty::open_pty().map_err(|e| e.to_string())?;
    if let Some(b) = process.console_size() {
        tty::set_size(master.as_raw_fd(), b.height() as u16, b.width() as u16);
    }
    tty::send_fd(sock.as_raw_fd(), &name, master.as_raw_fd())
        .map_err(|e| format!("send pty master to console socket: {e}"))?;
    drop(master);
    if bind_dev_console {
        let console = Path::new("/dev/console");
        if std::fs::symlink_metadata(console).is_err() {
            let _ = std::fs::File::create(console);
        }
        let _ = nix::mount::mount(
            Some(name.as_str()),
            console,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        );
    }
    tty::become_stdio(&slave).map_err(|e| e.to_string())
}

/// Stdio fds that are the host's /dev/null become the container's, as
/// runc's reOpenDevNull does after the root switch: a file of a mount
/// outside the container is one criu cannot dump.
pub fn reopen_dev_null() -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| format!("open /dev/null: {e}"))?;
    let rdev = null
        .metadata()
        .map_err(|e| format!("stat /dev/null: {e}"))?
        .rdev();
    for fd in 0..3 {
        let Ok(st) = nix::sys::stat::fstat(fd) else {
            continue;
        };
        if st.st_rdev == rdev && (st.st_mode & libc::S_IFMT) == libc::S_IFCHR {
            nix::unistd::dup3(null.as_raw_fd(), fd, nix::fcntl::OFlag::empty())
                .map_err(|e| format!("reopen /dev/null as fd {fd}: {e}"))?;
        }
    }
    Ok(())
}

fn join_session_keyring(id: &str) {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let name = CString::new(format!("_ses.{id}")).unwrap_or_default();
    // Failure (e.g. keyrings disabled) is not fatal, as in runc.
    unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
}

fn apply_apparmor(profile: Option<&str>) -> Result<(), String> {
    let Some(profile) = profile.filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .map(|s| s.trim() == "Y")
        .unwrap_or(false);
    if !enabled {
        return Err(format!(
            "process.apparmorProfile: {profile:?} is set but AppArmor is not enabled on this host"
        ));
    }
    std::fs::write("/proc/self/attr/exec", format!("exec {profile}"))
        .map_err(|e| format!("process.apparmorProfile: {e}"))
}

fn caps_clear_all() {
    for set in [
        caps::CapSet::Effective,
        caps::CapSet::Permitted,
        caps::CapSet::Inheritable,
        caps::CapSet::Ambient,
    ] {
        let _ = caps::clear(None, set);
    }
}

/// Marks every fd from `from` up close-on-exec: nothing of the runtime's
/// leaks into the container. One close_range(2) (Linux 5.11); older
/// kernels get the walk of /proc/self/fd.
fn close_exec_from(from: i32) {
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            from as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return;
    }
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for fd in fds.into_iter().filter(|fd| *fd >= from) {
        let _ = nix::fcntl::fcntl(
            fd,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
}

/// An ignored signal stays ignored across execve, and so does a blocked
/// one, so whatever the runtime's caller ignored (and Rust's own SIGPIPE),
/// or the runtime blocked to forward signals, would leak into the
/// container. Give every ignored signal its default disposition back and
/// unblock everything, as runc's Go runtime does by installing handlers at
/// start-up; like runc, leave signal 32 (glibc's thread-cancel signal,
/// which Go never takes over).
fn reset_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP || sig == 32 {
            continue;
        }
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // The raw syscall: glibc's sigaction refuses its reserved signals.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig,
                std::ptr::null::<libc::sigaction>(),
                &mut old,
                8,
            )
        };
        if rc == 0 && old.sa_sigaction == libc::SIG_IGN {
            let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
            dfl.sa_sigaction = libc::SIG_DFL;
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl,
                    std::ptr::null_mut::<libc::sigaction>(),
                    8,
                )
            };
        }
    }
    let _ = nix::sys::signal::sigprocmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    );
}
