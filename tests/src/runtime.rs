//! Locating the runtimes under test.

use std::path::PathBuf;

/// The `runc-rs` binary under test: `$RUNC_RS_BIN`, else the one cargo built
/// beside this test executable (`<target>/<profile>/runc-rs`).
pub fn runc_rs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RUNC_RS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/<profile>/deps/<test-binary>
    let profile_dir = exe.parent().and_then(|d| d.parent()).expect("target profile dir");
    profile_dir.join("runc-rs")
}

/// True when running as root (every end-to-end test needs it).
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}
