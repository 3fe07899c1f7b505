//! Checkpoint and restore, as the Go shim does them.
//!
//! The Checkpoint RPC runs the runtime's `checkpoint` (criu) on the init
//! into the image directory containerd chose, with the request's
//! `containerd.runc.v1.CheckpointOptions`; the container keeps running
//! unless `exit` was asked. A Create that names a checkpoint does not run
//! the runtime at all: it records where the images are, and the Start that
//! follows runs `restore --detach` with the init's stdio, so that the
//! restored process is this shim's child like any created one.

use std::path::{Path, PathBuf};

use containerd_shim_protos::api::CheckpointTaskRequest;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::CheckpointOptions;

use crate::container::Container;
use crate::error::{Error, Result};
use crate::process::Op;
use crate::runc::{CheckpointArgs, CreateOpts};

const OPTIONS_TYPE: &str = "containerd.runc.v1.CheckpointOptions";

/// What a checkpointed Create leaves for Start.
#[derive(Debug, Clone)]
pub struct PendingRestore {
    pub args: CheckpointArgs,
    pub no_pivot: bool,
}

impl PendingRestore {
    /// From a Create request's `checkpoint` / `parent_checkpoint` and the
    /// runc options' criu work path.
    pub fn new(image: &str, parent: &str, work: &str, no_pivot: bool) -> PendingRestore {
        let some = |s: &str| (!s.is_empty()).then(|| PathBuf::from(s));
        PendingRestore {
            args: CheckpointArgs {
                image_path: PathBuf::from(image),
                work_path: some(work),
                parent_path: some(parent),
                ..CheckpointArgs::default()
            },
            no_pivot,
        }
    }
}

/// A Checkpoint request, decoded.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub args: CheckpointArgs,
    /// Stop the container after the dump (no `--leave-running`).
    pub exit: bool,
}

impl Checkpoint {
    /// The request's image path and options; the work directory defaults
    /// to `<bundle>/criu-work`, removed afterwards (a given one is kept).
    pub fn from_request(req: &CheckpointTaskRequest, bundle: &Path) -> Result<Checkpoint> {
        if req.path.is_empty() {
            return Err(Error::InvalidArgument(
                "checkpoint: empty image path".into(),
            ));
        }
        let o = match req.options.as_ref().filter(|a| !a.type_url.is_empty()) {
            None => CheckpointOptions::new(),
            Some(a) => {
                let name = a.type_url.rsplit('/').next().unwrap_or_default();
                if name != OPTIONS_TYPE {
                    return Err(Error::InvalidArgument(format!(
                        "checkpoint options of type {:?} (expected {OPTIONS_TYPE})",
                        a.type_url
                    )));
                }
                CheckpointOptions::parse_from_bytes(&a.value)
                    .map_err(|e| Error::InvalidArgument(format!("checkpoint options: {e}")))?
            }
        };
        let work = if o.work_path.is_empty() {
            bundle.join("criu-work")
        } else {
            PathBuf::from(&o.work_path)
        };
        Ok(Checkpoint {
            args: CheckpointArgs {
                image_path: PathBuf::from(&req.path),
                work_path: Some(work),
                parent_path: None,
                tcp_established: o.open_tcp,
                ext_unix_sk: o.external_unix_sockets,
                shell_job: o.terminal,
                file_locks: o.file_locks,
                manage_cgroups_mode: (!o.cgroups_mode.is_empty()).then(|| o.cgroups_mode.clone()),
                empty_ns: o.empty_namespaces.clone(),
            },
            exit: o.exit,
        })
    }

    /// Whether the work directory is the shim's own (removed afterwards).
    fn own_work_dir(&self, bundle: &Path) -> bool {
        self.args.work_path.as_deref() == Some(bundle.join("criu-work").as_path())
    }
}

impl Container {
    /// Checkpoint the running or paused init. On failure, criu's log is
    /// kept as `<bundle>/criu-dump.log` and named in the error.
    pub fn checkpoint(&self, cp: &Checkpoint) -> Result<()> {
        self.init.begin(Op::Checkpointing)?;
        let r = self.runc.checkpoint(&self.id, &cp.args, !cp.exit);
        // An exit during the dump (`exit`) already moved the state on.
        self.init.end(None);
        let work = cp.args.work_path.clone().unwrap_or_default();
        if let Err(e) = r {
            let kept = self.bundle.join("criu-dump.log");
            if let Err(ce) = std::fs::copy(work.join("dump.log"), &kept) {
                log::warn!("{}: keep criu's dump.log: {ce}", self.id);
            }
            if cp.own_work_dir(&self.bundle) {
                let _ = std::fs::remove_dir_all(&work);
            }
            return Err(Error::Runtime(format!("{e} path= {}", kept.display())));
        }
        if cp.own_work_dir(&self.bundle) {
            let _ = std::fs::remove_dir_all(&work);
        }
        Ok(())
    }

    /// Start of a checkpointed Create: `restore` the init from its images
    /// with the init's stdio; returns its pid.
    pub fn restore_init(&self, r: &PendingRestore) -> Result<i32> {
        let o = CreateOpts {
            pid_file: self.bundle.join("init.pid"),
            no_pivot: r.no_pivot,
            ..CreateOpts::default()
        };
        self.run_process(&self.init, o, |runc, o, io, start_copies| {
            start_copies()?;
            runc.restore(&self.id, &self.bundle, &r.args, o, io)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::protobuf::well_known_types::any::Any;

    fn request(opts: Option<CheckpointOptions>) -> CheckpointTaskRequest {
        let mut r = CheckpointTaskRequest::new();
        r.id = "c".into();
        r.path = "/var/lib/cp".into();
        if let Some(o) = opts {
            let mut a = Any::new();
            a.type_url = format!("type.googleapis.com/{OPTIONS_TYPE}");
            a.value = o.write_to_bytes().unwrap();
            r.options = Some(a).into();
        }
        r
    }

    #[test]
    fn defaults_leave_running_with_own_work_dir() {
        let b = Path::new("/b");
        let cp = Checkpoint::from_request(&request(None), b).unwrap();
        assert!(!cp.exit);
        assert_eq!(cp.args.image_path, Path::new("/var/lib/cp"));
        assert_eq!(
            cp.args.work_path.as_deref(),
            Some(Path::new("/b/criu-work"))
        );
        assert!(cp.own_work_dir(b));
    }

    #[test]
    fn options_map_to_runc_flags() {
        let mut o = CheckpointOptions::new();
        o.exit = true;
        o.open_tcp = true;
        o.terminal = true;
        o.file_locks = true;
        o.empty_namespaces = vec!["network".into()];
        o.work_path = "/w".into();
        let cp = Checkpoint::from_request(&request(Some(o)), Path::new("/b")).unwrap();
        assert!(cp.exit && cp.args.tcp_established && cp.args.shell_job && cp.args.file_locks);
        assert!(!cp.args.ext_unix_sk);
        assert_eq!(cp.args.empty_ns, vec!["network".to_string()]);
        assert!(!cp.own_work_dir(Path::new("/b")));
    }

    #[test]
    fn wrong_option_type_and_empty_path_are_invalid() {
        let mut r = request(None);
        let mut a = Any::new();
        a.type_url = "containerd.runc.v1.Options".into();
        r.options = Some(a).into();
        let e = Checkpoint::from_request(&r, Path::new("/b")).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
        let mut r = request(None);
        r.path.clear();
        let e = Checkpoint::from_request(&r, Path::new("/b")).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{e}");
    }
}
