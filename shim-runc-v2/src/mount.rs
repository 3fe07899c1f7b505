//! The rootfs mounts of a CreateTaskRequest: mounted, in order, on
//! `<bundle>/rootfs`, and unmounted again on failure and on delete.

use std::ffi::CString;
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
}
