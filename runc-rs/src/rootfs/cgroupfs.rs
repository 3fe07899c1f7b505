//! The `cgroup` mount: on cgroup v2 a cgroup2 filesystem; on v1 and hybrid
//! hosts a tmpfs holding one mount per v1 hierarchy, as runc lays it out
//! (with a cgroup namespace, real cgroup mounts rooted at the container's
//! cgroup; without one, binds of the container's cgroup directories).

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::Mount;

use super::mounts::{remount_bind, Preserve};
use super::options::ParsedOptions;
use super::{RootfsContext, RootfsError};

const DEFAULT_FLAGS: MsFlags = MsFlags::MS_NOEXEC
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV);

/// A v1 hierarchy mounted on the host: its mount point and the options that
/// name its controllers (e.g. `cpu`, `name=systemd`).
#[derive(Debug, Clone)]
pub struct V1Hierarchy {
    pub mountpoint: PathBuf,
    pub root: PathBuf,
    pub subsystems: String,
}

/// Reads the host's v1 cgroup mounts from /proc/self/mountinfo.
pub fn host_v1_hierarchies() -> Vec<V1Hierarchy> {
    let data = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out = vec![];
    for line in data.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let post: Vec<&str> = post.split(' ').collect();
        if post.first() != Some(&"cgroup") {
            continue;
        }
        let pre: Vec<&str> = pre.split(' ').collect();
        let (Some(root), Some(mp)) = (pre.get(3), pre.get(4)) else {
            continue;
        };
        let super_opts = post.get(2).copied().unwrap_or("");
        let subsystems: Vec<&str> = super_opts
            .split(',')
            .filter(|o| {
                !matches!(*o, "rw" | "ro")
                    && !o.starts_with("release_agent")
                    && *o != "clone_children"
                    && *o != "noprefix"
                    && *o != "xattr"
                    && *o != "cpuset_v2_mode"
            })
            .collect();
        out.push(V1Hierarchy {
            mountpoint: mp.into(),
            root: root.into(),
            subsystems: subsystems.join(","),
        });
    }
    out
}

pub fn mount_cgroup(
    ctx: &RootfsContext,
    m: &Mount,
    opts: &ParsedOptions,
    dest: &Path,
) -> Result<(), RootfsError> {
    let mkdir = |p: &Path| {
        std::fs::create_dir_all(p).map_err(|source| RootfsError::Create {
            path: p.to_owned(),
            source,
        })
    };
    mkdir(dest)?;
    let mount = |src: &str, d: &Path, t: Option<&str>, f: MsFlags, data: Option<&str>| {
        nix::mount::mount(Some(src), d, t, f, data).map_err(|source| RootfsError::Mount {
            source_path: src.to_owned(),
            dest: d.to_owned(),
            fstype: t.unwrap_or("bind").to_owned(),
            source,
        })
    };
    if ctx.cgroup_unified {
        // The source is the spec's (runc passes it through; mountinfo shows it).
        let src = m
            .source()
            .as_ref()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cgroup".into());
        return mount(&src, dest, Some("cgroup2"), opts.flags, None).map(|_| ());
    }
    mount(
        "tmpfs",
        dest,
        Some("tmpfs"),
        DEFAULT_FLAGS,
        Some("mode=755"),
    )?;
    for h in host_v1_hierarchies() {
        let base = h
            .mountpoint
            .file_name()
            .map(|b| b.to_os_string())
            .unwrap_or_default();
        let target = dest.join(&base);
        mkdir(&target)?;
        if ctx.cgroupns {
            let (src, data) = match h.subsystems.strip_prefix("name=") {
                Some(name) => (name.to_owned(), h.subsystems.clone()),
                None => ("cgroup".to_owned(), h.subsystems.clone()),
            };
            let flags = DEFAULT_FLAGS | (opts.flags & MsFlags::MS_RDONLY);
            mount(&src, &target, Some("cgroup"), flags, Some(&data))?;
        } else {
            // Bind the container's own cgroup directory of this hierarchy.
            let key = base.to_string_lossy().to_string();
            let Some(host_dir) = ctx.cgroup_dirs.get(&key) else {
                continue;
            };
            mount(
                &host_dir.to_string_lossy(),
                &target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            remount_bind(
                &target,
                DEFAULT_FLAGS | (opts.flags & MsFlags::MS_RDONLY),
                Preserve::OnEperm,
            )?;
        }
        // Co-mounted controllers ("cpu,cpuacct") get a symlink per name.
        if base.to_string_lossy().contains(',') {
            for ss in base.to_string_lossy().split(',') {
                let _ = std::os::unix::fs::symlink(&base, dest.join(ss));
            }
        }
    }
    // The tmpfs itself stays read-write, as runc leaves it: only the
    // hierarchies below it carry the mount's `ro`.
    Ok(())
}
