//! The container's init process, from the fork to execve.

use std::os::fd::AsRawFd;
use std::path::Path;

use super::channel::{Channel, Message};
use super::finalize::{self, ExecTarget};
use super::LaunchConfig;
use crate::hooks;
use crate::namespaces::Plan;
use crate::rootfs::{self, RootfsContext};

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

fn setup(cfg: &LaunchConfig, chan: &Channel, plan: &Plan) -> Result<ExecTarget, String> {
    // A session of its own, as runc's nsexec gives every container process:
    // no tie to the caller's session or terminal (criu refuses to dump a
    // tree whose session leader is outside it).
    let _ = nix::unistd::setsid();
    let spec = &cfg.spec;
    let process = spec.process().as_ref().expect("validated");
    let linux = spec.linux().as_ref();
    let new_mntns = plan.new_flags.contains(nix::sched::CloneFlags::CLONE_NEWNS);
    let ns_types: Vec<_> = linux
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or_default()
        .iter()
        .map(|n| n.typ())
        .collect();

    let ctx = RootfsContext {
        rootfs: cfg.rootfs.clone(),
        bundle: cfg.bundle.clone(),
        in_userns: plan.has_user(),
        cgroupns: ns_types.contains(&oci_spec::runtime::LinuxNamespaceType::Cgroup),
        cgroup_unified: cfg.cgroup_unified,
        cgroup_dirs: cfg.cgroup_dirs.clone(),
    };
    if new_mntns {
        log::debug!("init: preparing rootfs");
        rootfs::prepare(&ctx, spec).map_err(|e| e.to_string())?;
    }
    let h = spec.hooks().as_ref();
    // Without prestart/createRuntime hooks the round trip would only make
    // init wait for the parent (which meanwhile writes the state records).
    let has = |v: Option<&Vec<oci_spec::runtime::Hook>>| v.is_some_and(|v| !v.is_empty());
    if has(h.and_then(|h| h.prestart().as_ref()))
        || has(h.and_then(|h| h.create_runtime().as_ref()))
    {
        chan.send(&Message::RunCreateRuntimeHooks)
            .map_err(|e| e.to_string())?;
        chan.expect(Message::HooksDone, "HooksDone")
            .map_err(|e| e.to_string())?;
    }
    let state = init_state_json(cfg);
    // As in runc, init works from the rootfs directory, which createContainer
    // hooks inherit as their working directory.
    nix::unistd::chdir(&cfg.rootfs).map_err(|e| format!("chdir {}: {e}", cfg.rootfs.display()))?;
    hooks::run_all(
        "createContainer",
        h.and_then(|h| h.create_container().as_ref()),
        &state,
    )
    .map_err(|e| e.to_string())?;
    if new_mntns {
        log::debug!("init: switching root");
        rootfs::switch_root(&cfg.rootfs, cfg.no_pivot).map_err(|e| e.to_string())?;
    } else {
        nix::unistd::chroot(&cfg.rootfs)
            .map_err(|e| format!("chroot {}: {e}", cfg.rootfs.display()))?;
        nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    }

    if process.terminal().unwrap_or(false) {
        // /dev/console is the pty too, as in runc.
        finalize::console(cfg.console_socket.as_ref(), process, true)?;
    }
    if let Some(h) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(h).map_err(|e| format!("hostname: sethostname {h:?}: {e}"))?;
    }
    // `domainname` is deliberately ignored: runc 1.1 does not implement the
    // field (it arrived in runc 1.2), so its containers keep the new UTS
    // namespace's "(none)". A domain name can still be set through the
    // `kernel.domainname` sysctl, which runc 1.1 accepts.
    for (k, v) in linux
        .and_then(|l| l.sysctl().as_ref())
        .into_iter()
        .flatten()
    {
        let path = Path::new("/proc/sys").join(k.replace('.', "/"));
        std::fs::write(&path, v)
            .map_err(|e| format!("linux.sysctl: write {v:?} to {}: {e}", path.display()))?;
    }
    if new_mntns {
        log::debug!("init: finalizing rootfs");
        rootfs::finalize(spec).map_err(|e| e.to_string())?;
        finalize::reopen_dev_null()?;
    }
    log::debug!("init: rlimits and identity");
    let target = finalize::apply(
        &finalize::Identity {
            process,
            seccomp: linux.and_then(|l| l.seccomp().as_ref()),
            extra_env: &cfg.extra_env,
            passed_fds: cfg.passed_fds,
            keyring: (!cfg.no_new_keyring).then_some(cfg.id.as_str()),
            set_rlimits: true,
            set_umask: true,
        },
        chan,
    )?;

    log::debug!("init: ready");
    chan.send(&Message::Ready).map_err(|e| e.to_string())?;
    Ok(target)
}

/// Blocks on exec.fifo until `start`, runs startContainer hooks, execs.
fn after_start(cfg: &LaunchConfig, t: &ExecTarget) -> Result<std::convert::Infallible, String> {
    let fifo_path = format!("/proc/self/fd/{}", cfg.fifo.as_raw_fd());
    let fd = nix::fcntl::open(
        fifo_path.as_str(),
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("open exec fifo: {e}"))?;
    nix::unistd::write(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }, b"0")
        .map_err(|e| format!("write exec fifo: {e}"))?;
    let _ = nix::unistd::close(fd);
    let h = cfg.spec.hooks().as_ref();
    hooks::run_all(
        "startContainer",
        h.and_then(|h| h.start_container().as_ref()),
        &init_state_json(cfg),
    )
    .map_err(|e| e.to_string())?;
    Err(finalize::exec(t))
}

/// The state handed to hooks run by init (createContainer, startContainer).
fn init_state_json(cfg: &LaunchConfig) -> Vec<u8> {
    let annotations = cfg
        .spec
        .annotations()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    crate::container::state_json(
        &cfg.id,
        crate::state::Status::Creating,
        std::process::id() as i32,
        &cfg.bundle,
        &annotations,
    )
}
