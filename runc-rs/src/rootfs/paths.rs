//! Masked and read-only paths, applied after pivot_root.

use std::path::Path;

use nix::mount::{mount, MsFlags};

use super::mounts::{remount_bind, Preserve};
use super::RootfsError;

/// Hides `path`: a directory gets an empty read-only tmpfs on top, a file
/// gets /dev/null bound over it. Paths that do not exist are skipped.
pub fn mask(path: &Path) -> Result<(), RootfsError> {
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        Err(_) => return Ok(()),
    };
    let res = if md.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    res.map_err(|source| RootfsError::Mount {
        source_path: if md.is_dir() {
            "tmpfs".into()
        } else {
            "/dev/null".into()
        },
        dest: path.to_owned(),
        fstype: "maskedPaths".into(),
        source,
    })
}

/// Makes `path` read-only by binding it onto itself and remounting.
pub fn readonly(path: &Path) -> Result<(), RootfsError> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|source| RootfsError::Mount {
        source_path: path.display().to_string(),
        dest: path.to_owned(),
        fstype: "readonlyPaths".into(),
        source,
    })?;
    remount_bind(path, MsFlags::MS_RDONLY, Preserve::Security)
}
