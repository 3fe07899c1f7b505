//! The ttrpc task service: a thin layer that decodes requests, calls the
//! task manager and maps errors onto ttrpc status codes. It answers under
//! both service names, `containerd.task.v2.Task` (containerd 1.x) and
//! `containerd.task.v3.Task` (containerd 2.x): the messages are the same.

use std::collections::HashMap;
use std::sync::Arc;

use containerd_shim_protos::api::*;
use containerd_shim_protos::protobuf::well_known_types::empty::Empty;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim::shim_ttrpc::{create_task, Task as TaskService};
use ttrpc::{MethodHandler, TtrpcContext};

use crate::events::timestamp;
use crate::task::Task;

pub struct Service {
    task: Arc<Task>,
}

type R<T> = ttrpc::Result<T>;

impl TaskService for Service {
    fn state(&self, _: &TtrpcContext, r: StateRequest) -> R<StateResponse> {
        Ok(self.task.state(&r.id, &r.exec_id)?)
    }

    fn create(&self, _: &TtrpcContext, r: CreateTaskRequest) -> R<CreateTaskResponse> {
        log::debug!("create {} (bundle {})", r.id, r.bundle);
        let pid = self
            .task
            .create(&r)
            .inspect_err(|e| log::error!("create {}: {e}", r.id))?;
        Ok(CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(&self, _: &TtrpcContext, r: StartRequest) -> R<StartResponse> {
        let pid = self
            .task
            .start(&r.id, &r.exec_id)
            .inspect_err(|e| log::error!("start {} {}: {e}", r.id, r.exec_id))?;
        Ok(StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn delete(&self, _: &TtrpcContext, r: DeleteRequest) -> R<DeleteResponse> {
        Ok(self.task.delete(&r.id, &r.exec_id)?)
    }

    fn pids(&self, _: &TtrpcContext, r: PidsRequest) -> R<PidsResponse> {
        Ok(PidsResponse {
            processes: self.task.pids(&r.id)?,
            ..Default::default()
        })
    }

    fn pause(&self, _: &TtrpcContext, r: PauseRequest) -> R<Empty> {
        self.task.pause(&r.id)?;
        Ok(Empty::new())
    }

    fn resume(&self, _: &TtrpcContext, r: ResumeRequest) -> R<Empty> {
        self.task.resume(&r.id)?;
        Ok(Empty::new())
    }

    fn checkpoint(&self, _: &TtrpcContext, r: CheckpointTaskRequest) -> R<Empty> {
        self.task.checkpoint(&r)?;
        Ok(Empty::new())
    }

    fn kill(&self, _: &TtrpcContext, r: KillRequest) -> R<Empty> {
        self.task.kill(&r.id, &r.exec_id, r.signal, r.all)?;
        Ok(Empty::new())
    }

    fn exec(&self, _: &TtrpcContext, r: ExecProcessRequest) -> R<Empty> {
        self.task.exec(&r)?;
        Ok(Empty::new())
    }

    fn resize_pty(&self, _: &TtrpcContext, r: ResizePtyRequest) -> R<Empty> {
        self.task.resize_pty(&r.id, &r.exec_id, r.width, r.height)?;
        Ok(Empty::new())
    }

    fn close_io(&self, _: &TtrpcContext, r: CloseIORequest) -> R<Empty> {
        self.task.close_io(&r.id, &r.exec_id, r.stdin)?;
        Ok(Empty::new())
    }

    fn update(&self, _: &TtrpcContext, r: UpdateTaskRequest) -> R<Empty> {
        let resources = r
            .resources
            .as_ref()
            .map(|a| a.value.as_slice())
            .unwrap_or_default();
        self.task.update(&r.id, resources)?;
        Ok(Empty::new())
    }

    fn wait(&self, _: &TtrpcContext, r: WaitRequest) -> R<WaitResponse> {
        let (exit_status, exited_at) = self.task.wait(&r.id, &r.exec_id)?;
        Ok(WaitResponse {
            exit_status,
            exited_at: exited_at
                .map(|t| MessageField::some(timestamp(t)))
                .unwrap_or_default(),
            ..Default::default()
        })
    }

    fn stats(&self, _: &TtrpcContext, r: StatsRequest) -> R<StatsResponse> {
        let stats = self
            .task
            .stats(&r.id)
            .inspect_err(|e| log::debug!("stats {}: {e}", r.id))?;
        Ok(StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    fn connect(&self, _: &TtrpcContext, r: ConnectRequest) -> R<ConnectResponse> {
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: self.task.task_pid(&r.id),
            ..Default::default()
        })
    }

    fn shutdown(&self, _: &TtrpcContext, _: ShutdownRequest) -> R<Empty> {
        self.task.shutdown();
        Ok(Empty::new())
    }
}

/// The task service's method table, under the v2 and the v3 service names.
pub fn methods(task: Arc<Task>) -> HashMap<String, Box<dyn MethodHandler + Send + Sync>> {
    let svc: Arc<dyn TaskService + Send + Sync> = Arc::new(Service { task });
    let mut all = create_task(Arc::clone(&svc));
    let v2: Vec<(String, Box<dyn MethodHandler + Send + Sync>)> = create_task(svc)
        .into_iter()
        .map(|(path, h)| {
            (
                path.replace("/containerd.task.v3.Task/", "/containerd.task.v2.Task/"),
                h,
            )
        })
        .collect();
    all.extend(v2);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Publisher, Sink};

    #[test]
    fn both_service_names() {
        let task = Arc::new(Task::new(
            "ns".into(),
            Publisher::new(Sink::Discard, "ns".into()),
            Box::new(|| {}),
        ));
        let m = methods(task);
        for svc in ["containerd.task.v2.Task", "containerd.task.v3.Task"] {
            for method in [
                "Create", "Start", "State", "Kill", "Delete", "Wait", "Shutdown", "Connect",
            ] {
                assert!(
                    m.contains_key(&format!("/{svc}/{method}")),
                    "/{svc}/{method}"
                );
            }
        }
    }
}
