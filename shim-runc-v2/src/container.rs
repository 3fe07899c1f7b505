//! One container: its bundle, the runtime client configured from the runc
//! Options of the request, the rootfs mounts, the init process and the
//! exec'd processes. Everything that talks to the runtime for a container
//! lives here; events and exit bookkeeping are the task manager's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim_protos::api::CreateTaskRequest;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options;
use serde::{Deserialize, Serialize};

use crate::error::{io_ctx, Error, Result};
use crate::mount::{self, Mount};
use crate::process::{Op, Process, Status};
use crate::runc::{self, CreateOpts, Runc};
use crate::stdio::{self, StdioConfig};

/// The runtime binary used when the runc Options name none.
pub const DEFAULT_RUNTIME: &str = "runc-rs";
/// The runtime's state root when the runc Options give none (as the Go shim).
pub const DEFAULT_ROOT: &str = "/run/containerd/runc";
/// How long a delete waits for a process's output to drain.
const IO_DRAIN: Duration = Duration::from_secs(2);

/// What `delete` (the shim action) needs to find the container again,
/// saved as `<bundle>/options.json`.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SavedOptions {
    #[serde(default)]
    pub binary_name: String,
    #[serde(default)]
    pub root: String,
    #[serde(default)]
    pub systemd_cgroup: bool,
}

impl SavedOptions {
    pub fn load(bundle: &Path) -> SavedOptions {
        std::fs::read(bundle.join("options.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, bundle: &Path) -> Result<()> {
        let data = serde_json::to_vec(self).map_err(|e| Error::Other(e.to_string()))?;
        std::fs::write(bundle.join("options.json"), data).map_err(io_ctx("write options.json"))
    }

    /// The runtime client for a container of namespace `ns` in `bundle`.
    pub fn runc(&self, ns: &str, bundle: &Path) -> Result<Runc> {
        let root = if self.root.is_empty() {
            DEFAULT_ROOT
        } else {
            &self.root
        };
        Ok(Runc {
            binary: resolve_runtime(&self.binary_name)?,
            root: Path::new(root).join(ns),
            log: bundle.join("log.json"),
            systemd_cgroup: self.systemd_cgroup,
        })
    }
}

/// Decode the runc Options of a request (`containerd.runc.v1.Options`);
/// other option types are ignored with a warning.
pub fn parse_options(req: &CreateTaskRequest) -> Result<Options> {
    let Some(any) = req.options.as_ref() else {
        return Ok(Options::new());
    };
    let name = any.type_url.rsplit('/').next().unwrap_or_default();
    match name {
        "containerd.runc.v1.Options" | "containerd.linux.runc.RuncOptions" => {
            Options::parse_from_bytes(&any.value)
                .map_err(|e| Error::InvalidArgument(format!("runc options: {e}")))
        }
        "" => Ok(Options::new()),
        other => {
            log::warn!("ignoring task options of unsupported type {other}");
            Ok(Options::new())
        }
    }
}

/// Find the runtime binary: an absolute or relative path as given, else a
/// name looked up in `$PATH`, then beside the shim's own executable.
pub fn resolve_runtime(name: &str) -> Result<PathBuf> {
    let name = if name.is_empty() {
        DEFAULT_RUNTIME
    } else {
        name
    };
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return if is_exec(&p) {
            Ok(p)
        } else {
            Err(Error::NotFound(format!("runtime binary {name}")))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(name)));
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .chain(beside)
        .find(|p| is_exec(p))
        .ok_or_else(|| {
            Error::NotFound(format!(
                "runtime binary {name:?} (looked in $PATH and beside the shim)"
            ))
        })
}

/// Whether the bundle's spec gives the container no pid namespace of its
/// own (then its processes must be killed when init exits).
fn shares_host_pid_ns(bundle: &Path) -> bool {
    let Ok(data) = std::fs::read(bundle.join("config.json")) else {
        return false;
    };
    let Ok(spec) = serde_json::from_slice::<serde_json::Value>(&data) else {
        return false;
    };
    let nss = spec["linux"]["namespaces"].as_array();
    !nss.is_some_and(|a| {
        a.iter()
            .any(|n| n["type"] == "pid" && n["path"].as_str().unwrap_or("").is_empty())
    })
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    pub runc: Runc,
    pub init: Arc<Process>,
    /// Where the rootfs mounts went, if the request had any.
    rootfs: Option<PathBuf>,
    io_uid: u32,
    io_gid: u32,
    pub kill_all_on_exit: bool,
    execs: Mutex<HashMap<String, Arc<Process>>>,
}

impl Container {
    /// Mount the rootfs, run `create` and start the init's stdio copies.
    pub fn create(ns: &str, req: &CreateTaskRequest) -> Result<Container> {
        let bundle = PathBuf::from(&req.bundle);
        let opts = parse_options(req)?;
        let saved = SavedOptions {
            binary_name: opts.binary_name.clone(),
            root: opts.root.clone(),
            systemd_cgroup: opts.systemd_cgroup,
        };
        let runc = saved.runc(ns, &bundle)?;
        saved.save(&bundle)?;
        let _ = std::fs::write(bundle.join("runtime"), &opts.binary_name);
        let stdio = StdioConfig {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        stdio::validate(&stdio)?;
        if !req.checkpoint.is_empty() {
            return Err(Error::Unimplemented("restore from a checkpoint".into()));
        }
        let mounts: Vec<Mount> = req
            .rootfs
            .iter()
            .map(|m| Mount {
                kind: m.type_.clone(),
                source: m.source.clone(),
                options: m.options.clone(),
            })
            .collect();
        let rootfs = if mounts.is_empty() {
            None
        } else {
            let r = bundle.join("rootfs");
            match std::fs::create_dir(&r) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io("mkdir rootfs", e)),
            }
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&r, std::fs::Permissions::from_mode(0o711));
            mount::mount_all(&mounts, &r)?;
            Some(r)
        };
        let c = Container {
            id: req.id.clone(),
            bundle: bundle.clone(),
            runc,
            init: Arc::new(Process::new(&req.id, "", stdio)),
            rootfs,
            io_uid: opts.io_uid,
            io_gid: opts.io_gid,
            kill_all_on_exit: shares_host_pid_ns(&bundle),
            execs: Mutex::new(HashMap::new()),
        };
        let copts = CreateOpts {
            pid_file: bundle.join("init.pid"),
            console_socket: None,
            no_pivot: opts.no_pivot_root,
            no_new_keyring: opts.no_new_keyring,
        };
        // On failure the runtime cleaned up after itself; deleting by id here
        // could hit another container of that name in the same root.
        if let Err(e) = c.run_process(&c.init, copts, |r, o, io| r.create(&req.id, &bundle, o, io))
        {
            c.cleanup_rootfs();
            return Err(e);
        }
        Ok(c)
    }

    /// Prepare stdio, run the runtime call `f` (create or exec), read the
    /// pid file and start the copies. Sets the process's pid.
    fn run_process(
        &self,
        p: &Process,
        mut o: CreateOpts,
        f: impl FnOnce(&Runc, &CreateOpts, runc::ProcStdio) -> Result<()>,
    ) -> Result<i32> {
        let (prepared, child_io, socket) = stdio::prepare(&p.stdio, self.io_uid, self.io_gid)?;
        o.console_socket = socket;
        let _ = std::fs::remove_file(&o.pid_file);
        f(&self.runc, &o, child_io)?;
        let pid = runc::read_pid_file(&o.pid_file)?;
        let name = if p.is_init() { "init" } else { "exec" };
        let io = prepared.start(&p.stdio, name)?;
        let mut s = p.lock();
        s.pid = pid;
        s.io = Some(io);
        Ok(pid)
    }

    fn cleanup_rootfs(&self) {
        if let Some(r) = &self.rootfs {
            mount::unmount_all(r);
        }
    }

    pub fn exec(&self, exec_id: &str) -> Result<Arc<Process>> {
        self.execs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(exec_id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("process {exec_id} does not exist")))
    }

    /// The init process for `""`, else the exec.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            Ok(Arc::clone(&self.init))
        } else {
            self.exec(exec_id)
        }
    }

    pub fn execs(&self) -> Vec<Arc<Process>> {
        self.execs_lock().values().cloned().collect()
    }

    fn execs_lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Process>>> {
        self.execs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Register an exec (not started yet) with its OCI process spec.
    pub fn add_exec(
        &self,
        exec_id: &str,
        stdio: StdioConfig,
        spec_json: &[u8],
    ) -> Result<Arc<Process>> {
        let st = self.init.snapshot().status;
        if !matches!(st, Status::Created | Status::Running) {
            return Err(Error::FailedPrecondition(format!(
                "cannot exec in a {} container",
                st.name()
            )));
        }
        stdio::validate(&stdio)?;
        let mut spec: serde_json::Value = serde_json::from_slice(spec_json)
            .map_err(|e| Error::InvalidArgument(format!("exec process spec: {e}")))?;
        spec["terminal"] = serde_json::Value::Bool(stdio.terminal);
        let mut execs = self.execs_lock();
        if execs.contains_key(exec_id) {
            return Err(Error::AlreadyExists(format!("exec {exec_id}")));
        }
        let p = Arc::new(Process::new(exec_id, exec_id, stdio));
        p.lock().spec = Some(spec);
        execs.insert(exec_id.to_owned(), Arc::clone(&p));
        Ok(p)
    }

    /// `exec --detach` a registered exec; returns its pid. The caller holds
    /// the process in the starting state.
    pub fn start_exec(&self, p: &Process) -> Result<i32> {
        let spec = p.lock().spec.take().ok_or_else(|| {
            Error::FailedPrecondition(format!("exec {} has no process spec", p.exec_id))
        })?;
        let spec_path = self.bundle.join(format!(".exec-{}.json", p.exec_id));
        let data = serde_json::to_vec(&spec).map_err(|e| Error::Other(e.to_string()))?;
        std::fs::write(&spec_path, data).map_err(io_ctx("write exec process spec"))?;
        let o = CreateOpts {
            pid_file: self.bundle.join(format!("{}.pid", p.exec_id)),
            ..CreateOpts::default()
        };
        let r = self.run_process(p, o, |r, o, io| r.exec(&self.id, &spec_path, o, io));
        let _ = std::fs::remove_file(&spec_path);
        r
    }

    /// Delete the init: wait for its output, `delete` it in the runtime,
    /// close its stdio and unmount the rootfs. The caller holds the process
    /// in the deleting state; `from` is the state it was in.
    pub fn delete_init(&self, from: Status) -> Result<()> {
        drain(&self.init);
        if let Err(e) = self.runc.delete(&self.id, from == Status::Created) {
            if !runc::is_gone(&e) {
                return Err(e);
            }
        }
        for p in self.execs() {
            close_io(&p);
        }
        close_io(&self.init);
        self.cleanup_rootfs();
        Ok(())
    }

    /// Forget a stopped (or never started) exec.
    pub fn delete_exec(&self, p: &Process) {
        drain(p);
        close_io(p);
        let _ = std::fs::remove_file(self.bundle.join(format!("{}.pid", p.exec_id)));
        self.execs_lock().remove(&p.exec_id);
    }

    /// Signal a process: the init through the runtime, an exec directly.
    pub fn kill(&self, p: &Process, signal: u32, all: bool) -> Result<()> {
        let snap = p.snapshot();
        match snap.status {
            Status::Deleted | Status::Stopped => {
                return Err(Error::NotFound(format!(
                    "process {} already finished",
                    p.id
                )))
            }
            Status::Created if !p.is_init() => {
                return Err(Error::FailedPrecondition(format!(
                    "exec {} not started",
                    p.id
                )))
            }
            _ => {}
        }
        if p.is_init() {
            return self
                .runc
                .kill(&self.id, signal, all)
                .map_err(runc::kill_error);
        }
        let sig = nix::sys::signal::Signal::try_from(signal as i32)
            .map_err(|_| Error::InvalidArgument(format!("signal {signal}")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(snap.pid), sig).map_err(|e| {
            if e == nix::errno::Errno::ESRCH {
                Error::NotFound(format!("process {} already finished", p.id))
            } else {
                Error::sys("kill", e)
            }
        })
    }

    /// Pause or resume (`op` is `Pausing` or `Resuming`).
    pub fn pause_resume(&self, op: Op) -> Result<()> {
        self.init.begin(op)?;
        let (r, to) = if op == Op::Pausing {
            (self.runc.pause(&self.id), Status::Paused)
        } else {
            (self.runc.resume(&self.id), Status::Running)
        };
        self.init.end(r.is_ok().then_some(to));
        r
    }
}

/// Wait (bounded) for a process's output copies to finish.
fn drain(p: &Process) {
    let copiers = p
        .lock()
        .io
        .as_mut()
        .map(|io| io.take_copiers())
        .unwrap_or_default();
    if !copiers.is_empty() {
        let left = stdio::wait_copiers(copiers, IO_DRAIN);
        if !left.is_empty() {
            log::warn!(
                "{}: {} stdio copies still running after {IO_DRAIN:?}",
                p.id,
                left.len()
            );
        }
    }
}

fn close_io(p: &Process) {
    if let Some(io) = p.lock().io.as_mut() {
        io.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_options_roundtrip() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(SavedOptions::load(d.path()), SavedOptions::default());
        let o = SavedOptions {
            binary_name: "/usr/sbin/runc".into(),
            root: "/r".into(),
            systemd_cgroup: false,
        };
        o.save(d.path()).unwrap();
        assert_eq!(SavedOptions::load(d.path()), o);
        let r = o.runc("ns1", d.path()).unwrap();
        assert_eq!(r.root, Path::new("/r/ns1"));
        assert_eq!(r.log, d.path().join("log.json"));
    }

    #[test]
    fn runtime_lookup() {
        assert_eq!(
            resolve_runtime("/bin/sh").unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert!(resolve_runtime("sh").unwrap().ends_with("sh"));
        assert!(matches!(
            resolve_runtime("/nonexistent/runc"),
            Err(Error::NotFound(_))
        ));
        assert!(matches!(
            resolve_runtime("no-such-runtime-xyz"),
            Err(Error::NotFound(_))
        ));
    }

    #[test]
    fn options_from_request() {
        let mut req = CreateTaskRequest::new();
        assert_eq!(parse_options(&req).unwrap(), Options::new());
        let mut o = Options::new();
        o.binary_name = "crun".into();
        o.root = "/x".into();
        let mut any = containerd_shim_protos::protobuf::well_known_types::any::Any::new();
        any.type_url = "containerd.runc.v1.Options".into();
        any.value = o.write_to_bytes().unwrap();
        req.options = containerd_shim_protos::protobuf::MessageField::some(any);
        assert_eq!(parse_options(&req).unwrap(), o);
    }

    #[test]
    fn pid_namespace_detection() {
        let d = tempfile::tempdir().unwrap();
        let w = |s: &str| std::fs::write(d.path().join("config.json"), s).unwrap();
        w(r#"{"linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]}}"#);
        assert!(!shares_host_pid_ns(d.path()));
        w(r#"{"linux":{"namespaces":[{"type":"mount"}]}}"#);
        assert!(shares_host_pid_ns(d.path()));
        w(r#"{"linux":{"namespaces":[{"type":"pid","path":"/proc/1/ns/pid"}]}}"#);
        assert!(shares_host_pid_ns(d.path()));
    }
}
