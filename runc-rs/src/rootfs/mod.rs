//! Preparing the container's root filesystem, in the container's mount
//! namespace: propagation, the rootfs bind, every spec mount, /dev, the
//! switch of root (pivot_root or MS_MOVE), then masked and read-only paths.

pub mod cgroupfs;
pub mod devices;
pub mod mounts;
pub mod options;
pub mod paths;

use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::Spec;

use crate::utils::{secure_join, UtilError};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("mount {source_path} on {dest} ({fstype}): {source}")]
    Mount {
        source_path: String,
        dest: PathBuf,
        fstype: String,
        source: nix::Error,
    },
    #[error("create {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("mknod {path}: {source}")]
    Mknod { path: PathBuf, source: nix::Error },
    #[error("mount destination: {0}")]
    Path(UtilError),
    #[error("{step}: {source}")]
    Syscall {
        step: &'static str,
        source: nix::Error,
    },
}

/// What rootfs preparation needs to know beyond the spec.
pub struct RootfsContext {
    pub rootfs: PathBuf,
    pub bundle: PathBuf,
    pub in_userns: bool,
    pub cgroupns: bool,
    pub cgroup_unified: bool,
    /// The container's cgroup directory per v1 hierarchy mount name.
    pub cgroup_dirs: BTreeMap<String, PathBuf>,
}

fn sys(step: &'static str) -> impl FnOnce(nix::Error) -> RootfsError {
    move |source| RootfsError::Syscall { step, source }
}

/// Everything before the root switch.
pub fn prepare(ctx: &RootfsContext, spec: &Spec) -> Result<(), RootfsError> {
    let linux = spec.linux().as_ref();
    let prop = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(options::propagation)
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    mount(None::<&str>, "/", None::<&str>, prop, None::<&str>)
        .map_err(sys("set propagation of /"))?;
    // A recursive slave, private or unbindable "/" (the default rslave
    // included) leaves no mount shared: no need to read mountinfo then.
    if !prop.contains(MsFlags::MS_REC) || prop.contains(MsFlags::MS_SHARED) {
        make_parent_private(&ctx.rootfs)?;
    }
    mount(
        Some(&ctx.rootfs),
        &ctx.rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys("bind the rootfs onto itself"))?;

    let old_umask = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let mut dev_is_bind = false;
    for m in spec.mounts().iter().flatten() {
        if m.destination() == Path::new("/dev") {
            let o = m.options().as_deref().unwrap_or_default();
            dev_is_bind =
                o.iter().any(|x| x == "bind" || x == "rbind") || m.typ().as_deref() == Some("bind");
        }
        mounts::mount_entry(ctx, m)?;
    }
    if !dev_is_bind {
        let mut nodes = devices::default_nodes();
        for d in linux
            .and_then(|l| l.devices().as_ref())
            .into_iter()
            .flatten()
        {
            nodes.retain(|n| n.path != *d.path());
            nodes.push(devices::from_spec(d));
        }
        devices::create_nodes(&ctx.rootfs, &nodes, ctx.in_userns)?;
        devices::create_symlinks(&ctx.rootfs)?;
    }
    nix::sys::stat::umask(old_umask);
    if let Some(p) = spec.process() {
        let cwd = secure_join(&ctx.rootfs, p.cwd()).map_err(RootfsError::Path)?;
        std::fs::create_dir_all(&cwd)
            .map_err(|source| RootfsError::Create { path: cwd, source })?;
    }
    Ok(())
}

/// pivot_root(2) needs the rootfs's parent mount not to be shared.
fn make_parent_private(rootfs: &Path) -> Result<(), RootfsError> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<(&str, bool)> = None;
    for line in info.lines() {
        let Some((pre, _)) = line.split_once(" - ") else {
            continue;
        };
        let f: Vec<&str> = pre.split(' ').collect();
        let Some(mp) = f.get(4) else { continue };
        if rootfs.starts_with(mp) && best.is_none_or(|(b, _)| mp.len() >= b.len()) {
            best = Some((mp, f[6..].iter().any(|o| o.starts_with("shared:"))));
        }
    }
    if let Some((mp, true)) = best {
        mount(
            None::<&str>,
            mp,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(sys("make the rootfs parent mount private"))?;
    }
    Ok(())
}

/// Switches the root to the rootfs.
pub fn switch_root(rootfs: &Path, no_pivot: bool) -> Result<(), RootfsError> {
    if no_pivot {
        nix::unistd::chdir(rootfs).map_err(sys("chdir to rootfs"))?;
        mount(
            Some(rootfs),
            "/",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(sys("move the rootfs to /"))?;
        nix::unistd::chroot(".").map_err(sys("chroot"))?;
        return nix::unistd::chdir("/").map_err(sys("chdir /"));
    }
    let old = std::fs::File::open("/").map_err(|source| RootfsError::Create {
        path: "/".into(),
        source,
    })?;
    let new = std::fs::File::open(rootfs).map_err(|source| RootfsError::Create {
        path: rootfs.into(),
        source,
    })?;
    nix::unistd::fchdir(new.as_raw_fd()).map_err(sys("fchdir rootfs"))?;
    nix::unistd::pivot_root(".", ".").map_err(sys("pivot_root"))?;
    // The old root is now stacked under "."; detach it without letting the
    // unmount propagate back to the host.
    nix::unistd::fchdir(old.as_raw_fd()).map_err(sys("fchdir old root"))?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys("make the old root rslave"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("unmount the old root"))?;
    nix::unistd::chdir("/").map_err(sys("chdir /"))
}

/// After the root switch: masked and read-only paths, a read-only /dev
/// or rootfs when asked.
pub fn finalize(spec: &Spec) -> Result<(), RootfsError> {
    let linux = spec.linux().as_ref();
    for p in linux
        .and_then(|l| l.readonly_paths().as_ref())
        .into_iter()
        .flatten()
    {
        paths::readonly(Path::new(p))?;
    }
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        paths::mask(Path::new(p))?;
    }
    for m in spec.mounts().iter().flatten() {
        let opts = options::parse(m.options().as_deref().unwrap_or_default());
        if mounts::defers_readonly(m) && opts.flags.contains(MsFlags::MS_RDONLY) {
            // A bind remount changes only this mount's flags (the tmpfs
            // superblock stays rw), and is allowed in a user namespace.
            let dest = secure_join(Path::new("/"), m.destination()).map_err(RootfsError::Path)?;
            mounts::remount_bind(&dest, opts.flags, mounts::Preserve::OnEperm)?;
        }
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        mounts::remount_bind(
            Path::new("/"),
            MsFlags::MS_RDONLY,
            mounts::Preserve::OnEperm,
        )?;
    }
    Ok(())
}
