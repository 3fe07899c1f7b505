//! A blocking client of containerd's CRI plugin (the kubelet's side of the
//! Kubernetes Container Runtime Interface, `runtime.v1`), for the tests that
//! drive the shims the way Kubernetes does: the calls they make, and the pod
//! and container configs they send.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

pub use k8s_cri::v1 as api;

/// A CRI runtime-service client on one unix socket, with the runtime
/// (one thread) that drives its calls.
pub struct Cri {
    runtime: tokio::runtime::Runtime,
    client: RuntimeServiceClient<Channel>,
}

impl Cri {
    /// Connect to the CRI plugin on containerd's gRPC `socket`.
    pub fn connect(socket: &Path) -> io::Result<Cri> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let socket: PathBuf = socket.to_path_buf();
        // The URI is a placeholder: every connection goes to `socket`.
        let endpoint = Endpoint::from_static("http://[::]");
        let channel =
            runtime
                .block_on(
                    endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
                        let socket = socket.clone();
                        async move {
                            Ok::<_, io::Error>(TokioIo::new(UnixStream::connect(socket).await?))
                        }
                    })),
                )
                .map_err(io::Error::other)?;
        Ok(Cri {
            runtime,
            client: RuntimeServiceClient::new(channel),
        })
    }

    /// The client, for one call: `cri.call(cri.rt().version(req))`.
    pub fn rt(&self) -> RuntimeServiceClient<Channel> {
        self.client.clone()
    }

    /// Run one call to completion; its reply's message.
    pub fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        self.runtime.block_on(call).map(tonic::Response::into_inner)
    }
}

/// The kubelet's calls the tests make, each panicking with the call's name
/// on an error unless it returns the error.
impl Cri {
    /// RunPodSandbox on `handler`; the sandbox id.
    pub fn run_pod(&self, config: &api::PodSandboxConfig, handler: &str) -> String {
        self.call(self.rt().run_pod_sandbox(api::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.to_owned(),
        }))
        .unwrap_or_else(|e| panic!("RunPodSandbox on {handler}: {e}"))
        .pod_sandbox_id
    }

    /// PodSandboxStatus's state of `pod`.
    pub fn pod_state(&self, pod: &str) -> i32 {
        self.call(self.rt().pod_sandbox_status(api::PodSandboxStatusRequest {
            pod_sandbox_id: pod.to_owned(),
            verbose: false,
        }))
        .expect("PodSandboxStatus")
        .status
        .expect("a sandbox status")
        .state
    }

    /// Create and start a container in `pod`; its id.
    pub fn start_container(
        &self,
        pod: &str,
        pod_config: &api::PodSandboxConfig,
        config: api::ContainerConfig,
    ) -> String {
        let name = config
            .metadata
            .as_ref()
            .map_or("", |m| m.name.as_str())
            .to_owned();
        let id = self
            .call(self.rt().create_container(api::CreateContainerRequest {
                pod_sandbox_id: pod.to_owned(),
                config: Some(config),
                sandbox_config: Some(pod_config.clone()),
            }))
            .unwrap_or_else(|e| panic!("CreateContainer {name}: {e}"))
            .container_id;
        self.call(self.rt().start_container(api::StartContainerRequest {
            container_id: id.clone(),
        }))
        .unwrap_or_else(|e| panic!("StartContainer {name}: {e}"));
        id
    }

    /// ExecSync of `cmd` in container `id`: (exit code, stdout, stderr).
    pub fn exec_sync(
        &self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<(i32, String, String), tonic::Status> {
        let r = self.call(self.rt().exec_sync(api::ExecSyncRequest {
            container_id: id.to_owned(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            timeout,
        }))?;
        Ok((
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        ))
    }

    /// Wait (20 s at most) until container `id` has exited; its (exit
    /// code, reason) per ContainerStatus.
    pub fn wait_exited(&self, id: &str) -> (i32, String) {
        let mut last = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let status = self
                .call(self.rt().container_status(api::ContainerStatusRequest {
                    container_id: id.to_owned(),
                    verbose: false,
                }))
                .expect("ContainerStatus")
                .status
                .expect("a container status");
            if status.state == api::ContainerState::ContainerExited as i32 {
                return (status.exit_code, status.reason);
            }
            last = Some(status.state);
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("container {id} has not exited (state {last:?})");
    }

    /// StopContainer with a grace period of `timeout` seconds; the
    /// container's (exit code, reason) once exited.
    pub fn stop(&self, id: &str, timeout: i64) -> (i32, String) {
        self.call(self.rt().stop_container(api::StopContainerRequest {
            container_id: id.to_owned(),
            timeout,
        }))
        .expect("StopContainer");
        self.wait_exited(id)
    }

    /// RemoveContainer of each of `containers`, then StopPodSandbox and
    /// RemovePodSandbox of `pod`.
    pub fn remove_pod(&self, pod: &str, containers: &[&String]) {
        for id in containers {
            self.call(self.rt().remove_container(api::RemoveContainerRequest {
                container_id: id.to_string(),
            }))
            .expect("RemoveContainer");
        }
        self.call(self.rt().stop_pod_sandbox(api::StopPodSandboxRequest {
            pod_sandbox_id: pod.to_owned(),
        }))
        .expect("StopPodSandbox");
        self.call(self.rt().remove_pod_sandbox(api::RemovePodSandboxRequest {
            pod_sandbox_id: pod.to_owned(),
        }))
        .expect("RemovePodSandbox");
    }
}

/// A pod `name` on the host's network (no CNI here; and so, as the kubelet
/// does then, no hostname of its own) with its own pid and IPC namespaces,
/// which its containers join; cgroups under `cgroup_parent`, logs in `logs`.
pub fn host_network_pod(name: &str, cgroup_parent: &str, logs: &Path) -> api::PodSandboxConfig {
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.to_owned(),
            uid: format!("uid-{name}"),
            namespace: "default".to_owned(),
            attempt: 0,
        }),
        log_directory: logs.to_string_lossy().into_owned(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_owned(),
            security_context: Some(api::LinuxSandboxSecurityContext {
                namespace_options: Some(api::NamespaceOption {
                    network: api::NamespaceMode::Node as i32,
                    pid: api::NamespaceMode::Pod as i32,
                    ipc: api::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A memory limit (bytes) and CPU shares.
pub fn resources(memory: i64, cpu_shares: i64) -> api::LinuxContainerResources {
    api::LinuxContainerResources {
        memory_limit_in_bytes: memory,
        cpu_shares,
        ..Default::default()
    }
}

/// Container `name` running `sh -c <cmd>` from `image` (a memory limit
/// unless 0, with 256 CPU shares; a terminal if `tty`), logging to
/// `<name>.log`.
pub fn shell_container(
    image: &str,
    name: &str,
    cmd: &str,
    memory: i64,
    tty: bool,
) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.to_owned(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), cmd.into()],
        log_path: format!("{name}.log"),
        tty,
        linux: Some(api::LinuxContainerConfig {
            resources: (memory > 0).then(|| resources(memory, 256)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The lines of a CRI log file without their timestamps, sorted (stdout
/// and stderr are copied apart, so their order is not kept).
pub fn log_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_owned()))
        .collect();
    lines.sort();
    lines
}
