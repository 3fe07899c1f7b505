//! A blocking client of containerd's CRI plugin (the kubelet's side of the
//! Kubernetes Container Runtime Interface, `runtime.v1`), for the tests that
//! drive the shims the way Kubernetes does.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};

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
