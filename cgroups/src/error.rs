//! Errors of the crate. Every variant names what was being done: the OCI field
//! (`linux.resources.memory.limit`, `linux.resources.unified["io.max"]`) or the
//! operation (`cgroup.procs`, `freezer`), and the file or directory involved.

use std::io;
use std::path::PathBuf;

pub type Result<T> = std::result::Result<T, Error>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing a cgroup interface file failed.
    #[error("{field}: cannot write {value:?} to {}: {source}", path.display())]
    Write {
        field: String,
        path: PathBuf,
        value: String,
        #[source]
        source: io::Error,
    },

    /// Reading a cgroup interface file (or /proc file) failed.
    #[error("{field}: cannot read {}: {source}", path.display())]
    Read {
        field: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A file had content we could not understand.
    #[error("{field}: cannot parse {content:?} read from {}", path.display())]
    Parse {
        field: String,
        path: PathBuf,
        content: String,
    },

    /// A value in the OCI resources is out of range or malformed; nothing was written.
    #[error("{field}: invalid value {value:?}: {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },

    /// The field cannot be honoured on this host (controller or file missing, v1-only field
    /// on cgroup v2, ...); nothing was written.
    #[error("{field}: not supported: {reason}")]
    Unsupported { field: String, reason: String },

    #[error("cannot create cgroup directory {}: {source}", path.display())]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot remove cgroup directory {}: {source}", path.display())]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The `linux.cgroupsPath` cannot be used.
    #[error("linux.cgroupsPath {path:?}: {reason}")]
    Path { path: String, reason: String },

    /// The cgroup mounts or the process's own cgroup could not be determined.
    #[error("cgroup mounts: {reason}")]
    Mounts { reason: String },

    /// A state (frozen/thawed) was not reached in time.
    #[error("{field}: {} did not reach {wanted} within {waited_ms} ms", path.display())]
    Timeout {
        field: String,
        path: PathBuf,
        wanted: String,
        waited_ms: u128,
    },

    /// A system call other than a cgroupfs read/write failed (eventfd, inotify, bpf, ...).
    #[error("{field}: {call} failed: {source}")]
    Syscall {
        field: String,
        /// The call and its main argument, e.g. "bpf(BPF_PROG_ATTACH) on /sys/fs/cgroup/c".
        call: String,
        #[source]
        source: io::Error,
    },

    /// What the kernel reports after a write differs from what was asked, e.g. devices.list
    /// after applying device rules (a parent cgroup that does not allow a device).
    #[error("{field}: {} does not match the request after writing: {reason}", path.display())]
    Verify {
        field: String,
        path: PathBuf,
        reason: String,
    },

    /// A sub-cgroup to join (runc's `exec --cgroup CONTROLLER:PATH`) names a controller the
    /// container has no hierarchy for.
    #[error("unknown controller {controller} in sub-cgroup paths")]
    UnknownController { controller: String },

    /// A sub-cgroup path that leads out of the container's cgroup.
    #[error("{path} is not a sub cgroup path")]
    NotSubCgroup { path: String },

    /// A sub-cgroup to join does not exist: the runtime never creates one (the caller does).
    #[error("cannot join sub-cgroup: {}: {source}", file.display())]
    NoSubCgroup {
        file: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("cannot send signal {signal} to pid {pid}: {source}")]
    Signal {
        pid: i32,
        signal: i32,
        #[source]
        source: nix::Error,
    },
}

impl Error {
    /// The OCI field or operation an error is about, when it names one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Write { field, .. }
            | Error::Read { field, .. }
            | Error::Parse { field, .. }
            | Error::Invalid { field, .. }
            | Error::Unsupported { field, .. }
            | Error::Timeout { field, .. }
            | Error::Syscall { field, .. }
            | Error::Verify { field, .. } => Some(field),
            Error::Path { .. } => Some("linux.cgroupsPath"),
            _ => None,
        }
    }

    pub(crate) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::Unsupported {
            field: field.into(),
            reason: reason.into(),
        }
    }

    /// The last OS error of a failed system call.
    pub(crate) fn syscall(field: impl Into<String>, call: impl Into<String>) -> Error {
        Error::Syscall {
            field: field.into(),
            call: call.into(),
            source: std::io::Error::last_os_error(),
        }
    }

    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Error {
        Error::Invalid {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}
