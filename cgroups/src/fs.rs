//! Small helpers over cgroupfs files: every read and write carries the field it serves so the
//! error names it.

use crate::error::{Error, Result};
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::thread::sleep;
use std::time::{Duration, Instant};

pub(crate) fn read(field: &str, path: &Path) -> Result<String> {
    fs::read_to_string(path)
        .map(|s| s.trim_end().to_string())
        .map_err(|source| Error::Read {
            field: field.to_string(),
            path: path.to_path_buf(),
            source,
        })
}

/// Writes `value` with a single write(2) (cgroupfs parses each write on its own). The file
/// must exist: cgroupfs never creates files and O_CREAT would hide a typo as EPERM/ENOENT.
pub(crate) fn write(field: &str, path: &Path, value: &str) -> Result<()> {
    log::debug!("{field}: write {value:?} to {}", path.display());
    write_raw(path, value).map_err(|source| Error::Write {
        field: field.to_string(),
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

pub(crate) fn write_raw(path: &Path, value: &str) -> io::Result<()> {
    let mut f = fs::OpenOptions::new().write(true).open(path)?;
    let n = f.write(value.as_bytes())?;
    if n != value.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write ({n} of {} bytes)", value.len()),
        ));
    }
    Ok(())
}

/// The pids listed in `cgroup.procs` of `dir` and of every cgroup below it.
pub(crate) fn procs_recursive(dir: &Path) -> Result<Vec<i32>> {
    let mut out = Vec::new();
    for d in tree_postorder(dir)? {
        let file = d.join("cgroup.procs");
        let content = match fs::read_to_string(&file) {
            Ok(c) => c,
            // removed between listing and reading
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(Error::Read {
                    field: "cgroup.procs".into(),
                    path: file,
                    source,
                })
            }
        };
        for line in content.lines().filter(|l| !l.trim().is_empty()) {
            let pid = line.trim().parse::<i32>().map_err(|_| Error::Parse {
                field: "cgroup.procs".into(),
                path: file.clone(),
                content: line.to_string(),
            })?;
            out.push(pid);
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// `dir` and every directory below it, deepest first (children before their parent).
/// A missing `dir` gives an empty list.
pub(crate) fn tree_postorder(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Read {
                field: "cgroup tree".into(),
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    for entry in entries.flatten() {
        // cgroupfs has only plain files and directories; no symlinks to follow.
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            walk(&entry.path(), out)?;
        }
    }
    out.push(dir.to_path_buf());
    Ok(())
}

/// Removes `dir` and every cgroup below it, deepest first, with [`rmdir_retry`]. Tries a plain
/// rmdir first: a container's cgroup usually has no sub-cgroups, and listing every hierarchy's
/// directory would cost three syscalls each.
pub(crate) fn remove_tree(dir: &Path, deadline: Instant) -> Result<()> {
    match fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        // EBUSY: sub-cgroups, or tasks still leaving; anything else is reported by the retry.
        Err(_) => tree_postorder(dir)?
            .iter()
            .try_for_each(|d| rmdir_retry(d, deadline)),
    }
}

/// rmdir `dir`, retrying EBUSY until `deadline` (a just-killed task can take a moment to
/// leave). A directory that is already gone is fine.
pub(crate) fn rmdir_retry(dir: &Path, deadline: Instant) -> Result<()> {
    // Short at first: an exiting task leaves its cgroup within a millisecond or so.
    let mut delay = Duration::from_millis(1);
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(100));
            }
            Err(source) => {
                return Err(Error::Remove {
                    path: dir.to_path_buf(),
                    source,
                })
            }
        }
    }
}

/// The key/value lines of a flat keyed file such as `cgroup.events` or `memory.events`.
pub(crate) fn keyed_value(content: &str, key: &str) -> Option<String> {
    content.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key)).then(|| it.collect::<Vec<_>>().join(" "))
    })
}
