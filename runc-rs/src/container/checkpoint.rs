//! `checkpoint`: dump a running container with criu (a DUMP request, or a
//! PRE_DUMP with `--pre-dump`, over criu's RPC), then, unless it is to keep
//! running, remove it as runc does.

use std::path::{Path, PathBuf};

use super::criu::{self, CriuOpts};
use super::criu_rpc::{self, Pb};
use super::{load, ContainerError};
use crate::state::{ContainerState, Status};

#[derive(Debug, Clone, Default)]
pub struct CheckpointOpts {
    pub id: String,
    pub criu: CriuOpts,
    pub leave_running: bool,
    pub pre_dump: bool,
    /// A previous (pre-)dump, relative to the image path.
    pub parent_path: Option<String>,
    /// ADDRESS:PORT of a criu page server.
    pub page_server: Option<String>,
}

fn bad(msg: impl Into<String>) -> ContainerError {
    ContainerError::Precondition(msg.into())
}

/// runc records the init's stdio in the image so that `restore` can hand
/// pipes back to it (criu's --inherit-fd).
pub const DESCRIPTORS: &str = "descriptors.json";

pub fn checkpoint(root: &Path, o: &CheckpointOpts) -> Result<(), ContainerError> {
    let st = load(root, &o.id)?;
    if let s @ (Status::Created | Status::Stopped | Status::Creating) = st.status(root) {
        return Err(bad(format!(
            "Container cannot be checkpointed in {s} state"
        )));
    }
    criu::check_version(&o.criu.criu)?;
    let images = o.criu.images()?;
    let parent = parent_path(&images, o.parent_path.as_deref())?;
    let log = if o.pre_dump {
        "pre-dump.log"
    } else {
        "dump.log"
    };
    let (mut opts, _dirs) = o.criu.rpc_opts(&images, log, &st.rootfs, &st.annotations)?;
    opts.int(2, st.pid);
    if o.leave_running {
        opts.flag(3, true);
    }
    if let Some(p) = parent {
        opts.string(14, &p).flag(15, true);
    }
    if let Some(dir) = freezer_dir(&st) {
        opts.string(44, &dir.display().to_string());
    }
    if let Some(ps) = o.page_server.as_deref().filter(|p| !p.is_empty()) {
        let (addr, port) = ps
            .rsplit_once(':')
            .filter(|(a, p)| !a.is_empty() && !p.is_empty())
            .ok_or_else(|| bad("Use --page-server ADDRESS:PORT to specify page server"))?;
        let port: u16 = port.parse().map_err(|_| bad("Invalid port number"))?;
        let mut server = Pb::default();
        server.string(1, addr).int(2, port as i32);
        opts.message(11, &server);
    }
    if !o.pre_dump {
        for (key, val) in external_mounts(&st)? {
            opts.pair(23, &key, &val);
        }
        let fds: Vec<String> = (0..3)
            .map(|fd| {
                std::fs::read_link(format!("/proc/{}/fd/{fd}", st.pid))
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            })
            .collect();
        let path = images.join(DESCRIPTORS);
        std::fs::write(&path, serde_json::to_vec(&fds).expect("strings serialize"))
            .map_err(super::io_err(format!("write {}", path.display())))?;
    }
    let typ = if o.pre_dump {
        criu_rpc::PRE_DUMP
    } else {
        criu_rpc::DUMP
    };
    criu_rpc::call(
        &o.criu.criu,
        typ,
        &opts,
        None,
        &mut |_| Ok(()),
        &o.criu.log_path(&images, log),
    )?;
    if !(o.leave_running || o.pre_dump) {
        // The processes are gone (criu killed them after the dump): remove
        // what is left, poststop hooks included.
        super::delete::delete(root, &o.id, true)?;
    }
    Ok(())
}

/// runc's --parent-path rules: relative to the image path, an existing dir.
fn parent_path(images: &Path, parent: Option<&str>) -> Result<Option<String>, ContainerError> {
    let Some(p) = parent.filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    if Path::new(p).is_absolute() {
        return Err(bad("--parent-path must be relative"));
    }
    let real = images.join(p);
    match std::fs::metadata(&real) {
        Ok(md) if md.is_dir() => Ok(Some(p.to_owned())),
        Ok(_) => Err(bad(format!(
            "invalid --parent-path: {}: not a directory",
            real.display()
        ))),
        Err(e) => Err(bad(format!(
            "invalid --parent-path: stat {}: {e}",
            real.display()
        ))),
    }
}

/// criu freezes the container through its cgroup rather than ptrace.
fn freezer_dir(st: &ContainerState) -> Option<PathBuf> {
    let paths = st.cgroup.as_ref()?.paths();
    paths
        .get("freezer")
        .or_else(|| paths.get("unified"))
        .cloned()
}

/// The mounts criu must treat as external (mount point, name), as runc
/// names them: bind mounts (by their destination), masked files (bound
/// from /dev/null) and device nodes (bind-mounted in a user namespace).
fn external_mounts(st: &ContainerState) -> Result<Vec<(String, String)>, ContainerError> {
    let spec = st
        .config
        .as_ref()
        .ok_or_else(|| bad("the container's state has no spec"))?;
    let mut out = vec![];
    let mut ext = |key: &Path, val: &str| out.push((key.display().to_string(), val.to_owned()));
    for m in spec.mounts().iter().flatten().filter(|m| is_bind(m)) {
        ext(m.destination(), &m.destination().display().to_string());
    }
    let linux = spec.linux().as_ref();
    for p in linux
        .and_then(|l| l.masked_paths().as_ref())
        .into_iter()
        .flatten()
    {
        let inside = format!("/proc/{}/root{p}", st.pid);
        if std::fs::metadata(&inside).is_ok_and(|md| !md.is_dir()) {
            ext(Path::new(p), "/dev/null");
        }
    }
    for path in device_paths(spec) {
        ext(&path, &path.display().to_string());
    }
    Ok(out)
}

pub(super) fn is_bind(m: &oci_spec::runtime::Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind")
}

/// The default device nodes and the spec's devices.
pub(super) fn device_paths(spec: &oci_spec::runtime::Spec) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = crate::rootfs::devices::default_nodes()
        .into_iter()
        .map(|n| n.path)
        .collect();
    for d in spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_ref())
        .into_iter()
        .flatten()
    {
        if !v.contains(d.path()) {
            v.push(d.path().clone());
        }
    }
    v
}
