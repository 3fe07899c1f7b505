//! A minimal busybox root filesystem built from the host's static busybox.
//!
//! Why busybox-static: it is one self-contained binary (no dynamic loader,
//! no libc in the rootfs), it ships as a Debian package, and its applets
//! give tests a shell plus the usual coreutils (`id`, `cat`, `ls`, `sleep`).
//!
//! Why copy + symlinks instead of `busybox --install`: `build_rootfs` runs
//! once per test, so it must be cheap and must not depend on the busybox
//! binary inside the rootfs being runnable on the host (it always is here,
//! but spawning it per test is slower than writing ~270 symlinks).

use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where Debian's busybox-static installs the binary (`/bin` is a symlink
/// to `usr/bin` on merged-/usr systems, so both spellings work).
pub const HOST_BUSYBOX: &str = "/bin/busybox";

/// Environment variable that overrides [`HOST_BUSYBOX`], for hosts that
/// keep a static busybox elsewhere.
pub const BUSYBOX_ENV: &str = "TESTDATA_BUSYBOX";

/// Contents of `/etc/passwd` in the rootfs.
///
/// `user` (1000) exists so tests can run a process as a non-root user by
/// name; `nobody` matches the conventional overflow uid 65534.
pub const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
user:x:1000:1000:user:/home/user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
";

/// Contents of `/etc/group` in the rootfs.
///
/// `extra1`/`extra2` list `user` as a member so tests can check that a
/// runtime resolves supplementary groups from `/etc/group` (runc does when
/// `process.user` is given by name, and `id` inside the container shows them).
pub const GROUP: &str = "\
root:x:0:
user:x:1000:
extra1:x:2000:user
extra2:x:2001:user
nogroup:x:65534:
";

/// Contents of `/etc/hosts`: harmless default so `hostname -i`-style tests
/// and image runtimes that bind-mount over it find a regular file.
pub const HOSTS: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// Directories created in every rootfs, with their modes.
///
/// `tmp` is sticky world-writable like on a real system; `root` is 0700.
/// `proc`, `sys` and `dev` are empty mount points for the runtime.
const DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("sbin", 0o755),
    ("usr", 0o755),
    ("usr/bin", 0o755),
    ("usr/sbin", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("tmp", 0o1777),
    ("etc", 0o755),
    ("root", 0o700),
    ("home", 0o755),
    ("home/user", 0o755),
    ("run", 0o755),
    ("var", 0o755),
    ("var/tmp", 0o1777),
];

/// Path of the host busybox binary used as the rootfs's only executable.
pub fn host_busybox() -> PathBuf {
    std::env::var_os(BUSYBOX_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(HOST_BUSYBOX))
}

/// Applet install paths (relative, e.g. `bin/sh`, `usr/sbin/arping`) as
/// printed by `busybox --list-full`.
///
/// Cached for the whole process: the list never changes while tests run,
/// and spawning busybox for every rootfs would be the slowest step.
pub fn applets() -> io::Result<&'static [String]> {
    static APPLETS: OnceLock<Result<Vec<String>, String>> = OnceLock::new();
    let r = APPLETS.get_or_init(|| list_applets(&host_busybox()).map_err(|e| e.to_string()));
    match r {
        Ok(v) => Ok(v.as_slice()),
        Err(e) => Err(io::Error::other(e.clone())),
    }
}

fn list_applets(busybox: &Path) -> io::Result<Vec<String>> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("running {} --list-full: {e}", busybox.display()),
            )
        })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} --list-full failed: {}",
            busybox.display(),
            out.status
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut list: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter(|l| is_safe_relative(Path::new(l)))
        .map(str::to_owned)
        .collect();
    list.sort();
    list.dedup();
    Ok(list)
}

/// Only plain relative paths (no `..`, no absolute) may be created inside
/// the rootfs, whatever busybox prints.
fn is_safe_relative(p: &Path) -> bool {
    p.components().all(|c| matches!(c, Component::Normal(_))) && p.components().next().is_some()
}

/// Relative symlink target from `link` (relative to the rootfs) to
/// `bin/busybox`, e.g. `usr/sbin/arping` -> `../../bin/busybox`.
///
/// Relative rather than absolute so the rootfs also resolves correctly from
/// the host (an absolute `/bin/busybox` would silently point at the host's).
fn busybox_target(link: &Path) -> PathBuf {
    let depth = link.components().count().saturating_sub(1);
    if link.parent() == Some(Path::new("bin")) {
        return PathBuf::from("busybox");
    }
    let mut t = PathBuf::new();
    for _ in 0..depth {
        t.push("..");
    }
    t.push("bin/busybox");
    t
}

fn mkdir_mode(path: &Path, mode: u32) -> io::Result<()> {
    match fs::create_dir(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // Set explicitly: create_dir is filtered by the process umask.
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

fn write_mode(path: &Path, contents: &str, mode: u32) -> io::Result<()> {
    fs::write(path, contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

/// Build a busybox rootfs in `dir` (created if missing).
///
/// Layout: `bin/busybox` (a copy of the host's static busybox), one relative
/// symlink per applet at the path `busybox --list-full` gives (`bin/sh`,
/// `sbin/...`, `usr/bin/...`), the directories in the module docs, and
/// `/etc/passwd`, `/etc/group`, `/etc/hosts`.
///
/// `home/user` is chowned to 1000:1000 when running as root (best effort)
/// so a container running as `user` has a writable `$HOME`.
pub fn build_rootfs(dir: &Path) -> io::Result<()> {
    let applets = applets()?;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    for (d, mode) in DIRS {
        mkdir_mode(&dir.join(d), *mode)?;
    }
    let bb = dir.join("bin/busybox");
    fs::copy(host_busybox(), &bb)?;
    fs::set_permissions(&bb, fs::Permissions::from_mode(0o755))?;

    for applet in applets {
        let rel = Path::new(applet);
        if rel == Path::new("bin/busybox") {
            continue;
        }
        let link = dir.join(rel);
        if let Some(parent) = link.parent() {
            if !parent.exists() {
                fs::create_dir_all(parent)?;
            }
        }
        match symlink(busybox_target(rel), &link) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }

    write_mode(&dir.join("etc/passwd"), PASSWD, 0o644)?;
    write_mode(&dir.join("etc/group"), GROUP, 0o644)?;
    write_mode(&dir.join("etc/hosts"), HOSTS, 0o644)?;
    // Best effort: fails with EPERM when not root, which only matters for
    // tests that write to $HOME as uid 1000.
    let _ = std::os::unix::fs::chown(dir.join("home/user"), Some(1000), Some(1000));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_are_relative() {
        assert_eq!(
            busybox_target(Path::new("bin/sh")),
            PathBuf::from("busybox")
        );
        assert_eq!(
            busybox_target(Path::new("sbin/init")),
            PathBuf::from("../bin/busybox")
        );
        assert_eq!(
            busybox_target(Path::new("usr/sbin/arping")),
            PathBuf::from("../../bin/busybox")
        );
    }

    #[test]
    fn unsafe_paths_rejected() {
        assert!(is_safe_relative(Path::new("usr/bin/id")));
        assert!(!is_safe_relative(Path::new("/bin/sh")));
        assert!(!is_safe_relative(Path::new("../etc/x")));
        assert!(!is_safe_relative(Path::new("")));
    }

    #[test]
    fn rootfs_has_shell_and_users() {
        let tmp = crate::temp_dir().unwrap();
        let root = tmp.path().join("rootfs");
        build_rootfs(&root).unwrap();

        // sh resolves to the copied busybox, inside the rootfs.
        let sh = root.join("bin/sh");
        assert_eq!(fs::read_link(&sh).unwrap(), PathBuf::from("busybox"));
        let resolved = fs::canonicalize(&sh).unwrap();
        assert_eq!(
            resolved,
            fs::canonicalize(root.join("bin/busybox")).unwrap()
        );
        let meta = fs::metadata(&resolved).unwrap();
        assert!(meta.is_file() && meta.permissions().mode() & 0o111 != 0);
        assert_eq!(meta.len(), fs::metadata(host_busybox()).unwrap().len());

        // Applets in other dirs point back into the rootfs too.
        for a in ["usr/bin/id", "bin/cat", "bin/ls", "bin/sleep"] {
            let p = root.join(a);
            assert!(fs::symlink_metadata(&p).is_ok(), "{a} missing");
            assert!(fs::canonicalize(&p)
                .unwrap()
                .starts_with(fs::canonicalize(&root).unwrap()));
        }

        let passwd = fs::read_to_string(root.join("etc/passwd")).unwrap();
        assert!(passwd.lines().any(|l| l.starts_with("root:x:0:0:")));
        assert!(passwd.lines().any(|l| l.starts_with("user:x:1000:1000:")));
        assert!(passwd
            .lines()
            .any(|l| l.starts_with("nobody:x:65534:65534:")));
        let group = fs::read_to_string(root.join("etc/group")).unwrap();
        assert!(group.lines().any(|l| l == "extra1:x:2000:user"));
        assert!(group.lines().any(|l| l == "extra2:x:2001:user"));
        assert!(group.lines().any(|l| l.starts_with("nogroup:x:65534:")));

        let tmp_mode = fs::metadata(root.join("tmp")).unwrap().permissions().mode();
        assert_eq!(tmp_mode & 0o7777, 0o1777);
        for d in ["proc", "sys", "dev", "etc", "root", "run", "var"] {
            assert!(root.join(d).is_dir(), "{d} missing");
        }
    }

    #[test]
    fn rootfs_shell_runs_on_host() {
        // The copied binary really is a working shell (static, no loader).
        let tmp = crate::temp_dir().unwrap();
        build_rootfs(tmp.path()).unwrap();
        let out = Command::new(tmp.path().join("bin/sh"))
            .args(["-c", "echo ok"])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    }

    #[test]
    fn build_is_idempotent() {
        let tmp = crate::temp_dir().unwrap();
        build_rootfs(tmp.path()).unwrap();
        build_rootfs(tmp.path()).unwrap();
    }
}
