//! Offline test fixtures for runc-rs and its sibling crates.
//!
//! Why this crate exists: the runtime, shim and daemon tests must run on a
//! machine without registry access, and must compare runc-rs with runc,
//! crun, containerd and podman on identical inputs. Everything here is
//! built locally from Debian's busybox-static:
//!
//! * [`build_rootfs`]: a busybox root filesystem with users and groups;
//! * [`default_spec`]: the spec `runc spec` (runc 1.1) writes, made
//!   non-interactive;
//! * [`Bundle`]: rootfs + `config.json` in a self-deleting temp dir;
//! * [`build_image_archive`]: the same rootfs as an OCI image archive that
//!   both `ctr images import` and `podman load` accept, and
//!   [`verify_image_archive`] to check one.
//!
//! The `testdata` binary exposes the same fixtures to shell scripts
//! (`bench/`), see `testdata --help`.

pub mod bundle;
pub mod host;
pub mod image;
pub mod rootfs;
pub mod spec;
pub mod verify;

use std::path::PathBuf;

pub use bundle::{temp_dir, Bundle, TEMP_PREFIX};
pub use image::{
    build_image_archive, build_image_archive_with_cmd, normalize_reference, DEFAULT_REFERENCE,
};
pub use rootfs::build_rootfs;
pub use spec::default_spec;
pub use verify::{verify_image_archive, VerifiedImage};

/// Find an executable called `name` in `$PATH`, like `command -v`.
///
/// Tests use it to skip (rather than fail) comparisons with a tool that is
/// not installed on the machine running them.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}
