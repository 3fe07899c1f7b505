//! /dev inside the container: the default device nodes, the spec's
//! devices, and the usual symlinks.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::RootfsError;
use crate::utils::secure_join;

/// A device node to create: what runc creates by default plus the spec's.
#[derive(Debug, Clone)]
pub struct DeviceNode {
    pub path: PathBuf,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The nodes every container gets (and the device cgroup allows).
pub fn default_nodes() -> Vec<DeviceNode> {
    [
        ("/dev/null", 1, 3),
        ("/dev/zero", 1, 5),
        ("/dev/full", 1, 7),
        ("/dev/tty", 5, 0),
        ("/dev/urandom", 1, 9),
        ("/dev/random", 1, 8),
    ]
    .into_iter()
    .map(|(p, major, minor)| DeviceNode {
        path: p.into(),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    })
    .collect()
}

pub fn from_spec(d: &LinuxDevice) -> DeviceNode {
    let kind = match d.typ() {
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        _ => SFlag::S_IFCHR,
    };
    DeviceNode {
        path: d.path().clone(),
        kind,
        major: d.major() as u64,
        minor: d.minor() as u64,
        mode: d.file_mode().unwrap_or(0o666) & 0o7777,
        uid: d.uid().unwrap_or(0),
        gid: d.gid().unwrap_or(0),
    }
}

/// Creates each node under `rootfs`. Inside a user namespace mknod is not
/// allowed, so the host's node is bind-mounted onto an empty file instead.
pub fn create_nodes(
    rootfs: &Path,
    nodes: &[DeviceNode],
    in_userns: bool,
) -> Result<(), RootfsError> {
    for n in nodes {
        let dest = secure_join(rootfs, &n.path).map_err(RootfsError::Path)?;
        if let Some(parent) = dest.parent() {
            // 0755 as runc makes them (the umask is 0 while /dev is filled).
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|source| RootfsError::Create {
                    path: parent.to_owned(),
                    source,
                })?;
        }
        let _ = std::fs::remove_file(&dest);
        if in_userns {
            std::fs::File::create(&dest).map_err(|source| RootfsError::Create {
                path: dest.clone(),
                source,
            })?;
            nix::mount::mount(
                Some(&n.path),
                &dest,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|source| RootfsError::Mount {
                source_path: n.path.display().to_string(),
                dest: dest.clone(),
                fstype: "bind".into(),
                source,
            })?;
            continue;
        }
        mknod(
            &dest,
            n.kind,
            Mode::from_bits_truncate(n.mode),
            makedev(n.major, n.minor),
        )
        .map_err(|source| RootfsError::Mknod {
            path: dest.clone(),
            source,
        })?;
        nix::unistd::chown(&dest, Some(n.uid.into()), Some(n.gid.into())).map_err(|source| {
            RootfsError::Mknod {
                path: dest.clone(),
                source,
            }
        })?;
    }
    Ok(())
}

/// /dev/fd, /dev/std{in,out,err}, /dev/core and /dev/ptmx links.
pub fn create_symlinks(rootfs: &Path) -> Result<(), RootfsError> {
    let dev = rootfs.join("dev");
    let mut links = vec![
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    if Path::new("/proc/kcore").exists() {
        links.push(("/proc/kcore", "core"));
    }
    for (target, name) in links {
        let p = dev.join(name);
        match std::os::unix::fs::symlink(target, &p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => return Err(RootfsError::Create { path: p, source }),
        }
    }
    let ptmx = dev.join("ptmx");
    let _ = std::fs::remove_file(&ptmx);
    std::os::unix::fs::symlink("pts/ptmx", &ptmx)
        .map_err(|source| RootfsError::Create { path: ptmx, source })
}
