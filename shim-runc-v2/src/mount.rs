//! The rootfs mounts of a CreateTaskRequest: mounted, in order, on
//! `<bundle>/rootfs`, and unmounted again on failure and on delete.
//!
//! On delete they are detached while the shim still holds each one
//! ([`detach_all`]): the kernel tears a filesystem down when its last
//! reference goes, and for an overlay that means syncing the whole upper
//! filesystem — about a millisecond here, far more under write load. The
//! mount is out of the tree before Delete replies; the teardown happens
//! when the shim lets go, after the reply.

use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::mount::MsFlags;

use crate::error::{Error, Result};

/// One mount as containerd describes it (`containerd.types.Mount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// Mount flags, propagation flags and the data string of `options`.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    flags: MsFlags,
    propagation: MsFlags,
    data: Vec<String>,
}

fn parse_options(options: &[String]) -> Parsed {
    let mut p = Parsed {
        flags: MsFlags::empty(),
        propagation: MsFlags::empty(),
        data: Vec::new(),
    };
    for o in options {
        let (clear, flag) = match o.as_str() {
            "async" => (true, MsFlags::MS_SYNCHRONOUS),
            "atime" => (true, MsFlags::MS_NOATIME),
            "bind" => (false, MsFlags::MS_BIND),
            "defaults" => (false, MsFlags::empty()),
            "dev" => (true, MsFlags::MS_NODEV),
            "diratime" => (true, MsFlags::MS_NODIRATIME),
            "dirsync" => (false, MsFlags::MS_DIRSYNC),
            "exec" => (true, MsFlags::MS_NOEXEC),
            "mand" => (false, MsFlags::MS_MANDLOCK),
            "noatime" => (false, MsFlags::MS_NOATIME),
            "nodev" => (false, MsFlags::MS_NODEV),
            "nodiratime" => (false, MsFlags::MS_NODIRATIME),
            "noexec" => (false, MsFlags::MS_NOEXEC),
            "nomand" => (true, MsFlags::MS_MANDLOCK),
            "norelatime" => (true, MsFlags::MS_RELATIME),
            "nostrictatime" => (true, MsFlags::MS_STRICTATIME),
            "nosuid" => (false, MsFlags::MS_NOSUID),
            "rbind" => (false, MsFlags::MS_BIND | MsFlags::MS_REC),
            "relatime" => (false, MsFlags::MS_RELATIME),
            "remount" => (false, MsFlags::MS_REMOUNT),
            "ro" => (false, MsFlags::MS_RDONLY),
            "rw" => (true, MsFlags::MS_RDONLY),
            "strictatime" => (false, MsFlags::MS_STRICTATIME),
            "suid" => (true, MsFlags::MS_NOSUID),
            "sync" => (false, MsFlags::MS_SYNCHRONOUS),
            prop @ ("private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave"
            | "unbindable" | "runbindable") => {
                let f = match prop.trim_start_matches('r') {
                    "private" => MsFlags::MS_PRIVATE,
                    "shared" => MsFlags::MS_SHARED,
                    "slave" => MsFlags::MS_SLAVE,
                    _ => MsFlags::MS_UNBINDABLE,
                };
                let rec = if prop.starts_with('r') {
                    MsFlags::MS_REC
                } else {
                    MsFlags::empty()
                };
                p.propagation = f | rec;
                continue;
            }
            other => {
                p.data.push(other.to_owned());
                continue;
            }
        };
        if clear {
            p.flags.remove(flag);
        } else {
            p.flags.insert(flag);
        }
    }
    p
}

impl Mount {
    /// Mount on `target`.
    pub fn mount(&self, target: &Path) -> Result<()> {
        let p = parse_options(&self.options);
        let data = p.data.join(",");
        let data_opt = (!data.is_empty()).then_some(data.as_str());
        let ctx = || {
            format!(
                "mount {} ({}) on {}",
                self.source,
                self.kind,
                target.display()
            )
        };
        let flags = p.flags;
        nix::mount::mount(
            Some(self.source.as_str()),
            target,
            Some(self.kind.as_str()),
            flags,
            data_opt,
        )
        .map_err(|e| Error::sys(ctx(), e))?;
        // A read-only bind needs a remount to take effect.
        if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
            let re = flags | MsFlags::MS_REMOUNT;
            nix::mount::mount(None::<&str>, target, None::<&str>, re, None::<&str>)
                .map_err(|e| Error::sys(format!("remount read-only: {}", ctx()), e))?;
        }
        if !p.propagation.is_empty() {
            nix::mount::mount(
                None::<&str>,
                target,
                None::<&str>,
                p.propagation,
                None::<&str>,
            )
            .map_err(|e| Error::sys(format!("set propagation: {}", ctx()), e))?;
        }
        Ok(())
    }
}

/// Mount every layer of `mounts` on `target`, in order; on failure the
/// ones already mounted are unmounted again.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for m in mounts {
        if let Err(e) = m.mount(target) {
            unmount_all(target);
            return Err(e);
        }
    }
    Ok(())
}

/// Unmount everything stacked on `target` (no-op when nothing is).
pub fn unmount_all(target: &Path) {
    let Ok(c) = CString::new(target.as_os_str().as_bytes()) else {
        return;
    };
    for _ in 0..64 {
        let mut r = unsafe { libc::umount2(c.as_ptr(), libc::UMOUNT_NOFOLLOW) };
        if r != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EBUSY) {
            r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
        }
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
                log::warn!("umount {}: {e}", target.display());
            }
            return;
        }
    }
}

/// Mounts out of the tree whose filesystems the shim still holds; they go
/// when this drops.
#[must_use = "dropping it releases the filesystems here and now"]
#[derive(Default)]
pub struct Detached(Vec<OwnedFd>);

impl Detached {
    /// How many mounts are held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Take everything stacked on `target` out of the mount tree at once
/// (lazily, as `umount -l`), each mount held by an `O_PATH` fd of its root
/// so that its teardown waits for the [`Detached`] to drop.
pub fn detach_all(target: &Path) -> Detached {
    let mut held = Vec::new();
    let Ok(c) = CString::new(target.as_os_str().as_bytes()) else {
        return Detached(held);
    };
    for _ in 0..64 {
        // The top mount's root: the path crosses into it.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_PATH | libc::O_NOFOLLOW | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                log::warn!("open {}: {e}", target.display());
            }
            break;
        }
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Held by `fd`, so a plain umount would be EBUSY.
        let r = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
        if r != 0 {
            let e = std::io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) {
                log::warn!("umount {}: {e}", target.display());
            }
            break;
        }
        held.push(fd);
    }
    Detached(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn options() {
        let p = parse_options(&v(&["rbind", "ro", "rprivate"]));
        assert_eq!(
            p.flags,
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY
        );
        assert_eq!(p.propagation, MsFlags::MS_PRIVATE | MsFlags::MS_REC);
        let p = parse_options(&v(&[
            "index=off",
            "lowerdir=/a:/b",
            "upperdir=/u",
            "workdir=/w",
        ]));
        assert!(p.flags.is_empty());
        assert_eq!(
            p.data.join(","),
            "index=off,lowerdir=/a:/b,upperdir=/u,workdir=/w"
        );
        let p = parse_options(&v(&["ro", "rw", "nosuid"]));
        assert_eq!(p.flags, MsFlags::MS_NOSUID);
    }

    fn is_mountpoint(dir: &Path) -> bool {
        let d = dir.to_string_lossy();
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(&d))
    }

    /// Unmounts what a failed test left on the dir.
    struct Cleanup<'a>(&'a Path);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            unmount_all(self.0);
        }
    }

    #[test]
    fn detach_all_holds_the_filesystems_until_dropped() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root to mount");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("rootfs");
        std::fs::create_dir(&target).unwrap();
        let _cleanup = Cleanup(&target);
        let tmpfs = |data: &str| {
            nix::mount::mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                MsFlags::empty(),
                Some(data),
            )
            .unwrap()
        };
        tmpfs("size=1m");
        std::fs::write(target.join("lower"), "1").unwrap();
        tmpfs("size=2m");
        std::fs::write(target.join("upper"), "2").unwrap();

        let held = detach_all(&target);
        assert_eq!(held.len(), 2);
        assert!(!is_mountpoint(&target), "still mounted");
        assert!(!target.join("upper").exists());
        // Both still alive behind the fds, top first.
        let has = |i: usize, name: &str| {
            let dir = std::os::fd::AsRawFd::as_raw_fd(&held.0[i]);
            nix::fcntl::openat(
                Some(dir),
                name,
                nix::fcntl::OFlag::O_RDONLY,
                nix::sys::stat::Mode::empty(),
            )
            .map(nix::unistd::close)
            .is_ok()
        };
        assert!(has(0, "upper") && !has(0, "lower"));
        assert!(has(1, "lower") && !has(1, "upper"));
        drop(held);

        // Nothing mounted: nothing held, no error.
        assert!(detach_all(&target).is_empty());
        assert!(detach_all(&tmp.path().join("missing")).is_empty());
    }
}
