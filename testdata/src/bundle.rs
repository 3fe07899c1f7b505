//! OCI bundles (a directory with `config.json` and `rootfs/`) for tests.
//!
//! Why a type that owns a `TempDir`: every test gets its own bundle that is
//! removed when the test ends, even when it panics, so a failing suite does
//! not fill /tmp. A bundle can be kept with [`Bundle::into_path`] to debug a
//! failure by hand (`runc run -b <dir> x`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;
use tempfile::TempDir;

use crate::rootfs::build_rootfs;
use crate::spec::{default_spec, set_args};

/// Prefix of every temporary directory this crate creates, so leftovers
/// from a crashed run are easy to find (`ls -d /tmp/runc-rs-test-*`).
pub const TEMP_PREFIX: &str = "runc-rs-test-";

/// Parent of the temporary directories: /tmp rather than `$TMPDIR`, so the
/// path is predictable for tools such as runc that resolve it as root.
pub const TEMP_PARENT: &str = "/tmp";

/// Overrides [`TEMP_PARENT`]: in the cgroup v2 VM /tmp is a shared folder
/// on which mkfifo fails (ENXIO), so state roots must live elsewhere.
pub const TEMP_PARENT_ENV: &str = "TESTDATA_TMPDIR";

/// Create a fresh temporary directory `/tmp/runc-rs-test-XXXXXX` (or under
/// `$TESTDATA_TMPDIR`).
pub fn temp_dir() -> io::Result<TempDir> {
    let parent = std::env::var_os(TEMP_PARENT_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| TEMP_PARENT.into());
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempdir_in(parent)
}

/// An OCI bundle: `dir/rootfs` (busybox) and `dir/config.json`.
///
/// `spec` is the in-memory spec; edit it, then call [`Bundle::write_spec`].
/// The constructors write it once already so the bundle is usable as is.
#[derive(Debug)]
pub struct Bundle {
    /// The bundle directory (pass to `runc run -b`).
    pub dir: PathBuf,
    /// The spec written to `config.json` by [`Bundle::write_spec`].
    pub spec: Value,
    /// Owner of `dir` when it is temporary; `None` when kept or user-given.
    tmp: Option<TempDir>,
}

impl Bundle {
    /// A new bundle in a fresh temp dir: busybox rootfs + [`default_spec`]
    /// (args `["sh"]`), `config.json` already written. Removed on drop.
    pub fn new() -> io::Result<Bundle> {
        let tmp = temp_dir()?;
        let mut b = Bundle::build(tmp.path())?;
        b.tmp = Some(tmp);
        Ok(b)
    }

    /// [`Bundle::new`] with `process.args` set to `args`.
    pub fn with_args(args: &[&str]) -> io::Result<Bundle> {
        let mut b = Bundle::new()?;
        b.set_args(args);
        b.write_spec()?;
        Ok(b)
    }

    /// A bundle in a caller-chosen directory (created if missing), never
    /// removed by this crate. Used by the `testdata bundle DIR` command.
    pub fn in_dir(dir: &Path) -> io::Result<Bundle> {
        Bundle::build(dir)
    }

    fn build(dir: &Path) -> io::Result<Bundle> {
        fs::create_dir_all(dir)?;
        build_rootfs(&dir.join("rootfs"))?;
        let b = Bundle {
            dir: dir.to_path_buf(),
            spec: default_spec(),
            tmp: None,
        };
        b.write_spec()?;
        Ok(b)
    }

    /// The rootfs directory, `dir/rootfs`.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// The spec file, `dir/config.json`.
    pub fn config_path(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// Set `process.args` in the in-memory spec (call `write_spec` after).
    pub fn set_args(&mut self, args: &[&str]) {
        set_args(&mut self.spec, args);
    }

    /// Write `spec` to `dir/config.json` (pretty-printed, like runc).
    pub fn write_spec(&self) -> io::Result<()> {
        let mut text = serde_json::to_vec_pretty(&self.spec).map_err(io::Error::other)?;
        text.push(b'\n');
        fs::write(self.config_path(), text)
    }

    /// Keep the directory after the bundle is dropped and return its path.
    pub fn into_path(mut self) -> PathBuf {
        if let Some(tmp) = self.tmp.take() {
            // Disarm the TempDir: `keep` consumes it without deleting the dir.
            let _ = tmp.keep();
        }
        self.dir.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_bundle_is_complete_and_removed_on_drop() {
        let b = Bundle::with_args(&["echo", "hi"]).unwrap();
        let dir = b.dir.clone();
        assert!(dir
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with(TEMP_PREFIX));
        assert!(
            dir.starts_with(std::env::var(TEMP_PARENT_ENV).unwrap_or_else(|_| TEMP_PARENT.into()))
        );
        assert!(b.rootfs().join("bin/sh").exists());
        let on_disk: Value = serde_json::from_slice(&fs::read(b.config_path()).unwrap()).unwrap();
        assert_eq!(on_disk, b.spec);
        assert_eq!(
            on_disk["process"]["args"],
            serde_json::json!(["echo", "hi"])
        );
        drop(b);
        assert!(!dir.exists());
    }

    #[test]
    fn into_path_keeps_dir() {
        let b = Bundle::new().unwrap();
        let dir = b.into_path();
        assert!(dir.join("config.json").is_file());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn edits_are_written() {
        let mut b = Bundle::new().unwrap();
        b.spec["hostname"] = "edited".into();
        b.write_spec().unwrap();
        let on_disk: Value = serde_json::from_slice(&fs::read(b.config_path()).unwrap()).unwrap();
        assert_eq!(on_disk["hostname"], "edited");
    }
}
