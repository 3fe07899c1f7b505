//! The container's init process, from the fork to execve.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::Path;

use oci_spec::runtime::Spec;

use super::channel::{Channel, Message};
use super::identity;
use super::LaunchConfig;
use crate::namespaces::Plan;
use crate::rootfs::{self, RootfsContext};
use crate::{capabilities, hooks, seccomp, tty};

/// Never returns: execs the container process or exits 1 after reporting.
pub fn run(cfg: &LaunchConfig, chan: &Channel, plan: &Plan) -> ! {
    let target = match setup(cfg, chan, plan) {
        Ok(t) => t,
        Err(e) => {
            let _ = chan.send(&Message::Error(e));
            unsafe { libc::_exit(1) }
        }
    };
    // The parent has returned from `create`; from here on errors can only
    // go to the container's stderr.
    let err = match after_start(cfg, &target) {
        Ok(never) => match never {},
        Err(e) => e,
    };
    eprintln!("runc-rs init: {err}");
    unsafe { libc::_exit(127) }
}

struct ExecTarget {
    path: CString,
    args: Vec<CString>,
    env: Vec<CString>,
}

fn cstring(s: &str, what: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("{what}: {s:?} contains a NUL byte"))
}

fn setup(cfg: &LaunchConfig, chan: &Channel, plan: &Plan) -> Result<ExecTarget, String> {
    let spec = &cfg.spec;
    let process = spec.process().as_ref().expect("validated");
    let linux = spec.linux().as_ref();
    let new_mntns = plan.new_flags.contains(nix::sched::CloneFlags::CLONE_NEWNS);
    let ns_types: Vec<_> = linux.and_then(|l| l.namespaces().as_deref()).unwrap_or_default().iter().map(|n| n.typ()).collect();

    let ctx = RootfsContext {
        rootfs: cfg.rootfs.clone(),
        bundle: cfg.bundle.clone(),
        in_userns: plan.has_user(),
        cgroupns: ns_types.contains(&oci_spec::runtime::LinuxNamespaceType::Cgroup),
        cgroup_unified: cfg.cgroup_unified,
        cgroup_dirs: cfg.cgroup_dirs.clone(),
    };
    if new_mntns {
        rootfs::prepare(&ctx, spec).map_err(|e| e.to_string())?;
    }
    chan.send(&Message::RunCreateRuntimeHooks).map_err(|e| e.to_string())?;
    chan.expect(Message::HooksDone, "HooksDone").map_err(|e| e.to_string())?;
    let state = init_state_json(cfg);
    let h = spec.hooks().as_ref();
    // As in runc, init works from the rootfs directory, which createContainer
    // hooks inherit as their working directory.
    nix::unistd::chdir(&cfg.rootfs).map_err(|e| format!("chdir {}: {e}", cfg.rootfs.display()))?;
    hooks::run_all("createContainer", h.and_then(|h| h.create_container().as_ref()), &state).map_err(|e| e.to_string())?;
    if new_mntns {
        rootfs::switch_root(&cfg.rootfs, cfg.no_pivot).map_err(|e| e.to_string())?;
    } else {
        nix::unistd::chroot(&cfg.rootfs).map_err(|e| format!("chroot {}: {e}", cfg.rootfs.display()))?;
        nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    }

    if process.terminal().unwrap_or(false) {
        setup_console(cfg, process)?;
    }
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).map_err(|e| format!("hostname: sethostname {h:?}: {e}"))?;
    }
    // `domainname` is deliberately ignored: runc 1.1 does not implement the
    // field (it arrived in runc 1.2), so its containers keep the new UTS
    // namespace's "(none)". A domain name can still be set through the
    // `kernel.domainname` sysctl, which runc 1.1 accepts.
    for (k, v) in linux.and_then(|l| l.sysctl().as_ref()).into_iter().flatten() {
        let path = Path::new("/proc/sys").join(k.replace('.', "/"));
        std::fs::write(&path, v).map_err(|e| format!("linux.sysctl: write {v:?} to {}: {e}", path.display()))?;
    }
    if new_mntns {
        rootfs::finalize(spec).map_err(|e| e.to_string())?;
    }
    if !cfg.no_new_keyring {
        join_session_keyring(&cfg.id);
    }
    apply_apparmor(process.apparmor_profile().as_deref())?;
    identity::set_rlimits(process.rlimits().as_deref().unwrap_or_default())?;

    // Environment and program, resolved in the container's filesystem.
    let mut env: Vec<String> = process.env().clone().unwrap_or_default();
    env.extend(cfg.extra_env.iter().cloned());
    let env = identity::process_env(&env, || identity::home_for(process.user().uid()))?;
    let args = process.args().as_deref().unwrap_or_default();
    let path = identity::look_path(&args[0], &env)?;
    let target = ExecTarget {
        path: cstring(&path.to_string_lossy(), "process.args[0]")?,
        args: args.iter().map(|a| cstring(a, "process.args")).collect::<Result<_, _>>()?,
        env: env.iter().map(|e| cstring(e, "process.env")).collect::<Result<_, _>>()?,
    };

    close_exec_from(3 + cfg.passed_fds);
    for fd in 3..3 + cfg.passed_fds {
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()));
    }

    // Identity: bounding set first (needs CAP_SETPCAP), then seccomp while
    // still privileged unless no_new_privs lets an unprivileged process load it.
    let nnp = process.no_new_privileges().unwrap_or(false);
    let filter = match linux.and_then(|l| l.seccomp().as_ref()) {
        Some(s) => {
            seccomp::validate(s).map_err(|e| e.to_string())?;
            Some((seccomp::build(s).map_err(|e| e.to_string())?, seccomp::uses_notify(s)))
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
            return Err(format!("process.noNewPrivileges: {}", std::io::Error::last_os_error()));
        }
        load_seccomp(chan, filter.as_ref())?;
    }
    let umask = process.user().umask().unwrap_or(0o022);
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(umask));
    nix::unistd::chdir(process.cwd()).map_err(|e| format!("process.cwd: chdir {}: {e}", process.cwd().display()))?;

    chan.send(&Message::Ready).map_err(|e| e.to_string())?;
    Ok(target)
}

fn load_seccomp(chan: &Channel, filter: Option<&(libseccomp::ScmpFilterContext, bool)>) -> Result<(), String> {
    let Some((ctx, notify)) = filter else { return Ok(()) };
    if let Some(fd) = seccomp::load(ctx, *notify).map_err(|e| e.to_string())? {
        chan.send(&Message::SeccompNotifyFd).map_err(|e| e.to_string())?;
        tty::send_fd(chan.raw(), "seccomp", fd).map_err(|e| format!("send seccomp notify fd: {e}"))?;
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}

/// Blocks on exec.fifo until `start`, runs startContainer hooks, execs.
fn after_start(cfg: &LaunchConfig, t: &ExecTarget) -> Result<std::convert::Infallible, String> {
    let fifo_path = format!("/proc/self/fd/{}", cfg.fifo.as_raw_fd());
    let fd = nix::fcntl::open(fifo_path.as_str(), nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
        .map_err(|e| format!("open exec fifo: {e}"))?;
    nix::unistd::write(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, b"0").map_err(|e| format!("write exec fifo: {e}"))?;
    let _ = nix::unistd::close(fd);
    let h = cfg.spec.hooks().as_ref();
    hooks::run_all("startContainer", h.and_then(|h| h.start_container().as_ref()), &init_state_json(cfg)).map_err(|e| e.to_string())?;
    reset_ignored_signals();
    let e = nix::unistd::execve(&t.path, &t.args, &t.env).unwrap_err();
    Err(format!("exec {:?}: {e}", t.path))
}

fn setup_console(cfg: &LaunchConfig, process: &oci_spec::runtime::Process) -> Result<(), String> {
    let sock = cfg.console_socket.as_ref().ok_or("process.terminal is true but no --console-socket was given")?;
    let (master, slave, name) = tty::open_pty().map_err(|e| e.to_string())?;
    if let Some(b) = process.console_size() {
        tty::set_size(master.as_raw_fd(), b.height() as u16, b.width() as u16);
    }
    tty::send_fd(sock.as_raw_fd(), &name, master.as_raw_fd()).map_err(|e| format!("send pty master to console socket: {e}"))?;
    drop(master);
    // /dev/console is the pty too, as in runc.
    let console = Path::new("/dev/console");
    if std::fs::symlink_metadata(console).is_err() {
        let _ = std::fs::File::create(console);
    }
    let _ = nix::mount::mount(Some(name.as_str()), console, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>);
    tty::become_stdio(&slave).map_err(|e| e.to_string())
}

fn join_session_keyring(id: &str) {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    let name = CString::new(format!("_ses.{id}")).unwrap_or_default();
    // Failure (e.g. keyrings disabled) is not fatal, as in runc.
    unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
}

fn apply_apparmor(profile: Option<&str>) -> Result<(), String> {
    let Some(profile) = profile.filter(|p| !p.is_empty()) else { return Ok(()) };
    let enabled = std::fs::read_to_string("/sys/module/apparmor/parameters/enabled").map(|s| s.trim() == "Y").unwrap_or(false);
    if !enabled {
        return Err(format!("process.apparmorProfile: {profile:?} is set but AppArmor is not enabled on this host"));
    }
    std::fs::write("/proc/self/attr/exec", format!("exec {profile}")).map_err(|e| format!("process.apparmorProfile: {e}"))
}

fn caps_clear_all() {
    for set in [caps::CapSet::Effective, caps::CapSet::Permitted, caps::CapSet::Inheritable, caps::CapSet::Ambient] {
        let _ = caps::clear(None, set);
    }
}

/// Marks every fd from `from` up close-on-exec: nothing of the runtime's
/// leaks into the container.
fn close_exec_from(from: i32) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return };
    let fds: Vec<i32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    for fd in fds.into_iter().filter(|fd| *fd >= from) {
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC));
    }
}

/// The state handed to hooks run by init (createContainer, startContainer).
fn init_state_json(cfg: &LaunchConfig) -> Vec<u8> {
    let annotations = cfg.spec.annotations().clone().unwrap_or_default().into_iter().collect();
    crate::container::state_json(&cfg.id, crate::state::Status::Creating, std::process::id() as i32, &cfg.bundle, &annotations)
}

pub fn spec_of(cfg: &LaunchConfig) -> &Spec {
    &cfg.spec
}

/// An ignored signal stays ignored across execve, so whatever the runtime's
/// caller ignored (and Rust's own SIGPIPE) would leak into the container.
/// Give every ignored signal its default disposition back, as runc's Go
/// runtime does by installing handlers at start-up; like runc, leave
/// signal 32 (glibc's thread-cancel signal, which Go never takes over).
fn reset_ignored_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP || sig == 32 {
            continue;
        }
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // The raw syscall: glibc's sigaction refuses its reserved signals.
        let rc = unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, std::ptr::null::<libc::sigaction>(), &mut old, 8) };
        if rc == 0 && old.sa_sigaction == libc::SIG_IGN {
            let mut dfl: libc::sigaction = unsafe { std::mem::zeroed() };
            dfl.sa_sigaction = libc::SIG_DFL;
            unsafe { libc::syscall(libc::SYS_rt_sigaction, sig, &dfl, std::ptr::null_mut::<libc::sigaction>(), 8) };
        }
    }
}
