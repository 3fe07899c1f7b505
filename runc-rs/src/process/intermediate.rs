//! The intermediate process: namespaces in the right order, then init.

use nix::sched::CloneFlags;
use oci_spec::runtime::LinuxNamespaceType;

use super::channel::{Channel, Message};
use super::{init, LaunchConfig};
use crate::namespaces::{self, Plan};

/// Never returns: exits 0 after handing init's pid to the parent, or
/// reports an error and exits 1. `chan` is the intermediate's own channel;
/// `init_chan` is handed to init, which talks to the parent over it alone.
pub fn run(cfg: &LaunchConfig, chan: Channel, init_chan: Channel) -> ! {
    match setup(cfg, &chan, &init_chan) {
        Ok(()) => unsafe { libc::_exit(0) },
        Err(e) => {
            let _ = chan.send(&Message::Error(e));
            unsafe { libc::_exit(1) }
        }
    }
}

fn setup(cfg: &LaunchConfig, chan: &Channel, init_chan: &Channel) -> Result<(), String> {
    chan.expect(Message::Go, "Go").map_err(|e| e.to_string())?;
    let process = cfg.spec.process().as_ref().expect("validated");
    if let Some(adj) = process.oom_score_adj() {
        // Before any user namespace: a negative value needs privilege in
        // the initial namespace.
        std::fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("write {adj:?} to /proc/self/oom_score_adj: {e}"))?;
    }
    let ns = cfg
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or_default();
    let plan = Plan::from_spec(ns).map_err(|e| e.to_string())?;
    plan.join_all().map_err(|e| e.to_string())?;
    if plan.new_user {
        namespaces::unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| e.to_string())?;
        chan.send(&Message::UserNsReady)
            .map_err(|e| e.to_string())?;
        chan.expect(Message::MappingsWritten, "MappingsWritten")
            .map_err(|e| e.to_string())?;
    }
    if plan.has_user() {
        // Become root of the user namespace so that what follows is privileged there.
        nix::unistd::setresuid(0.into(), 0.into(), 0.into())
            .map_err(|e| format!("setresuid(0) in user namespace: {e}"))?;
    }
    log::debug!("intermediate: creating namespaces");
    namespaces::unshare(plan.new_flags).map_err(|e| e.to_string())?;
    if plan.has_user() {
        // The gid changes only after the other namespaces exist, as in
        // runc's nsexec: objects made with them (the IPC namespace's mqueue
        // root) are owned by our unmapped host gid, shown as the overflow gid.
        nix::unistd::setresgid(0.into(), 0.into(), 0.into())
            .map_err(|e| format!("setresgid(0) in user namespace: {e}"))?;
    }
    if plan
        .new_flags
        .contains(namespaces::flag(LinuxNamespaceType::Time))
    {
        write_time_offsets(cfg)?;
    }
    log::debug!("intermediate: cloning init");
    let pid = clone_parent().map_err(|e| format!("clone init: {e}"))?;
    if pid == 0 {
        // init must not keep the intermediate's channel open: the parent
        // learns that the intermediate died from that channel's EOF.
        let _ = nix::unistd::close(chan.raw());
        init::run(cfg, init_chan, &plan)
    }
    chan.send(&Message::InitPid(pid))
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// A time namespace's offsets must be written before its first process.
fn write_time_offsets(cfg: &LaunchConfig) -> Result<(), String> {
    let offsets = cfg
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().as_ref());
    let mut data = String::new();
    for (clock, off) in offsets.into_iter().flatten() {
        data.push_str(&format!(
            "{clock} {} {}\n",
            off.secs().unwrap_or(0),
            off.nanosecs().unwrap_or(0)
        ));
    }
    if data.is_empty() {
        return Ok(());
    }
    std::fs::write("/proc/self/timens_offsets", data)
        .map_err(|e| format!("linux.timeOffsets: write /proc/self/timens_offsets: {e}"))
}

/// fork(2) with CLONE_PARENT: the new process's parent is our parent, so
/// that `runc run` can wait for init and, after `create` exits, init is
/// reparented to the caller's subreaper (the shim).
pub(super) fn clone_parent() -> nix::Result<i32> {
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if rc < 0 {
        return Err(nix::Error::last());
    }
    Ok(rc as i32)
}
