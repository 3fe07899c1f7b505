//! Forking the intermediate straight into the container's cgroup.
//!
//! Moving another process between cgroups takes the kernel's global
//! threadgroup rwsem for writing and waits for an RCU grace period (5–15 ms
//! on an idle host: once the largest cost of `create`). Two cheaper paths
//! avoid it: `clone3(CLONE_INTO_CGROUP)` places the child in the cgroup2
//! directory at birth, and the child moves itself into each v1 hierarchy
//! through `tasks` ([`cgroups::Manager::enter_self`]).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// Where the child is after [`fork_into`].
pub enum Forked {
    Child {
        /// Whether the kernel already put it in the cgroup2 directory.
        in_unified: bool,
    },
    Parent(nix::unistd::Pid),
}

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x200000000;

/// fork(2), into `unified` when given and the kernel supports it.
///
/// # Safety
/// As for fork: the caller is single-threaded.
pub unsafe fn fork_into(unified: Option<&Path>) -> nix::Result<Forked> {
    let dir: Option<OwnedFd> = unified.and_then(|p| {
        nix::fcntl::open(
            p,
            nix::fcntl::OFlag::O_PATH
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()
        .map(|fd| unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    });
    if let Some(dir) = &dir {
        let mut args = CloneArgs {
            flags: CLONE_INTO_CGROUP,
            exit_signal: libc::SIGCHLD as u64,
            cgroup: dir.as_raw_fd() as u64,
            ..Default::default()
        };
        let rc = unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &mut args as *mut CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        };
        match rc {
            0 => return Ok(Forked::Child { in_unified: true }),
            pid if pid > 0 => return Ok(Forked::Parent(nix::unistd::Pid::from_raw(pid as i32))),
            // Old kernel or a cgroup2 dir it refuses: fall back to fork.
            _ => log::debug!("clone3(CLONE_INTO_CGROUP): {}", nix::Error::last()),
        }
    }
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => Ok(Forked::Child { in_unified: false }),
        nix::unistd::ForkResult::Parent { child } => Ok(Forked::Parent(child)),
    }
}
