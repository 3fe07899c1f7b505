//! What `checkpoint` and `restore` share about criu: the options, the
//! version check, and the options' encoding for criu's RPC
//! ([`super::criu_rpc`]), which runc uses too: only the RPC hands a
//! restored terminal's pty master back and reports the points where runc
//! runs hooks.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::criu_rpc::Pb;

use super::ContainerError;

/// What `checkpoint` and `restore` share (runc's CriuOpts).
#[derive(Debug, Clone, Default)]
pub struct CriuOpts {
    /// The criu binary (`--criu`, default "criu" from $PATH).
    pub criu: String,
    pub image_path: Option<PathBuf>,
    pub work_path: Option<PathBuf>,
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub auto_dedup: bool,
    /// soft, full or strict.
    pub manage_cgroups_mode: Option<String>,
    /// Namespaces created empty on restore (runc: only "network"; the
    /// network namespace is always among them since runc does not manage
    /// network devices).
    pub empty_ns: Vec<String>,
}

fn bad(msg: impl Into<String>) -> ContainerError {
    ContainerError::Precondition(msg.into())
}

/// `criu --version` as runc compares it (major*10000 + minor*100 + sub);
/// criu older than 3.0 has no usable interface.
pub fn check_version(criu: &str) -> Result<u32, ContainerError> {
    let out = Command::new(criu).arg("--version").output().map_err(|e| {
        // Go's wording, which runc prints.
        let why = if e.kind() == std::io::ErrorKind::NotFound && !criu.contains('/') {
            format!("exec: {criu:?}: executable file not found in $PATH")
        } else {
            let text = e
                .raw_os_error()
                .map(|c| nix::Error::from_raw(c).desc().to_lowercase())
                .unwrap_or_else(|| e.to_string());
            format!("fork/exec {criu}: {text}")
        };
        bad(format!("CRIU version check failed: {why}"))
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Version:"))
        .and_then(|v| {
            let n: Vec<u32> = v
                .trim()
                .split('.')
                .map(|p| p.parse().unwrap_or(0))
                .collect();
            Some(n.first()? * 10000 + n.get(1).unwrap_or(&0) * 100 + n.get(2).unwrap_or(&0))
        })
        .ok_or_else(|| {
            bad(format!(
                "CRIU version check failed: unexpected output of {criu} --version: {}",
                text.trim()
            ))
        })?;
    if version < 30000 {
        return Err(bad(format!(
            "CRIU version {version} must be 30000 or higher"
        )));
    }
    Ok(version)
}

impl CriuOpts {
    /// The image directory: `--image-path` or `./checkpoint`, created if
    /// missing (a container may be checkpointed again into it).
    pub fn images(&self) -> Result<PathBuf, ContainerError> {
        let p = match &self.image_path {
            Some(p) => std::path::absolute(p).map_err(super::io_err("image path"))?,
            None => std::env::current_dir()
                .map_err(super::io_err("current directory"))?
                .join("checkpoint"),
        };
        std::fs::create_dir_all(&p).map_err(super::io_err(format!("create {}", p.display())))?;
        Ok(p)
    }

    /// The criu_opts fields of both directions: image and work dirs (as
    /// fds of this process, which criu opens through /proc), log, root,
    /// cgroups, the permissive flags, the empty network namespace (runc
    /// does not manage network devices), orphan pty masters (a terminal's
    /// master lives outside the container) and runc's config file. The
    /// returned files must stay open until criu is done.
    pub fn rpc_opts(
        &self,
        images: &Path,
        log_file: &str,
        root: &Path,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> Result<(Pb, Vec<std::fs::File>), ContainerError> {
        let mut keep = vec![];
        let images_dir = std::fs::File::open(images)
            .map_err(super::io_err(format!("open {}", images.display())))?;
        let mut o = Pb::default();
        o.int(1, std::os::fd::AsRawFd::as_raw_fd(&images_dir));
        keep.push(images_dir);
        if let Some(w) = &self.work_path {
            let w = std::path::absolute(w).map_err(super::io_err("work path"))?;
            std::fs::create_dir_all(&w)
                .map_err(super::io_err(format!("create {}", w.display())))?;
            let dir =
                std::fs::File::open(&w).map_err(super::io_err(format!("open {}", w.display())))?;
            o.int(17, std::os::fd::AsRawFd::as_raw_fd(&dir));
            keep.push(dir);
        }
        o.int(9, 4)
            .string(10, log_file)
            .string(13, &root.display().to_string());
        o.flag(24, true).flag(12, true);
        match self.manage_cgroups_mode.as_deref() {
            None | Some("") => {}
            Some("soft") => {
                o.uint(34, 3);
            }
            Some("full") => {
                o.uint(34, 4);
            }
            Some("strict") => {
                o.uint(34, 5);
            }
            Some(_) => return Err(bad("Invalid manage cgroups mode")),
        }
        for (on, field) in [
            (self.ext_unix_sk, 4),
            (self.tcp_established, 5),
            (self.shell_job, 7),
            (self.file_locks, 8),
            (self.auto_dedup, 16),
        ] {
            if on {
                o.flag(field, true);
            }
        }
        for ns in &self.empty_ns {
            if ns != "network" {
                return Err(bad(format!("namespace {ns:?} is not supported")));
            }
        }
        o.uint(38, libc::CLONE_NEWNET as u64).flag(50, true);
        // runc's criu configuration file, unless the org.criu.config
        // annotation names another (or, empty, none).
        match annotations.get("org.criu.config") {
            Some(f) if !f.is_empty() => {
                o.string(51, f);
            }
            Some(_) => {}
            None => {
                o.string(51, "/etc/criu/runc.conf");
            }
        }
        Ok((o, keep))
    }

    /// Where criu writes `log_file` (the work dir, else the image dir).
    pub fn log_path(&self, images: &Path, log_file: &str) -> PathBuf {
        match &self.work_path {
            Some(w) => std::path::absolute(w)
                .unwrap_or_else(|_| w.clone())
                .join(log_file),
            None => images.join(log_file),
        }
    }
}
