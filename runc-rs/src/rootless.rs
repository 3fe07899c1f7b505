//! Running as an unprivileged user (a `spec --rootless` bundle), as runc
//! does: the state root under the user's runtime dir, id maps written
//! directly when they map only the user's own ids (else through the
//! setuid newuidmap/newgidmap, which check /etc/subuid and /etc/subgid),
//! and no cgroup when the user may not create one and nothing needs it.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMapping, Spec};

#[derive(Debug, thiserror::Error)]
pub enum RootlessError {
    #[error("write {file} of pid {pid}: {source}")]
    Write {
        file: String,
        pid: i32,
        source: std::io::Error,
    },
    #[error("{tool} {pid} {args}: {reason} (is the mapping allowed by /etc/sub{kind}id?)")]
    Tool {
        tool: String,
        pid: i32,
        args: String,
        reason: String,
        kind: &'static str,
    },
}

pub fn is_rootless() -> bool {
    !nix::unistd::geteuid().is_root()
}

/// `--root` when not given: /run/runc-rs for root; for a user
/// `$XDG_RUNTIME_DIR/runc-rs`, else `/run/user/<uid>/runc-rs` (runc uses
/// `$XDG_RUNTIME_DIR/runc`).
pub fn default_root() -> PathBuf {
    if !is_rootless() {
        return PathBuf::from("/run/runc-rs");
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|v| !v.is_empty()) {
        Some(dir) => Path::new(&dir).join("runc-rs"),
        None => PathBuf::from(format!("/run/user/{}/runc-rs", nix::unistd::geteuid())),
    }
}

/// Creates a user's default root as runc does its XDG one: private, and
/// sticky so that the runtime dir's cleanup leaves it alone.
pub fn prepare_root(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::create_dir_all(root).is_ok() {
        let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o1700));
    }
}

/// Whether create may go on without the cgroup it could not create: the
/// runtime is rootless, the spec names no cgroupsPath (so no one expects a
/// particular cgroup) and asks for no limit (device rules aside, which a
/// user namespace enforces anyway), and the kernel said "not allowed".
pub fn skip_cgroup(err: &cgroups::Error, cgroups_path: Option<&str>, spec: &Spec) -> bool {
    let denied = match err {
        cgroups::Error::Create { source, .. } | cgroups::Error::Write { source, .. } => {
            matches!(
                source.raw_os_error(),
                Some(libc::EACCES | libc::EPERM | libc::EROFS)
            )
        }
        _ => false,
    };
    let res = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    let limits = res.memory().is_some()
        || res.cpu().is_some()
        || res.pids().is_some()
        || res.block_io().is_some()
        || res
            .hugepage_limits()
            .as_ref()
            .is_some_and(|h| !h.is_empty())
        || res.network().is_some()
        || res.rdma().is_some()
        || res.unified().as_ref().is_some_and(|u| !u.is_empty());
    is_rootless() && denied && cgroups_path.is_none_or(|p| p.is_empty()) && !limits
}

/// Writes `uid_map` or `gid_map` of `pid` as runc's nsexec does: directly
/// first; on EPERM (a mapping beyond the user's own id) through
/// newuidmap/newgidmap. A rootless gid map of just the user's own gid
/// needs `setgroups` denied first (the kernel's rule for unprivileged maps).
pub fn write_map(pid: i32, file: &str, maps: &[LinuxIdMapping]) -> Result<(), RootlessError> {
    if maps.is_empty() {
        return Ok(());
    }
    if file == "gid_map" && is_rootless() && own_id_only(maps, nix::unistd::getegid().as_raw()) {
        let _ = std::fs::write(format!("/proc/{pid}/setgroups"), "deny");
    }
    let data: String = maps
        .iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect();
    match std::fs::write(format!("/proc/{pid}/{file}"), &data) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) && is_rootless() => {
            mapping_tool(pid, file, maps)
        }
        Err(source) => Err(RootlessError::Write {
            file: file.to_owned(),
            pid,
            source,
        }),
    }
}

fn own_id_only(maps: &[LinuxIdMapping], id: u32) -> bool {
    matches!(maps, [m] if m.container_id() == 0 && m.host_id() == id && m.size() == 1)
}

fn mapping_tool(pid: i32, file: &str, maps: &[LinuxIdMapping]) -> Result<(), RootlessError> {
    let (tool, kind) = if file == "uid_map" {
        ("newuidmap", "u")
    } else {
        ("newgidmap", "g")
    };
    let args: Vec<String> = maps
        .iter()
        .flat_map(|m| {
            [
                m.container_id().to_string(),
                m.host_id().to_string(),
                m.size().to_string(),
            ]
        })
        .collect();
    let err = |reason: String| RootlessError::Tool {
        tool: tool.into(),
        pid,
        args: args.join(" "),
        reason,
        kind,
    };
    let out = std::process::Command::new(tool)
        .arg(pid.to_string())
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| err(format!("cannot run it: {e}")))?;
    if !out.status.success() {
        return Err(err(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(())
}
