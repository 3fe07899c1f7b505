//! The exec variant of the intermediate and init processes: a new process
//! in a running container. The parent side is `parent::launch_exec`; the
//! process ends with the same [`finalize`] steps as the container's init.
//!
//! * intermediate: oom_score_adj and rlimits (while still in the host's
//!   user namespace, where the hard limits may be raised), then setns(2)
//!   into every namespace of the container (user first), then a
//!   CLONE_PARENT fork so that the new process is inside the container's
//!   pid namespace and is the child of the runtime (`exec` in the
//!   foreground waits for it);
//! * init: chroot when the container has no mount namespace, the console,
//!   then [`finalize::apply`] with the container's seccomp filter, `Ready`,
//!   execve.

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use super::channel::{Channel, Message};
use super::finalize;
use super::identity;
use crate::namespaces::Plan;

/// Everything the exec children need; they inherit it through fork.
pub struct ExecConfig {
    pub id: String,
    /// The container's spec as created: namespaces, seccomp, oomScoreAdj.
    pub spec: Spec,
    /// The process to run, already merged with the container's defaults.
    pub process: Process,
    /// The container's init (namespaces are joined at /proc/<pid>/ns/*).
    pub init_pid: i32,
    pub bundle: PathBuf,
    pub annotations: BTreeMap<String, String>,
    pub console_socket: Option<OwnedFd>,
    /// How many fds above stdio pass into the process (--preserve-fds).
    pub passed_fds: i32,
    pub cgroup: Option<cgroups::Manager>,
    pub no_new_keyring: bool,
}

impl ExecConfig {
    fn namespace_types(&self) -> Vec<LinuxNamespaceType> {
        let linux = self.spec.linux().as_ref();
        linux
            .and_then(|l| l.namespaces().as_deref())
            .unwrap_or_default()
            .iter()
            .map(|n| n.typ())
            .collect()
    }
}

/// Never returns: exits 0 after handing the new process's pid to the
/// parent, or reports an error and exits 1.
pub(super) fn intermediate(cfg: &ExecConfig, chan: Channel, init_chan: Channel) -> ! {
    match intermediate_setup(cfg, &chan, &init_chan) {
        Ok(()) => unsafe { libc::_exit(0) },
        Err(e) => {
            let _ = chan.send(&Message::Error(e));
            unsafe { libc::_exit(1) }
        }
    }
}

fn intermediate_setup(cfg: &ExecConfig, chan: &Channel, init_chan: &Channel) -> Result<(), String> {
    chan.expect(Message::Go, "Go").map_err(|e| e.to_string())?;
    let container_process = cfg.spec.process().as_ref();
    if let Some(adj) = container_process.and_then(|p| p.oom_score_adj()) {
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("write {adj:?} to /proc/self/oom_score_adj: {e}"))?;
    }
    identity::set_rlimits(cfg.process.rlimits().as_deref().unwrap_or_default())?;
    // Until execve the process runs the runtime's binary inside the
    // container's pid namespace: keep container processes from opening its
    // /proc/<pid>/exe (and so the host binary) or ptracing it. (After the
    // /proc/self writes above: a non-dumpable process's /proc files belong
    // to root, which a rootless runtime is not.)
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    let plan =
        Plan::join_container(&cfg.namespace_types(), cfg.init_pid).map_err(|e| e.to_string())?;
    plan.join_all().map_err(|e| e.to_string())?;
    let pid =
        super::intermediate::clone_parent().map_err(|e| format!("clone exec process: {e}"))?;
    if pid == 0 {
        // As for create: the parent learns that the intermediate died from
        // the EOF of its channel, so the new process must not hold it.
        let _ = nix::unistd::close(chan.raw());
        init(cfg, init_chan)
    }
    chan.send(&Message::InitPid(pid))
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn init(cfg: &ExecConfig, chan: &Channel) -> ! {
    let target = match init_setup(cfg, chan) {
        Ok(t) => t,
        Err(e) => {
            let _ = chan.send(&Message::Error(e));
            unsafe { libc::_exit(1) }
        }
    };
    let err = finalize::exec(&target);
    eprintln!("runc-rs exec: {err}");
    unsafe { libc::_exit(127) }
}

fn init_setup(cfg: &ExecConfig, chan: &Channel) -> Result<finalize::ExecTarget, String> {
    // A session of its own, as for the container's init.
    let _ = nix::unistd::setsid();
    if !cfg.namespace_types().contains(&LinuxNamespaceType::Mount) {
        // No mount namespace to join: the container's root is init's chroot.
        let root = format!("/proc/{}/root", cfg.init_pid);
        nix::unistd::chroot(root.as_str()).map_err(|e| format!("chroot {root}: {e}"))?;
        nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    }
    let process = &cfg.process;
    if process.terminal().unwrap_or(false) {
        finalize::console(cfg.console_socket.as_ref(), process, false)?;
    }
    let linux = cfg.spec.linux().as_ref();
    let target = finalize::apply(
        &finalize::Identity {
            process,
            seccomp: linux.and_then(|l| l.seccomp().as_ref()),
            extra_env: &[],
            passed_fds: cfg.passed_fds,
            keyring: (!cfg.no_new_keyring).then_some(cfg.id.as_str()),
            set_rlimits: false,
            set_umask: false,
        },
        chan,
    )?;
    chan.send(&Message::Ready).map_err(|e| e.to_string())?;
    Ok(target)
}
