//! Foreground stdio without a terminal (`run` without -d, `exec` without -d),
//! as runc sets it up: the process does not get the runtime's own stdio but
//! three pipes, owned by the host ids of the container's root (so that a
//! process in a user namespace may still reopen them through /proc/self/fd),
//! and the runtime copies between its stdio and the pipes. EOF on the
//! runtime's stdin closes the process's stdin; the copy of stdout and stderr
//! is finished before the runtime reports the exit.
//!
//! The pipes reach the children through fork: while a launch runs, the
//! process ends are our fds 0-2 ([`Pipes::install`]). The copying threads
//! start only after that fork, so the runtime is single-threaded when it
//! forks, and after the forwarded signals are blocked, so that no copying
//! thread takes a signal meant for the foreground loop.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::thread::JoinHandle;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use super::ContainerError;

fn sys(what: impl Into<String>) -> impl FnOnce(nix::Error) -> ContainerError {
    let what = what.into();
    move |source| ContainerError::Sys { what, source }
}

/// The three pipes of a foreground process.
pub struct Pipes {
    /// The process's ends: stdin's read end, stdout's and stderr's write ends.
    theirs: [OwnedFd; 3],
    /// Ours: stdin's write end, stdout's and stderr's read ends.
    ours: [OwnedFd; 3],
}

impl Pipes {
    /// Three close-on-exec pipes, none of them on fds 0-2 (a caller may have
    /// closed one of those, and [`Pipes::install`] overwrites them).
    pub fn new() -> Result<Pipes, ContainerError> {
        let pair = || -> Result<(OwnedFd, OwnedFd), ContainerError> {
            let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(sys("pipe"))?;
            Ok((above_stdio(r)?, above_stdio(w)?))
        };
        let (in_r, in_w) = pair()?;
        let (out_r, out_w) = pair()?;
        let (err_r, err_w) = pair()?;
        Ok(Pipes {
            theirs: [in_r, out_w, err_w],
            ours: [in_w, out_r, err_r],
        })
    }

    /// Gives every end to `(uid, gid)`, the host ids of the container's root.
    pub fn chown(&self, (uid, gid): (u32, u32)) -> Result<(), ContainerError> {
        for fd in self.theirs.iter().chain(&self.ours) {
            let raw = fd.as_raw_fd();
            nix::unistd::fchown(raw, Some(uid.into()), Some(gid.into()))
                .map_err(sys(format!("fchown fd {raw}")))?;
        }
        Ok(())
    }

    /// Makes the process's ends our fds 0-2 until the guard is dropped, so
    /// that the children forked meanwhile inherit them as their stdio.
    pub fn install(&self) -> Result<Installed, ContainerError> {
        let mut guard = Installed {
            saved: Vec::with_capacity(3),
        };
        for (target, fd) in self.theirs.iter().enumerate() {
            let target = target as RawFd;
            // A closed fd (EBADF) is closed again on restore.
            let saved = fcntl(target, FcntlArg::F_DUPFD_CLOEXEC(3))
                .ok()
                .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) });
            guard.saved.push(saved);
            nix::unistd::dup2(fd.as_raw_fd(), target)
                .map_err(sys(format!("dup2 pipe to fd {target}")))?;
        }
        Ok(guard)
    }

    /// Closes our copies of the process's ends (its children hold theirs)
    /// and starts copying: our stdin to its stdin, its stdout and stderr to
    /// ours.
    pub fn relay(self) -> Result<Relay, ContainerError> {
        let Pipes {
            theirs,
            ours: [stdin_w, stdout_r, stderr_r],
        } = self;
        drop(theirs);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(super::io_err(format!("start the {name} copy")))
        };
        // Never joined: a stdin that stays open must not keep us waiting.
        spawn(
            "stdin",
            Box::new(move || {
                copy(0, stdin_w.as_raw_fd());
                drop(stdin_w);
            }),
        )?;
        let out = spawn("stdout", Box::new(move || copy(stdout_r.as_raw_fd(), 1)))?;
        let err = spawn("stderr", Box::new(move || copy(stderr_r.as_raw_fd(), 2)))?;
        Ok(Relay {
            outputs: vec![out, err],
        })
    }
}

/// Our own fds 0-2, put back when dropped.
pub struct Installed {
    saved: Vec<Option<OwnedFd>>,
}

impl Drop for Installed {
    fn drop(&mut self) {
        for (target, saved) in self.saved.drain(..).enumerate() {
            let target = target as RawFd;
            let _ = match saved {
                Some(fd) => nix::unistd::dup2(fd.as_raw_fd(), target).map(drop),
                None => nix::unistd::close(target),
            };
        }
    }
}

/// The copying threads of the process's output.
pub struct Relay {
    outputs: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Waits until the process's stdout and stderr reached EOF (every
    /// holder of their write ends is gone) and were copied out.
    pub fn finish(self) {
        for h in self.outputs {
            let _ = h.join();
        }
    }
}

/// The host uid and gid of the container's root, as runc computes them for
/// the pipes: the ids themselves without a user namespace.
pub fn host_root_ids(spec: &Spec) -> Result<(u32, u32), ContainerError> {
    let linux = spec.linux().as_ref();
    let userns = linux
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == LinuxNamespaceType::User));
    if !userns {
        return Ok((0, 0));
    }
    let root_of = |maps: Option<&Vec<LinuxIdMapping>>, kind: &str, what: &str| {
        let maps = maps.ok_or_else(|| {
            ContainerError::Precondition(format!(
                "User namespaces enabled, but no {kind} mappings found."
            ))
        })?;
        maps.iter()
            .find(|m| m.container_id() == 0 && m.size() > 0)
            .map(|m| m.host_id())
            .ok_or_else(|| {
                ContainerError::Precondition(format!(
                    "User namespaces enabled, but no {what} mapping found."
                ))
            })
    };
    let uid = root_of(linux.and_then(|l| l.uid_mappings().as_ref()), "uid", "user")?;
    let gid = root_of(
        linux.and_then(|l| l.gid_mappings().as_ref()),
        "gid",
        "group",
    )?;
    Ok((uid, gid))
}

/// `fd` moved to the lowest free fd from 3 when it is one of 0-2.
fn above_stdio(fd: OwnedFd) -> Result<OwnedFd, ContainerError> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    let moved = fcntl(fd.as_raw_fd(), FcntlArg::F_DUPFD_CLOEXEC(3))
        .map_err(sys("move a pipe above stdio"))?;
    Ok(unsafe { OwnedFd::from_raw_fd(moved) })
}

/// Copies until EOF on `from`, or until either side fails (a reader of
/// ours that went away: the process then gets EPIPE, as under runc).
fn copy(from: RawFd, to: RawFd) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match nix::unistd::read(from, &mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if !write_all(to, &buf[..n]) {
                    return;
                }
            }
            Err(nix::Error::EINTR) => {}
            // Our stdio may be non-blocking (it is the caller's file).
            Err(nix::Error::EAGAIN) => wait_for(from, PollFlags::POLLIN),
            Err(_) => return,
        }
    }
}

/// Writes all of `data` to `fd` (blocking or not); false when `fd` failed.
pub(super) fn write_all(fd: RawFd, mut data: &[u8]) -> bool {
    let out = unsafe { BorrowedFd::borrow_raw(fd) };
    while !data.is_empty() {
        match nix::unistd::write(out, data) {
            Ok(n) => data = &data[n..],
            Err(nix::Error::EINTR) => {}
            Err(nix::Error::EAGAIN) => wait_for(fd, PollFlags::POLLOUT),
            Err(_) => return false,
        }
    }
    true
}

fn wait_for(fd: RawFd, what: PollFlags) {
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(fd.as_fd(), what)];
    let _ = poll(&mut fds, PollTimeout::NONE);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(linux: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2", "linux": linux})).unwrap()
    }

    #[test]
    fn pipes_belong_to_the_host_ids_of_the_container_root() {
        assert_eq!(host_root_ids(&spec(serde_json::json!({}))).unwrap(), (0, 0));
        let maps = |c: u32| serde_json::json!([{"containerID": c, "hostID": 100000, "size": 1000}]);
        let userns = |c: u32| {
            spec(
                serde_json::json!({"namespaces": [{"type": "user"}], "uidMappings": maps(c), "gidMappings": maps(c)}),
            )
        };
        assert_eq!(host_root_ids(&userns(0)).unwrap(), (100000, 100000));
        let e = host_root_ids(&userns(1)).unwrap_err().to_string();
        assert_eq!(e, "User namespaces enabled, but no user mapping found.");
    }

    #[test]
    fn pipes_stay_off_stdio() {
        let p = Pipes::new().unwrap();
        assert!(p.theirs.iter().chain(&p.ours).all(|fd| fd.as_raw_fd() > 2));
        let [_, out_r, _] = &p.ours;
        let [_, out_w, _] = &p.theirs;
        nix::unistd::write(out_w, b"abc").unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(nix::unistd::read(out_r.as_raw_fd(), &mut buf).unwrap(), 3);
    }
}
