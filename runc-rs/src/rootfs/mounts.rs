//! Mounting one spec entry into the rootfs (before pivot_root).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Mount;

use super::options::{parse, ParsedOptions};
use super::{RootfsContext, RootfsError};
use crate::utils::secure_join;

fn do_mount(
    src: Option<&Path>,
    dest: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), RootfsError> {
    mount(src, dest, fstype, flags, data).map_err(|source| RootfsError::Mount {
        source_path: src.map(|s| s.display().to_string()).unwrap_or_default(),
        dest: dest.to_owned(),
        fstype: fstype.unwrap_or("").to_owned(),
        source,
    })
}

/// Mount flags the kernel locks on a mount seen from a less privileged user
/// namespace: a remount must repeat them or it fails with EPERM.
fn locked_flags(dest: &Path) -> MsFlags {
    let Ok(st) = nix::sys::statvfs::statvfs(dest) else {
        return MsFlags::empty();
    };
    use nix::sys::statvfs::FsFlags;
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (ff, mf) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(ff) {
            out |= mf;
        }
    }
    out
}

/// Which of a mount's current flags a remount repeats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preserve {
    /// nosuid, nodev and noexec always (runc's read-only paths).
    Security,
    /// None at first; all of them if the kernel refuses with EPERM, as it
    /// does for flags locked by a less privileged user namespace (runc's
    /// read-only rootfs and bind remounts).
    OnEperm,
}

/// Remounts a bind mount with `flags` (read-only and friends).
pub fn remount_bind(dest: &Path, flags: MsFlags, preserve: Preserve) -> Result<(), RootfsError> {
    let mut f = flags | MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    f.remove(MsFlags::MS_REC);
    match preserve {
        Preserve::Security => {
            f |= locked_flags(dest) & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC);
            do_mount(None, dest, None, f, None)
        }
        Preserve::OnEperm => match do_mount(None, dest, None, f, None) {
            Err(RootfsError::Mount {
                source: nix::Error::EPERM,
                ..
            }) => do_mount(
                None,
                dest,
                None,
                f | (locked_flags(dest) & !MsFlags::MS_RDONLY),
                None,
            ),
            other => other,
        },
    }
}

fn apply_propagation(dest: &Path, p: &ParsedOptions) -> Result<(), RootfsError> {
    for pr in &p.propagation {
        do_mount(None, dest, None, *pr, None)?;
    }
    Ok(())
}

/// Creates the mount point: a directory, or an empty file when the source
/// of a bind mount is not a directory.
fn create_target(dest: &Path, dir: bool) -> Result<(), RootfsError> {
    let err = |source| RootfsError::Create {
        path: dest.to_owned(),
        source,
    };
    // 0755 as runc's MkdirAll makes them (the umask is 0 during mounts).
    let mkdir_p = |p: &Path| {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(p)
    };
    if dir {
        mkdir_p(dest).map_err(err)
    } else {
        if let Some(parent) = dest.parent() {
            mkdir_p(parent).map_err(err)?;
        }
        if std::fs::symlink_metadata(dest).is_err() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o755)
                .open(dest)
                .map_err(err)?;
        }
        Ok(())
    }
}

pub fn mount_entry(ctx: &RootfsContext, m: &Mount) -> Result<(), RootfsError> {
    let opts = parse(m.options().as_deref().unwrap_or_default());
    let typ = m.typ().as_deref().unwrap_or("none");
    let dest = secure_join(&ctx.rootfs, m.destination()).map_err(RootfsError::Path)?;
    if opts.is_bind() || typ == "bind" {
        return bind_entry(ctx, m, &opts, &dest);
    }
    if typ == "cgroup" || typ == "cgroup2" {
        return super::cgroupfs::mount_cgroup(ctx, m, &opts, &dest);
    }
    // A tmpfs over an existing directory takes that directory's mode, as
    // runc does (it chmods the new mount's root).
    let prior_mode = match std::fs::metadata(&dest) {
        Ok(md) if typ == "tmpfs" && md.is_dir() => Some(md.permissions()),
        _ => None,
    };
    create_target(&dest, true)?;
    let src = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
    let mut flags = opts.flags;
    // /dev is filled with device nodes after mounting, and other mounts may
    // need mount points inside a tmpfs: both are made read-only only at the
    // end, with a bind remount (see `defers_readonly` and finalize).
    if defers_readonly(m) {
        flags.remove(MsFlags::MS_RDONLY);
    }
    do_mount(
        Some(&src),
        &dest,
        Some(typ),
        flags,
        opts.data_string().as_deref(),
    )?;
    if let Some(perm) = prior_mode {
        std::fs::set_permissions(&dest, perm).map_err(|source| RootfsError::Create {
            path: dest.clone(),
            source,
        })?;
    }
    apply_propagation(&dest, &opts)
}

/// Mounts that are mounted read-write and remounted read-only after the
/// root switch (runc's mountPropagate/finalizeRootfs): every tmpfs and /dev.
pub fn defers_readonly(m: &Mount) -> bool {
    let typ = m.typ().as_deref().unwrap_or("none");
    let bind = parse(m.options().as_deref().unwrap_or_default()).is_bind() || typ == "bind";
    !bind && (typ == "tmpfs" || m.destination() == Path::new("/dev"))
}

fn bind_entry(
    ctx: &RootfsContext,
    m: &Mount,
    opts: &ParsedOptions,
    dest: &Path,
) -> Result<(), RootfsError> {
    let src = m.source().clone().unwrap_or_default();
    let src = if src.is_absolute() {
        src
    } else {
        ctx.bundle.join(src)
    };
    let md = std::fs::metadata(&src).map_err(|source| RootfsError::Create {
        path: src.clone(),
        source,
    })?;
    create_target(dest, md.is_dir())?;
    let rec = opts.flags & MsFlags::MS_REC;
    do_mount(Some(&src), dest, None, MsFlags::MS_BIND | rec, None)?;
    let extra = opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    if !extra.is_empty() {
        remount_bind(dest, extra, Preserve::OnEperm)?;
    }
    apply_propagation(dest, opts)
}
