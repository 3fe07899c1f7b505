//! Small helpers shared by the operations: atomic writes, rootfs-confined
//! path resolution, /proc parsing, timestamps and signal names.

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum UtilError {
    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("path {path:?}: a symlink at {link:?} escapes the rootfs")]
    Escape { path: PathBuf, link: PathBuf },
    #[error("path {path:?}: too many levels of symbolic links")]
    SymlinkLoop { path: PathBuf },
    #[error("resolve {path:?}: {source}")]
    Resolve {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unknown signal {0:?}")]
    UnknownSignal(String),
}

/// Writes `data` to `path` so that a reader (or a crashed runtime) sees
/// either the old content or the new one, never a torn file: write a
/// sibling temp file, rename it over the target. No fsync: container state
/// does not outlive a reboot (its processes do not either), and an fsync
/// costs milliseconds on every create when --root is on a disk.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), UtilError> {
    Staged::write(path, data)?.commit()
}

/// A file written ahead of time to a sibling temp file and renamed into
/// place later ([`write_atomic`] does both at once). `create` stages its final
/// state.json and the pid file while init is still setting up (creating a
/// file costs a disk filesystem far more than renaming one), and commits
/// them once init is ready, so readers see them appear exactly as before.
/// Dropped without a commit, the temp file is removed.
#[derive(Debug)]
pub struct Staged {
    /// None once committed.
    tmp: Option<PathBuf>,
    path: PathBuf,
}

impl Staged {
    pub fn write(path: &Path, data: &[u8]) -> Result<Staged, UtilError> {
        let mut name = std::ffi::OsString::from(".");
        name.push(path.file_name().unwrap_or(OsStr::new("file")));
        name.push(format!(".tmp{}", std::process::id()));
        let tmp = path.with_file_name(name);
        let staged = Staged {
            tmp: Some(tmp.clone()),
            path: path.to_owned(),
        };
        let res = std::fs::File::create(&tmp).and_then(|mut f| f.write_all(data));
        res.map_err(|source| UtilError::Write {
            path: path.to_owned(),
            source,
        })?;
        Ok(staged)
    }

    /// Puts the file in place (a rename over any older version).
    pub fn commit(mut self) -> Result<(), UtilError> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        std::fs::rename(&tmp, &self.path).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            UtilError::Write {
                path: self.path.clone(),
                source,
            }
        })
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(tmp) = &self.tmp {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Resolves `unsafe_path` as if `root` were `/`: every symlink met on the way
/// is followed inside `root`. A link whose target climbs above `root` with
/// `..` is refused, so a mount destination can never land outside the rootfs.
/// Components that do not exist yet are kept as they are.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf, UtilError> {
    let mut pending: Vec<PathBuf> = vec![];
    push_components(&mut pending, unsafe_path);
    pending.reverse();
    let mut resolved = PathBuf::new(); // relative to root
    let mut links = 0;
    while let Some(comp) = pending.pop() {
        let comp_str = comp.as_os_str();
        if comp_str == ".." {
            if !resolved.pop() {
                // `..` at the root stays at the root, as the kernel does for `/..`.
            }
            continue;
        }
        let candidate = resolved.join(&comp);
        let full = root.join(&candidate);
        match std::fs::symlink_metadata(&full) {
            Ok(md) if md.file_type().is_symlink() => {
                links += 1;
                if links > 255 {
                    return Err(UtilError::SymlinkLoop {
                        path: unsafe_path.to_owned(),
                    });
                }
                let target = std::fs::read_link(&full).map_err(|source| UtilError::Resolve {
                    path: full.clone(),
                    source,
                })?;
                let base = if target.is_absolute() {
                    PathBuf::new()
                } else {
                    resolved.clone()
                };
                if escapes(&base, &target) {
                    return Err(UtilError::Escape {
                        path: unsafe_path.to_owned(),
                        link: Path::new("/").join(&candidate),
                    });
                }
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut more = vec![];
                push_components(&mut more, &target);
                for c in more.into_iter().rev() {
                    pending.push(c);
                }
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

fn push_components(out: &mut Vec<PathBuf>, p: &Path) {
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(PathBuf::from(s)),
            Component::ParentDir => out.push(PathBuf::from("..")),
            _ => {}
        }
    }
}

/// Whether following `target` from `base` (both relative to the root) would
/// climb above the root.
fn escapes(base: &Path, target: &Path) -> bool {
    let mut depth: i64 = if target.is_absolute() {
        0
    } else {
        base.components().count() as i64
    };
    for c in target.components() {
        match c {
            Component::ParentDir => {
                depth -= 1;
                if depth < 0 {
                    return true;
                }
            }
            Component::Normal(_) => depth += 1,
            _ => {}
        }
    }
    false
}

/// The fields of /proc/<pid>/stat that tell whether a pid is still the
/// process we started: its state letter and its start time in clock ticks.
#[derive(Debug, Clone, Copy)]
pub struct ProcStat {
    pub state: char,
    pub start_time: u64,
}

pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let data = std::fs::read(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: parse after the last ')'.
    let close = data.iter().rposition(|&b| b == b')')?;
    let rest = std::str::from_utf8(&data[close + 2..]).ok()?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); starttime is field 22.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// RFC 3339 with nanoseconds in UTC, as Go's time.RFC3339Nano prints it.
pub fn rfc3339_nano(t: std::time::SystemTime) -> String {
    // humantime prints all nine digits; Go's RFC3339Nano drops trailing
    // zeros (and the dot with them).
    let full = humantime::format_rfc3339_nanos(t).to_string();
    let body = full
        .trim_end_matches('Z')
        .trim_end_matches('0')
        .trim_end_matches('.');
    format!("{body}Z")
}

/// Parses a signal as runc accepts it: a number, `KILL`, or `SIGKILL`.
pub fn parse_signal(s: &str) -> Result<i32, UtilError> {
    if let Ok(n) = s.parse::<i32>() {
        if n > 0 && n <= 64 {
            return Ok(n);
        }
        return Err(UtilError::UnknownSignal(s.to_owned()));
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    let sig = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ILL" => libc::SIGILL,
        "TRAP" => libc::SIGTRAP,
        "ABRT" | "IOT" => libc::SIGABRT,
        "BUS" => libc::SIGBUS,
        "FPE" => libc::SIGFPE,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "SEGV" => libc::SIGSEGV,
        "USR2" => libc::SIGUSR2,
        "PIPE" => libc::SIGPIPE,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "STKFLT" => libc::SIGSTKFLT,
        "CHLD" | "CLD" => libc::SIGCHLD,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "TTIN" => libc::SIGTTIN,
        "TTOU" => libc::SIGTTOU,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "XFSZ" => libc::SIGXFSZ,
        "VTALRM" => libc::SIGVTALRM,
        "PROF" => libc::SIGPROF,
        "WINCH" => libc::SIGWINCH,
        "IO" | "POLL" => libc::SIGIO,
        "PWR" => libc::SIGPWR,
        "SYS" => libc::SIGSYS,
        _ => {
            if let Some(n) = name
                .strip_prefix("RTMIN+")
                .and_then(|n| n.parse::<i32>().ok())
            {
                return Ok(libc::SIGRTMIN() + n);
            }
            return Err(UtilError::UnknownSignal(s.to_owned()));
        }
    };
    Ok(sig)
}

/// Converts a path to a C string for raw syscalls.
pub fn cstr(p: &Path) -> std::ffi::CString {
    std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_join_keeps_links_inside() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", r.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../tmp", r.join("etc/evil")).unwrap();
        std::os::unix::fs::symlink("etc", r.join("rel")).unwrap();
        assert_eq!(
            secure_join(r, Path::new("/abs/x")).unwrap(),
            r.join("etc/x")
        );
        assert_eq!(
            secure_join(r, Path::new("/rel/../etc")).unwrap(),
            r.join("etc")
        );
        assert_eq!(
            secure_join(r, Path::new("/../../etc")).unwrap(),
            r.join("etc")
        );
        assert!(matches!(
            secure_join(r, Path::new("/etc/evil/y")),
            Err(UtilError::Escape { .. })
        ));
    }

    #[test]
    fn time_format() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::new(1_700_000_000, 120_000_000);
        assert_eq!(rfc3339_nano(t), "2023-11-14T22:13:20.12Z");
        let whole = std::time::UNIX_EPOCH + std::time::Duration::new(951_782_400, 0);
        assert_eq!(rfc3339_nano(whole), "2000-02-29T00:00:00Z");
        let tiny = std::time::UNIX_EPOCH + std::time::Duration::new(0, 5);
        assert_eq!(rfc3339_nano(tiny), "1970-01-01T00:00:00.000000005Z");
    }

    #[test]
    fn signals() {
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert_eq!(parse_signal("9").unwrap(), 9);
        assert!(parse_signal("FOO").is_err());
    }
}
