//! Host helpers for tests that drive real runtimes: privilege check,
//! cgroup and mount cleanup.
//!
//! Why here: every end-to-end test (this crate's, `tests/`, `bench/`) must
//! leave the host as it found it — remove the cgroups it made and unmount
//! what a daemon left behind — even when it fails halfway. These helpers
//! only ever touch the paths they are given: a cgroup name the caller owns
//! (`runc-rs-testdata-<pid>`) and mounts below a temp dir the caller made.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Mount point of the cgroup hierarchies (v1 controllers, `unified`, or
/// the v2 root itself).
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// True when the effective uid is 0 (read from `/proc/self/status`, so no
/// libc dependency is needed).
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// A cgroup name unique to this process, e.g. `runc-rs-testdata-1234`;
/// `tag` distinguishes several per process (`runc-rs-testdata-1234-ctr`).
pub fn cgroup_name(tag: &str) -> String {
    let pid = std::process::id();
    if tag.is_empty() {
        format!("runc-rs-testdata-{pid}")
    } else {
        format!("runc-rs-testdata-{pid}-{tag}")
    }
}

/// Every directory that is `<name>` in some hierarchy: on cgroup v1/hybrid
/// `/sys/fs/cgroup/<controller>/<name>` (including `unified` and
/// `systemd`), on pure v2 `/sys/fs/cgroup/<name>`.
pub fn cgroup_dirs(name: &str) -> Vec<PathBuf> {
    let name = name.trim_start_matches('/');
    let mut out = Vec::new();
    if name.is_empty() || name.split('/').any(|c| c == ".." || c == ".") {
        return out;
    }
    let root = Path::new(CGROUP_ROOT);
    if root.join("cgroup.controllers").exists() {
        // Pure v2: one hierarchy mounted at the root; its subdirectories
        // are other people's cgroups, never hierarchies.
        let direct = root.join(name);
        if direct.is_dir() {
            out.push(direct);
        }
        return out;
    }
    if let Ok(rd) = fs::read_dir(root) {
        for e in rd.flatten() {
            let p = e.path().join(name);
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) && p.is_dir() {
                out.push(p);
            }
        }
    }
    out
}

/// Remove the cgroup `name` (e.g. `runc-rs-testdata-1234`) and all its
/// descendants in every hierarchy, deepest first, with `rmdir` only (which
/// the kernel refuses for a cgroup that still has processes). Returns the
/// directories that could not be removed.
pub fn remove_cgroup_tree(name: &str) -> Vec<PathBuf> {
    let mut failed = Vec::new();
    for top in cgroup_dirs(name) {
        let mut dirs = Vec::new();
        collect_dirs(&top, &mut dirs);
        // Deepest first: a cgroup can only be removed once it has no children.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for d in dirs {
            if let Err(e) = fs::remove_dir(&d) {
                if e.kind() != io::ErrorKind::NotFound {
                    failed.push(d);
                }
            }
        }
    }
    failed
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// Mount points at or below `dir`, from `/proc/self/mountinfo`, deepest
/// first (the order to unmount them in).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mountinfo(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out.dedup();
    out
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c));
        if b[i] == b'\\' && octal {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmount everything mounted at or below `dir` (e.g. overlay
/// snapshots or shm a daemon left in its root/state). Uses `umount -l`
/// from util-linux so no libc binding is needed. Returns what is still
/// mounted afterwards.
pub fn unmount_under(dir: &Path) -> Vec<PathBuf> {
    for m in mounts_under(dir) {
        let _ = Command::new("umount").arg("-l").arg(&m).status();
    }
    mounts_under(dir)
}

/// Send `signal` (e.g. "TERM", "KILL") to `pid` with `kill(1)`.
pub fn signal(pid: u32, signal: &str) -> io::Result<()> {
    let st = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()?;
    if st.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("kill -{signal} {pid}: {st}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), "/a b");
        assert_eq!(unescape_mountinfo(r"/a\134"), "/a\\");
        assert_eq!(unescape_mountinfo("/plain"), "/plain");
    }

    #[test]
    fn cgroup_names_are_ours() {
        assert!(cgroup_name("").starts_with("runc-rs-testdata-"));
        assert!(cgroup_name("x").ends_with("-x"));
        assert!(cgroup_dirs("../etc").is_empty());
        assert!(cgroup_dirs("").is_empty());
    }

    #[test]
    fn nothing_mounted_under_fresh_dir() {
        let t = crate::temp_dir().unwrap();
        assert!(mounts_under(t.path()).is_empty());
    }
}
