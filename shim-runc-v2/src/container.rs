//! One container: its bundle, the runtime client configured from the runc
//! Options of the request, the rootfs mounts, the init process and the
//! exec'd processes. Everything that talks to the runtime for a container
//! lives here; events and exit bookkeeping are the task manager's.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use containerd_shim_protos::api::CreateTaskRequest;

use crate::background::Latch;
use crate::checkpoint::PendingRestore;
use crate::early_delete::EarlyDelete;
use crate::error::{io_ctx, Error, Result};
use crate::metrics;
use crate::mount::{self, Mount};
use crate::options::RuncOptions;
use crate::process::{Op, Process, Status};
use crate::runc::{self, CreateOpts, Runc};
use crate::stdio::{self, Owner, StdioConfig};

/// How long a delete waits for a process's output to drain.
const IO_DRAIN: Duration = Duration::from_secs(2);
/// How long Delete waits for an early delete in flight (a runtime command,
/// which has its own timeout).
pub const EARLY_DELETE_WAIT: Duration = Duration::from_secs(60);

/// What the shim needs to know of the bundle's spec.
#[derive(Debug, Default, PartialEq)]
struct SpecFacts {
    /// No pid namespace of its own: its processes must be killed when
    /// init exits.
    shares_host_pid_ns: bool,
    /// Hooks that run at the runtime's delete.
    poststop_hooks: bool,
}

fn spec_facts(bundle: &Path) -> SpecFacts {
    // Only what is needed here is kept (and allocated) from the spec.
    #[derive(serde::Deserialize)]
    struct Spec {
        linux: Option<Linux>,
        hooks: Option<Hooks>,
    }
    #[derive(serde::Deserialize)]
    struct Linux {
        namespaces: Option<Vec<Namespace>>,
    }
    #[derive(serde::Deserialize)]
    struct Namespace {
        #[serde(rename = "type")]
        kind: String,
        path: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Hooks {
        poststop: Option<Vec<serde::de::IgnoredAny>>,
    }
    let Ok(data) = std::fs::read(bundle.join("config.json")) else {
        return SpecFacts::default();
    };
    let Ok(spec) = serde_json::from_slice::<Spec>(&data) else {
        return SpecFacts::default();
    };
    let nss = spec.linux.and_then(|l| l.namespaces).unwrap_or_default();
    SpecFacts {
        shares_host_pid_ns: !nss
            .iter()
            .any(|n| n.kind == "pid" && n.path.as_deref().unwrap_or("").is_empty()),
        poststop_hooks: spec
            .hooks
            .and_then(|h| h.poststop)
            .is_some_and(|p| !p.is_empty()),
    }
}

pub struct Container {
    pub id: String,
    pub namespace: String,
    pub bundle: PathBuf,
    pub runc: Runc,
    pub init: Arc<Process>,
    /// Where the rootfs mounts went, if the request had any.
    rootfs: Option<PathBuf>,
    io_uid: u32,
    io_gid: u32,
    pub kill_all_on_exit: bool,
    /// Whether the runtime may delete it as soon as its init exited (see
    /// [`crate::early_delete`]).
    pub may_delete_early: bool,
    /// That delete, once started.
    early_delete: Mutex<Option<Arc<EarlyDelete>>>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    /// The container's cgroup (found once its init exists), for Stats.
    cgroup: Mutex<Option<cgroups::Manager>>,
    /// Set by a Create from a checkpoint until Start restores it.
    restore: Mutex<Option<PendingRestore>>,
    /// Open once the cgroup was looked for and, if found, watched for OOM
    /// (after Create's reply); Start waits for it, so no OOM goes unseen.
    pub oom_watched: Latch,
}

impl Container {
    /// Mount the rootfs, run `create` and start the init's stdio copies.
    pub fn create(ns: &str, req: &CreateTaskRequest) -> Result<Container> {
        let bundle = PathBuf::from(&req.bundle);
        if req.bundle.is_empty() || !bundle.is_dir() {
            return Err(Error::NotFound(format!(
                "bundle {:?} does not exist",
                req.bundle
            )));
        }
        if !bundle.join("config.json").is_file() {
            return Err(Error::NotFound(format!(
                "bundle {}: no config.json",
                bundle.display()
            )));
        }
        let opts = RuncOptions::from_any(req.options.as_ref())?;
        let runc = opts.runc(ns, &bundle)?;
        let stdio = StdioConfig {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        stdio::validate(&stdio)?;
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
            mount::mount_all(&mounts, &r).map_err(|e| match e {
                Error::Io { context, source } => {
                    Error::InvalidArgument(format!("rootfs: {context}: {source}"))
                }
                e => e,
            })?;
            Some(r)
        };
        let facts = spec_facts(&bundle);
        let c = Container {
            id: req.id.clone(),
            namespace: ns.to_owned(),
            bundle: bundle.clone(),
            runc,
            init: Arc::new(Process::new(&req.id, "", stdio)),
            rootfs,
            io_uid: opts.io_uid,
            io_gid: opts.io_gid,
            kill_all_on_exit: facts.shares_host_pid_ns,
            may_delete_early: !facts.poststop_hooks,
            early_delete: Mutex::new(None),
            execs: Mutex::new(HashMap::new()),
            cgroup: Mutex::new(None),
            restore: Mutex::new(None),
            oom_watched: Latch::default(),
        };
        if !req.checkpoint.is_empty() {
            if let Err(e) = save_options(&opts, &bundle) {
                c.cleanup_rootfs();
                return Err(e);
            }
            // The runtime restores at Start (the Go shim's order).
            *c.restore_lock() = Some(PendingRestore::new(
                &req.checkpoint,
                &req.parent_checkpoint,
                &opts.criu_work_path,
                opts.no_pivot_root,
            ));
            return Ok(c);
        }
        let copts = CreateOpts {
            pid_file: bundle.join("init.pid"),
            console_socket: None,
            no_pivot: opts.no_pivot_root,
            no_new_keyring: opts.no_new_keyring,
        };
        // On failure the runtime cleaned up after itself; deleting by id here
        // could hit another container of that name in the same root.
        // The options, for a `delete` after the shim is gone, are written
        // while the runtime creates (a file's creation costs a few hundred
        // microseconds on a busy ext4); the runtime does not read them.
        if let Err(e) = c.run_process(&c.init, copts, |r, o, io, start_copies| {
            r.create(&req.id, &bundle, o, io, || {
                start_copies()?;
                save_options(&opts, &bundle)
            })
        }) {
            c.cleanup_rootfs();
            return Err(e);
        }
        Ok(c)
    }

    fn restore_lock(&self) -> MutexGuard<'_, Option<PendingRestore>> {
        self.restore.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The restore a checkpointed Create left for Start, if any.
    pub fn pending_restore(&self) -> Option<PendingRestore> {
        self.restore_lock().clone()
    }

    /// The restore happened: the container is like any created one now.
    pub fn restored(&self) {
        *self.restore_lock() = None;
    }

    fn cgroup_lock(&self) -> MutexGuard<'_, Option<cgroups::Manager>> {
        self.cgroup.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The container's cgroup, found after create (or now, if not yet).
    pub fn cgroup(&self) -> Result<cgroups::Manager> {
        let mut cg = self.cgroup_lock();
        if cg.is_none() {
            *cg = Some(metrics::container_cgroup(
                self.init.pid(),
                &self.bundle,
                &self.id,
            )?);
        }
        Ok(cg.clone().expect("set above"))
    }

    /// Prepare stdio, run the runtime call `f` (create or exec) and start
    /// the copies, read the pid file. Sets the process's pid. `f` gets a
    /// `start_copies` to call while the runtime runs (its `meanwhile`), or
    /// before it if it has no such moment.
    pub(crate) fn run_process(
        &self,
        p: &Process,
        mut o: CreateOpts,
        f: impl FnOnce(
            &Runc,
            &CreateOpts,
            runc::ProcStdio,
            &mut dyn FnMut() -> Result<()>,
        ) -> Result<()>,
    ) -> Result<i32> {
        let owner = Owner {
            id: &p.id,
            namespace: &self.namespace,
        };
        let (prepared, child_io, socket) =
            stdio::prepare(&p.stdio, self.io_uid, self.io_gid, owner)?;
        let name = if p.is_init() { "init" } else { "exec" };
        // Pipes are copied from while the runtime runs: setting the copies
        // up (threads, opening the destinations) overlaps with the runtime
        // instead of delaying it or the reply. A console's master only
        // exists once the runtime created the process. (On failure the
        // copies drop, and with them their cancel pipe.)
        let console = socket.is_some();
        let mut prepared = Some(prepared);
        let mut started = None;
        let mut start_copies = || -> Result<()> {
            // (With a console, `prepared` holds its socket: left alone.)
            if !console {
                if let Some(pr) = prepared.take() {
                    started = Some(pr.start(&p.stdio, name)?);
                }
            }
            Ok(())
        };
        o.console_socket = socket;
        let _ = std::fs::remove_file(&o.pid_file);
        f(&self.runc, &o, child_io, &mut start_copies)?;
        let pid = runc::read_pid_file(&o.pid_file)?;
        let mut io = match started {
            Some(io) => io,
            // A console's copies; `prepared` is gone only if `f` dropped
            // `start_copies`' error.
            None => prepared
                .ok_or_else(|| Error::Other(format!("{}: stdio copies not started", p.id)))?
                .start(&p.stdio, name)?,
        };
        let mut s = p.lock();
        if s.stdin_closed {
            io.close_stdin();
        }
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
        let r = self.run_process(p, o, |r, o, io, start_copies| {
            start_copies()?;
            r.exec(&self.id, &spec_path, o, io)
        });
        let _ = std::fs::remove_file(&spec_path);
        r
    }

    /// Delete the init: wait for its output, `delete` it in the runtime,
    /// close its stdio and detach the rootfs, whose release is the caller's
    /// (see [`mount::detach_all`]). The caller holds the process in the
    /// deleting state; `from` is the state it was in.
    pub fn delete_init(&self, from: Status) -> Result<mount::Detached> {
        drain(&self.init);
        let done_early = self
            .early_delete()
            .is_some_and(|ed| ed.deleted(EARLY_DELETE_WAIT));
        if !done_early {
            if let Err(e) = self.runc.delete(&self.id, from == Status::Created) {
                if !runc::is_gone(&e) {
                    return Err(e);
                }
            }
        }
        for p in self.execs() {
            close_io(&p);
        }
        close_io(&self.init);
        Ok(self
            .rootfs
            .as_deref()
            .map(mount::detach_all)
            .unwrap_or_default())
    }

    /// Have the runtime delete the container now that its init's exit is
    /// published, if it may (once). Not while a runtime command on the init
    /// (a checkpoint that stops it, say) may still be using its state.
    pub fn delete_early(self: &Arc<Self>, oom: &Arc<crate::oom::OomMonitor>) {
        if !self.may_delete_early || self.init.lock().busy.is_some() {
            return;
        }
        let mut slot = self.early_delete.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            *slot = Some(EarlyDelete::start(self, oom));
        }
    }

    /// The early delete, if one started.
    pub fn early_delete(&self) -> Option<Arc<EarlyDelete>> {
        self.early_delete
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
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

/// What the `delete` action needs to find the container without the shim:
/// `options.json`, and `runtime` (the binary, as the Go shim's `delete`
/// reads it, should that one be installed later).
fn save_options(opts: &RuncOptions, bundle: &Path) -> Result<()> {
    opts.save(bundle)?;
    let _ = std::fs::write(bundle.join("runtime"), &opts.binary_name);
    Ok(())
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
    fn spec_facts_pid_namespace_and_poststop_hooks() {
        let d = tempfile::tempdir().unwrap();
        let facts = |s: &str| {
            std::fs::write(d.path().join("config.json"), s).unwrap();
            spec_facts(d.path())
        };
        let f = facts(r#"{"linux":{"namespaces":[{"type":"pid"},{"type":"mount"}]}}"#);
        assert_eq!(f, SpecFacts::default());
        assert!(facts(r#"{"linux":{"namespaces":[{"type":"mount"}]}}"#).shares_host_pid_ns);
        let f = facts(r#"{"linux":{"namespaces":[{"type":"pid","path":"/proc/1/ns/pid"}]}}"#);
        assert!(f.shares_host_pid_ns);
        let f = facts(
            r#"{"hooks":{"poststop":[{"path":"/bin/true"}]},"linux":{"namespaces":[{"type":"pid"}]}}"#,
        );
        assert_eq!(
            f,
            SpecFacts {
                shares_host_pid_ns: false,
                poststop_hooks: true
            }
        );
        assert!(!facts(r#"{"hooks":{"poststop":[],"prestart":[{"path":"/x"}]}}"#).poststop_hooks);
    }
}
