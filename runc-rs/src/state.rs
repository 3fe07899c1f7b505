//! The container's record under `--root`: `<root>/<id>/state.json`.
//!
//! The record is written atomically at every change, first as soon as the
//! state directory exists (so a crash mid-create still leaves enough for
//! `delete --force` to find the cgroup), then again when init is ready.
//! The status is never stored: it is derived from the live process, the
//! `exec.fifo` and the freezer, as runc does.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::utils::{proc_stat, write_atomic, Staged, UtilError};

pub const STATE_FILE: &str = "state.json";
pub const EXEC_FIFO: &str = "exec.fifo";
/// The runtime-spec version this runtime implements, reported by `state`.
pub const OCI_VERSION: &str = "1.2.0";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("container does not exist")]
    NotExist,
    #[error("container with id exists: {0}")]
    Exists(String),
    #[error("invalid container id {0:?}: it must match [A-Za-z0-9_+.-]+")]
    InvalidId(String),
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parse {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("create state dir {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Write(#[from] UtilError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What the runtime remembers about a container between invocations.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    /// Init's pid in the runtime's pid namespace; 0 until init exists.
    pub pid: i32,
    /// Init's start time (clock ticks since boot): guards against pid reuse.
    pub start_time: u64,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default)]
    pub annotations: std::collections::BTreeMap<String, String>,
    /// The cgroup the container lives in, so later commands need no spec.
    pub cgroup: Option<cgroups::Manager>,
    /// Set when the container shares the host's pid namespace: stopping it
    /// then means killing every process of its cgroup, not just init.
    #[serde(default)]
    pub shared_pid_ns: bool,
    /// The hooks to run on later operations (poststart, poststop).
    #[serde(default)]
    pub hooks: Option<oci_spec::runtime::Hooks>,
    /// The spec as created (exec and update read it).
    pub config: Option<oci_spec::runtime::Spec>,
    /// `create --no-new-keyring`: exec then keeps the caller's keyring too.
    #[serde(default)]
    pub no_new_keyring: bool,
}

/// `runc state` output: the runtime-spec state plus runc's extras.
#[derive(Debug, Serialize)]
pub struct PublicState<'a> {
    #[serde(rename = "ociVersion")]
    pub oci_version: &'a str,
    pub id: &'a str,
    pub pid: i32,
    pub status: Status,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    pub created: &'a str,
    pub owner: String,
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub annotations: &'a std::collections::BTreeMap<String, String>,
}

pub fn validate_id(id: &str) -> Result<(), StateError> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+-.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(StateError::InvalidId(id.to_owned()))
    }
}

pub fn container_dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Creates `<root>/<id>` exclusively: a duplicate id fails here, before
/// anything else is created.
pub fn create_dir(root: &Path, id: &str) -> Result<PathBuf, StateError> {
    validate_id(id)?;
    std::fs::create_dir_all(root).map_err(|source| StateError::CreateDir {
        path: root.to_owned(),
        source,
    })?;
    let dir = container_dir(root, id);
    match std::fs::create_dir(&dir) {
        Ok(()) => Ok(dir),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(StateError::Exists(id.to_owned()))
        }
        Err(source) => Err(StateError::CreateDir { path: dir, source }),
    }
}

impl ContainerState {
    pub fn load(root: &Path, id: &str) -> Result<Self, StateError> {
        validate_id(id)?;
        let path = container_dir(root, id).join(STATE_FILE);
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(StateError::NotExist),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        serde_json::from_slice(&data).map_err(|source| StateError::Parse { path, source })
    }

    pub fn save(&self, root: &Path) -> Result<(), StateError> {
        let path = container_dir(root, &self.id).join(STATE_FILE);
        let data = serde_json::to_vec(self).expect("state serializes");
        write_atomic(&path, &data)?;
        Ok(())
    }

    /// [`save`](Self::save) in two steps: the record is written now, to a
    /// temp file, and replaces state.json only at [`Staged::commit`].
    pub fn stage(&self, root: &Path) -> Result<Staged, StateError> {
        let path = container_dir(root, &self.id).join(STATE_FILE);
        Ok(Staged::write(
            &path,
            &serde_json::to_vec(self).expect("state serializes"),
        )?)
    }

    pub fn dir(&self, root: &Path) -> PathBuf {
        container_dir(root, &self.id)
    }

    /// Whether init is still the process we started (and not a zombie).
    pub fn init_alive(&self) -> bool {
        if self.pid <= 0 {
            return false;
        }
        match proc_stat(self.pid) {
            Some(st) => st.start_time == self.start_time && st.state != 'Z' && st.state != 'X',
            None => false,
        }
    }

    pub fn status(&self, root: &Path) -> Status {
        if self.pid == 0 {
            return Status::Creating;
        }
        if !self.init_alive() {
            return Status::Stopped;
        }
        if self.dir(root).join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        if let Some(cg) = &self.cgroup {
            if matches!(cg.freezer_state(), Ok(cgroups::FreezerState::Frozen)) {
                return Status::Paused;
            }
        }
        Status::Running
    }

    pub fn public<'a>(&'a self, root: &Path) -> PublicState<'a> {
        let status = self.status(root);
        PublicState {
            oci_version: OCI_VERSION,
            id: &self.id,
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: &self.bundle,
            rootfs: &self.rootfs,
            created: &self.created,
            owner: owner_name(&self.dir(root)),
            annotations: &self.annotations,
        }
    }
}

/// The user name owning the state dir (runc's "owner" column).
fn owner_name(dir: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let uid = match std::fs::metadata(dir) {
        Ok(md) => md.uid(),
        Err(_) => return String::new(),
    };
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => u.name,
        _ => format!("#{uid}"),
    }
}

/// Ids of every container under `root`, sorted.
pub fn list_ids(root: &Path) -> Vec<String> {
    let mut ids: Vec<String> = match std::fs::read_dir(root) {
        Ok(rd) => rd
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect(),
        Err(_) => vec![],
    };
    ids.sort();
    ids
}
