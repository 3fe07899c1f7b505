//! The task manager: the containers this shim holds, the bookkeeping that
//! ties reaped pids to processes, and the events each operation publishes.
//!
//! Locks are short: the container table, a process's state, the lifecycle
//! table. None is held while the runtime runs.

use std::collections::{HashMap, VecDeque};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use containerd_shim_protos::api::{self, CreateTaskRequest, ExecProcessRequest};
use containerd_shim_protos::events::task as ev;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::ProcessDetails;

use crate::container::Container;
use crate::error::{Error, Result};
use crate::events::{timestamp, Publisher};
use crate::process::{Op, Process, Status};
use crate::reaper::Exit;
use crate::stdio::StdioConfig;

/// Exits of pids not (yet) known, kept for a process whose pid is being
/// registered: at most this many.
const UNCLAIMED: usize = 64;

type Entry = (Arc<Container>, Arc<Process>);

#[derive(Default)]
struct Lifecycle {
    running: HashMap<i32, Entry>,
    unclaimed: VecDeque<Exit>,
}

pub struct Task {
    namespace: String,
    containers: Mutex<HashMap<String, Arc<Container>>>,
    lifecycle: Mutex<Lifecycle>,
    events: Publisher,
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
        Task {
            namespace,
            containers: Mutex::new(HashMap::new()),
            lifecycle: Mutex::new(Lifecycle::default()),
            events,
            on_shutdown,
        }
    }

    pub fn events(&self) -> &Publisher {
        &self.events
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Arc<Container>>> {
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn life(&self) -> MutexGuard<'_, Lifecycle> {
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
            let entry = {
                let mut l = self.life();
                match l.running.remove(&e.pid) {
                    Some(entry) => Some(entry),
                    None => {
                        if l.unclaimed.len() >= UNCLAIMED {
                            l.unclaimed.pop_front();
                        }
                        l.unclaimed.push_back(e);
                        None
                    }
                }
            };
            if let Some((c, p)) = entry {
                self.process_exited(&c, &p, e);
            }
        }
    }

    /// Tie `pid` to `p`; if it already exited, handle that now.
    fn register(&self, c: &Arc<Container>, p: &Arc<Process>, pid: i32) {
        let early = {
            let mut l = self.life();
            match l.unclaimed.iter().position(|e| e.pid == pid) {
                Some(i) => l.unclaimed.remove(i),
                None => {
                    l.running.insert(pid, (Arc::clone(c), Arc::clone(p)));
                    None
                }
            }
        };
        if let Some(e) = early {
            self.process_exited(c, p, e);
        }
    }

    fn process_exited(&self, c: &Container, p: &Process, e: Exit) {
        if p.is_init() && c.kill_all_on_exit {
            if let Err(err) = c.runc.kill(&c.id, libc::SIGKILL as u32, true) {
                log::debug!("{}: kill --all after init exit: {err}", c.id);
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
        }
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
        self.register(&c, &c.init, pid);
        Ok(pid as u32)
    }

    pub fn start(&self, id: &str, exec_id: &str) -> Result<u32> {
        let (c, p) = self.process(id, exec_id)?;
        p.begin(Op::Starting)?;
        let r = if p.is_init() {
            c.runc.start(id).map(|()| p.pid())
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
            self.process_exited(
                &c,
                &p,
                Exit {
                    pid: p.pid(),
                    status,
                },
            );
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
            Ok(())
        };
        if let Err(e) = r {
            p.end(None);
            return Err(e);
        }
        p.end(Some(Status::Deleted));
        let s = p.snapshot();
        self.life().running.retain(|_, (_, q)| !Arc::ptr_eq(q, &p));
        if p.is_init() {
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
        let pids = c.runc.ps(id)?;
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
        Ok(p.wait())
    }

    pub fn close_io(&self, id: &str, exec_id: &str, stdin: bool) -> Result<()> {
        let (_, p) = self.process(id, exec_id)?;
        if stdin {
            if let Some(io) = p.lock().io.as_mut() {
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
