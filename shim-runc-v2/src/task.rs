//! The task manager: the containers this shim holds, the bookkeeping that
//! ties reaped pids to processes, and the events each operation publishes.
//!
//! Locks are short: the container table, a process's state, the lifecycle
//! table. None is held while the runtime runs. The ordering rules of exits
//! (an init's TaskExit after its execs') live in [`crate::lifecycle`].

use std::collections::HashMap;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use containerd_shim_protos::api::{self, CreateTaskRequest, ExecProcessRequest};
use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::ProcessDetails;

use crate::background::Background;
use crate::container::Container;
use crate::error::{Error, Result};
use crate::events::{timestamp, Publisher};
use crate::lifecycle::Lifecycle;
use crate::metrics;
use crate::oom::OomMonitor;
use crate::process::{Op, Process, Status};
use crate::reaper::Exit;
use crate::stdio::StdioConfig;

type Entry = (Arc<Container>, Arc<Process>);

/// How long an exit waits for the process's output to be copied (children
/// that outlive it may hold the pipes open).
const EXIT_OUTPUT_WAIT: Duration = Duration::from_secs(1);
/// How long Start waits for Create's OOM watch to be in place.
const OOM_WATCH_WAIT: Duration = Duration::from_secs(5);

pub struct Task {
    namespace: String,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    lifecycle: Mutex<Lifecycle<Entry>>,
    events: Arc<Publisher>,
    oom: Arc<OomMonitor>,
    /// What RPCs leave for after their reply.
    background: Background,
    on_shutdown: Box<dyn Fn() + Send + Sync>,
}

fn ts(
    t: Option<SystemTime>,
) -> MessageField<containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp> {
    t.map(|t| MessageField::some(timestamp(t)))
        .unwrap_or_default()
}

impl Task {
    pub fn new(
        namespace: String,
        events: Publisher,
        on_shutdown: Box<dyn Fn() + Send + Sync>,
    ) -> Task {
        let events = Arc::new(events);
        let ev = Arc::clone(&events);
        let oom = Arc::new(OomMonitor::new(Box::new(move |id: &str| {
            ev.publish(&ev::TaskOOM {
                container_id: id.to_owned(),
                ..Default::default()
            })
        })));
        Task {
            namespace,
            containers: Mutex::new(HashMap::new()),
            lifecycle: Mutex::new(Lifecycle::default()),
            events,
            oom,
            background: Background::new(),
            on_shutdown,
        }
    }

    /// Start the threads that forward events and run background work;
    /// until then both queue.
    pub fn start_workers(&self) {
        self.events.start();
        self.background.start_thread();
    }

    /// Let queued background work (rootfs releases) finish, up to `timeout`.
    pub fn finish_background(&self, timeout: Duration) {
        self.background.finish(timeout);
    }

    pub fn events(&self) -> &Publisher {
        &self.events
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn life(&self) -> MutexGuard<'_, Lifecycle<Entry>> {
        self.lifecycle.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.table()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(format!("container {id} not created")))
    }

    fn process(&self, id: &str, exec_id: &str) -> Result<(Arc<Container>, Arc<Process>)> {
        let c = self.container(id)?;
        let p = c.process(exec_id)?;
        Ok((c, p))
    }

    /// Handle exits from the reaper until the channel closes.
    pub fn run_exits(&self, rx: Receiver<Exit>) {
        for e in rx {
            self.reaped(e);
        }
    }

    /// A child was reaped: handle the exit of the process it is.
    fn reaped(&self, e: Exit) {
        let entry = self.life().reaped(e);
        if let Some((c, p)) = entry {
            self.process_exited(&c, &p, e);
        }
    }

    /// Tie `pid` to `p`; if it already exited, handle that now.
    fn register(&self, c: &Arc<Container>, p: &Arc<Process>, pid: i32) {
        let early = self.life().register(pid, (Arc::clone(c), Arc::clone(p)));
        if let Some(e) = early {
            self.process_exited(c, p, e);
        }
    }

    /// A process exited. An init's exit waits for the container's running
    /// execs; an exec's exit may release it.
    fn process_exited(&self, c: &Arc<Container>, p: &Arc<Process>, e: Exit) {
        if p.is_init() {
            // Without a pid namespace of its own, the container's other
            // processes do not die with its init: kill them (their exits
            // then release the init's).
            if c.kill_all_on_exit && p.lock().busy != Some(Op::Starting) {
                if let Err(err) = c.runc.kill(&c.id, libc::SIGKILL as u32, true) {
                    log::debug!("{}: kill --all after init exit: {err}", c.id);
                }
            }
            let now = self
                .life()
                .init_exited(&c.id, (Arc::clone(c), Arc::clone(p)), e);
            match now {
                Some(_) => {
                    self.publish_exit(c, p, e);
                }
                None => log::debug!("{}: init exited; waiting for its execs", c.id),
            }
            return;
        }
        if self.publish_exit(c, p, e) {
            let held = self.life().exec_done(&c.id);
            if let Some(((c, p), e)) = held {
                self.publish_exit(&c, &p, e);
            }
        }
    }

    /// Record the exit in the process; publish TaskExit when that changed
    /// its state (false: held for its starter, or already stopped).
    fn publish_exit(&self, c: &Arc<Container>, p: &Process, e: Exit) -> bool {
        // What the process wrote reaches its destination before its exit is
        // told: clients (ctr 1.6) close their FIFOs on the exit.
        let output = p.lock().io.as_ref().map(|io| io.output_done());
        if let Some(done) = output {
            if !done.wait(EXIT_OUTPUT_WAIT) {
                log::debug!("{}: {} output still open after its exit", c.id, p.id);
            }
        }
        if p.exited(e.status) {
            let s = p.snapshot();
            log::debug!(
                "{}: process {} (pid {}) exited {}",
                c.id,
                p.id,
                e.pid,
                e.status
            );
            self.events.publish(&ev::TaskExit {
                container_id: c.id.clone(),
                id: p.id.clone(),
                pid: e.pid as u32,
                exit_status: s.exit_status,
                exited_at: ts(s.exited_at),
                ..Default::default()
            });
            if p.is_init() {
                c.delete_early(&self.oom);
            }
            return true;
        }
        false
    }

    pub fn create(&self, req: &CreateTaskRequest) -> Result<u32> {
        if self.table().contains_key(&req.id) {
            return Err(Error::AlreadyExists(format!("container {}", req.id)));
        }
        let c = Arc::new(Container::create(&self.namespace, req)?);
        let pid = c.init.pid();
        {
            let mut t = self.table();
            if t.contains_key(&req.id) {
                drop(t);
                let _ = c.runc.delete(&c.id, true);
                return Err(Error::AlreadyExists(format!("container {}", req.id)));
            }
            t.insert(req.id.clone(), Arc::clone(&c));
        }
        self.events.publish(&ev::TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(ev::TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            }),
            checkpoint: req.checkpoint.clone(),
            pid: pid as u32,
            ..Default::default()
        });
        if c.pending_restore().is_none() {
            self.register(&c, &c.init, pid);
            // Finding the cgroup reads /proc: after the reply, before Start,
            // on this thread (running already: handed to another, the work
            // waited for that thread to get a CPU, and Start with it).
            let (c, oom) = (Arc::clone(&c), Arc::clone(&self.oom));
            crate::rpc::after_reply(move || watch_oom(&oom, &c));
        }
        Ok(pid as u32)
    }

    /// Start the init: `start`, or `restore` after a checkpointed Create.
    fn start_init(&self, c: &Arc<Container>) -> Result<i32> {
        let Some(r) = c.pending_restore() else {
            if !c.oom_watched.wait(OOM_WATCH_WAIT) {
                log::warn!("{}: starting before its OOM watch is in place", c.id);
            }
            return c.runc.start(&c.id).map(|()| c.init.pid());
        };
        let pid = c.restore_init(&r)?;
        c.restored();
        self.register(c, &c.init, pid);
        watch_oom(&self.oom, c);
        Ok(pid)
    }

    /// Checkpoint the container's init; TaskCheckpointed on success.
    pub fn checkpoint(&self, req: &api::CheckpointTaskRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        let cp = crate::checkpoint::Checkpoint::from_request(req, &c.bundle)?;
        c.checkpoint(&cp)?;
        self.events.publish(&ev::TaskCheckpointed {
            container_id: req.id.clone(),
            checkpoint: req.path.clone(),
            ..Default::default()
        });
        Ok(())
    }

    pub fn start(self: &Arc<Self>, id: &str, exec_id: &str) -> Result<u32> {
        let (c, p) = self.process(id, exec_id)?;
        p.begin(Op::Starting)?;
        if !p.is_init() {
            if let Err(e) = self.life().exec_starting(id) {
                p.end(None);
                return Err(e);
            }
        }
        let r = if p.is_init() {
            self.start_init(&c)
        } else {
            c.start_exec(&p).inspect(|&pid| self.register(&c, &p, pid))
        };
        let pending = match &r {
            Ok(pid) => {
                if p.is_init() {
                    self.events.publish(&ev::TaskStart {
                        container_id: id.to_owned(),
                        pid: *pid as u32,
                        ..Default::default()
                    });
                } else {
                    self.events.publish(&ev::TaskExecStarted {
                        container_id: id.to_owned(),
                        exec_id: exec_id.to_owned(),
                        pid: *pid as u32,
                        ..Default::default()
                    });
                }
                p.end(Some(Status::Running))
            }
            Err(_) => p.end(None),
        };
        if let Some(status) = pending {
            // It exited while starting: told once Start has replied (its
            // output drains meanwhile), after TaskStart.
            let (me, c, p) = (Arc::clone(self), Arc::clone(&c), Arc::clone(&p));
            crate::rpc::after_reply(move || {
                let e = Exit {
                    pid: p.pid(),
                    status,
                };
                me.process_exited(&c, &p, e);
            });
        } else if r.is_err() && !p.is_init() {
            // The exec never ran: it no longer holds back the init's exit.
            let held = self.life().exec_done(id);
            if let Some(((c, p), e)) = held {
                self.publish_exit(&c, &p, e);
            }
        }
        r.map(|pid| pid as u32)
    }

    /// Delete a process; the init deletes the container.
    pub fn delete(&self, id: &str, exec_id: &str) -> Result<api::DeleteResponse> {
        let (c, p) = self.process(id, exec_id)?;
        let from = p.begin(Op::Deleting)?;
        let r = if p.is_init() {
            c.delete_init(from)
        } else {
            c.delete_exec(&p);
            Ok(Default::default())
        };
        let rootfs = match r {
            Ok(rootfs) => rootfs,
            Err(e) => {
                p.end(None);
                return Err(e);
            }
        };
        // The rootfs is out of the tree; the filesystem's teardown (an
        // overlay syncs its upper filesystem) need not delay the reply.
        if !rootfs.is_empty() {
            self.background.run(move || drop(rootfs));
        }
        p.end(Some(Status::Deleted));
        let s = p.snapshot();
        {
            let mut l = self.life();
            l.unregister(|(_, q)| Arc::ptr_eq(q, &p));
            if p.is_init() {
                l.forget(id);
            }
        }
        if p.is_init() {
            // Queued: after the watch Create queued, if that has not run yet.
            let (oom, cid) = (Arc::clone(&self.oom), id.to_owned());
            self.background.run(move || oom.remove(&cid));
            self.table().remove(id);
            self.events.publish(&ev::TaskDelete {
                container_id: id.to_owned(),
                pid: s.pid as u32,
                exit_status: s.exit_status,
                exited_at: ts(s.exited_at),
                ..Default::default()
            });
        }
        Ok(api::DeleteResponse {
            pid: s.pid as u32,
            exit_status: s.exit_status,
            exited_at: ts(s.exited_at),
            ..Default::default()
        })
    }

    pub fn exec(&self, req: &ExecProcessRequest) -> Result<()> {
        let c = self.container(&req.id)?;
        let stdio = StdioConfig {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let spec = req
            .spec
            .as_ref()
            .map(|a| a.value.as_slice())
            .unwrap_or_default();
        c.add_exec(&req.exec_id, stdio, spec)?;
        self.events.publish(&ev::TaskExecAdded {
            container_id: req.id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        });
        Ok(())
    }

    pub fn state(&self, id: &str, exec_id: &str) -> Result<api::StateResponse> {
        let (c, p) = self.process(id, exec_id)?;
        let s = p.snapshot();
        let status = match (s.status, s.busy) {
            (Status::Running, Some(Op::Pausing)) => api::Status::PAUSING,
            (Status::Created, _) => api::Status::CREATED,
            (Status::Running, _) => api::Status::RUNNING,
            (Status::Paused, _) => api::Status::PAUSED,
            (Status::Stopped, _) | (Status::Deleted, _) => api::Status::STOPPED,
        };
        Ok(api::StateResponse {
            id: p.id.clone(),
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: s.pid as u32,
            status: status.into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: s.exit_status,
            exited_at: ts(s.exited_at),
            exec_id: p.exec_id.clone(),
            ..Default::default()
        })
    }

    pub fn kill(&self, id: &str, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let (c, p) = self.process(id, exec_id)?;
        c.kill(&p, signal, all)
    }

    pub fn pids(&self, id: &str) -> Result<Vec<api::ProcessInfo>> {
        let c = self.container(id)?;
        if c.early_delete().is_some() {
            // Stopped, and the runtime no longer knows it.
            return Ok(Vec::new());
        }
        let pids = match c.runc.ps(id) {
            Ok(pids) => pids,
            // A runtime without `ps` (runc-rs, so far): the cgroup lists
            // the same host pids.
            Err(e) => match c.cgroup().ok().and_then(|cg| cg.pids().ok()) {
                Some(pids) => {
                    log::debug!("{id}: runtime ps failed ({e}); pids from the cgroup");
                    pids.into_iter().map(|p| p as u32).collect()
                }
                None => return Err(e),
            },
        };
        let execs = c.execs();
        Ok(pids
            .into_iter()
            .map(|pid| {
                let mut info = api::ProcessInfo {
                    pid,
                    ..Default::default()
                };
                if let Some(e) = execs.iter().find(|e| e.pid() as u32 == pid) {
                    let d = ProcessDetails {
                        exec_id: e.exec_id.clone(),
                        ..Default::default()
                    };
                    let mut a = Any::new();
                    a.type_url = "containerd.runc.v1.ProcessDetails".into();
                    a.value = d.write_to_bytes().unwrap_or_default();
                    info.info = MessageField::some(a);
                }
                info
            })
            .collect())
    }

    /// Block until the process exits.
    pub fn wait(&self, id: &str, exec_id: &str) -> Result<(u32, Option<SystemTime>)> {
        let (_, p) = self.process(id, exec_id)?;
        // The first Wait takes the exit: the kernel wakes this thread at
        // the exit, which it handles and answers itself.
        if let Some(claim) = p.claim_exit() {
            let exit = claim.wait();
            p.lock().exit_claimed = false;
            if let Some(e) = exit {
                self.reaped(e);
            }
        }
        Ok(p.wait())
    }

    pub fn close_io(&self, id: &str, exec_id: &str, stdin: bool) -> Result<()> {
        let (_, p) = self.process(id, exec_id)?;
        if stdin {
            let mut s = p.lock();
            s.stdin_closed = true;
            if let Some(io) = s.io.as_mut() {
                io.close_stdin();
            }
        }
        Ok(())
    }

    pub fn resize_pty(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        let (_, p) = self.process(id, exec_id)?;
        let s = p.lock();
        match s.io.as_ref() {
            Some(io) => io.resize(width, height),
            None => Ok(()),
        }
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        c.pause_resume(Op::Pausing)?;
        self.events.publish(&ev::TaskPaused {
            container_id: id.to_owned(),
            ..Default::default()
        });
        Ok(())
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        let c = self.container(id)?;
        c.pause_resume(Op::Resuming)?;
        self.events.publish(&ev::TaskResumed {
            container_id: id.to_owned(),
            ..Default::default()
        });
        Ok(())
    }

    pub fn update(&self, id: &str, resources: &[u8]) -> Result<()> {
        let c = self.container(id)?;
        let st = c.init.snapshot().status;
        if !matches!(st, Status::Created | Status::Running | Status::Paused) {
            return Err(Error::FailedPrecondition(format!(
                "cannot update a {} container",
                st.name()
            )));
        }
        c.runc.update(id, resources)
    }

    /// The container's cgroup statistics (the Stats RPC's Any).
    pub fn stats(&self, id: &str) -> Result<Any> {
        let c = self.container(id)?;
        if c.early_delete().is_some() {
            return Err(Error::NotFound(format!(
                "container {id} exited and the runtime deleted it: no cgroup"
            )));
        }
        let cg = c.cgroup()?;
        metrics::stats_any(&cg, id)
    }

    /// The init pid of `id` (0 when unknown).
    pub fn task_pid(&self, id: &str) -> u32 {
        self.container(id).map(|c| c.init.pid() as u32).unwrap_or(0)
    }

    /// Exit the shim, unless it still holds containers.
    pub fn shutdown(&self) {
        if self.table().is_empty() {
            (self.on_shutdown)();
        }
    }
}

/// Publish TaskOOM for the container's cgroup from now on (found now, and
/// kept for Stats), and let Start go.
fn watch_oom(oom: &OomMonitor, c: &Container) {
    let watcher = c.cgroup().and_then(|cg| {
        cg.oom_events()
            .map_err(|e| Error::Other(format!("oom events: {e}")))
    });
    // The kernel counts OOMs into the watcher from its creation on, read or
    // not: Start need not wait for the monitor thread to take it (or, for
    // the first container, to be started).
    c.oom_watched.open();
    match watcher {
        Ok(w) => {
            if let Err(e) = oom.add(&c.id, w) {
                log::warn!("{}: {e}", c.id);
            }
        }
        Err(e) => log::warn!("{}: no cgroup for stats and OOM events: {e}", c.id),
    }
}
