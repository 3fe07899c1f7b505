//! Namespaces: which to create, which to join, in which order.
//!
//! Joined namespaces are opened by path in the parent (so `/proc/<pid>/ns/*`
//! paths resolve in the runtime's own mount namespace) and entered by the
//! intermediate process; the user namespace always comes first so that the
//! others are created owned by it.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::sched::CloneFlags;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("open namespace path {path} for linux.namespaces[{kind}]: {source}")]
    Open {
        kind: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("setns {kind} ({path}): {source}")]
    Setns {
        kind: &'static str,
        path: PathBuf,
        source: nix::Error,
    },
    #[error("unshare {flags:?}: {source}")]
    Unshare {
        flags: CloneFlags,
        source: nix::Error,
    },
}

pub fn flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

pub fn name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

/// A namespace to enter, opened while still in the runtime's namespaces.
#[derive(Debug)]
pub struct JoinTarget {
    pub typ: LinuxNamespaceType,
    pub path: PathBuf,
    pub fd: OwnedFd,
}

/// The namespace plan of one container.
#[derive(Debug)]
pub struct Plan {
    /// Flags for namespaces to create (user excluded: see `new_user`).
    pub new_flags: CloneFlags,
    pub new_user: bool,
    /// To join, user namespace first.
    pub join: Vec<JoinTarget>,
}

impl Plan {
    pub fn from_spec(namespaces: &[LinuxNamespace]) -> Result<Plan, NamespaceError> {
        let mut plan = Plan {
            new_flags: CloneFlags::empty(),
            new_user: false,
            join: vec![],
        };
        for ns in namespaces {
            match ns.path() {
                Some(p) if !p.as_os_str().is_empty() => {
                    let fd = std::fs::File::open(p).map_err(|source| NamespaceError::Open {
                        kind: name(ns.typ()),
                        path: p.clone(),
                        source,
                    })?;
                    plan.join.push(JoinTarget {
                        typ: ns.typ(),
                        path: p.clone(),
                        fd: fd.into(),
                    });
                }
                _ if ns.typ() == LinuxNamespaceType::User => plan.new_user = true,
                _ => plan.new_flags |= flag(ns.typ()),
            }
        }
        plan.join.sort_by_key(|j| {
            if j.typ == LinuxNamespaceType::User {
                0
            } else {
                1
            }
        });
        Ok(plan)
    }

    /// Joining every namespace of a running container (exec): the types the
    /// container's spec lists, new or joined, each at `/proc/<init>/ns/<t>`,
    /// user first. Namespaces the spec does not list are the host's, which
    /// the caller already shares, as in runc. A user namespace that is the
    /// caller's own is skipped: setns(2) refuses to re-enter it.
    pub fn join_container(
        types: &[LinuxNamespaceType],
        init_pid: i32,
    ) -> Result<Plan, NamespaceError> {
        let mut plan = Plan {
            new_flags: CloneFlags::empty(),
            new_user: false,
            join: vec![],
        };
        for &typ in types {
            let path = PathBuf::from(format!("/proc/{init_pid}/ns/{}", name(typ)));
            if typ == LinuxNamespaceType::User
                && same_file(&path, std::path::Path::new("/proc/self/ns/user"))
            {
                continue;
            }
            let fd = std::fs::File::open(&path).map_err(|source| NamespaceError::Open {
                kind: name(typ),
                path: path.clone(),
                source,
            })?;
            plan.join.push(JoinTarget {
                typ,
                path,
                fd: fd.into(),
            });
        }
        plan.join.sort_by_key(|j| {
            if j.typ == LinuxNamespaceType::User {
                0
            } else {
                1
            }
        });
        Ok(plan)
    }

    pub fn has_user(&self) -> bool {
        self.new_user || self.join.iter().any(|j| j.typ == LinuxNamespaceType::User)
    }

    /// Enters every namespace to join. Called in the intermediate process.
    pub fn join_all(&self) -> Result<(), NamespaceError> {
        for j in &self.join {
            let rc = unsafe { libc::setns(j.fd.as_raw_fd(), flag(j.typ).bits()) };
            if rc != 0 {
                return Err(NamespaceError::Setns {
                    kind: name(j.typ),
                    path: j.path.clone(),
                    source: nix::Error::last(),
                });
            }
        }
        Ok(())
    }
}

pub fn unshare(flags: CloneFlags) -> Result<(), NamespaceError> {
    if flags.is_empty() {
        return Ok(());
    }
    nix::sched::unshare(flags).map_err(|source| NamespaceError::Unshare { flags, source })
}

fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}
