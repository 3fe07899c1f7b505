//! The shim's three lives, as containerd's runtime-v2 contract defines them:
//!
//! * `start`: work out what containerd gave and expects ([`crate::protocol`]),
//!   compute the socket address, listen on it, write it to
//!   `<bundle>/address`, fork the daemonized server ([`crate::server`])
//!   holding the listener (moved into the options' `ShimCgroup`, if any),
//!   and print the reply (nothing else: containerd reads stdout and stderr
//!   as one).
//! * serve (no action, or the child of `start`): see [`crate::server`].
//! * `delete`: clean up after a dead shim (force-delete the container in
//!   the runtime, unmount the rootfs) and print a DeleteResponse; safe to
//!   run any number of times.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::{Message, MessageField};
use sha2::{Digest, Sha256};

use crate::args::Flags;
use crate::error::{io_ctx, Error, Result};
use crate::events::timestamp;
use crate::options::RuncOptions;
use crate::protocol::{self, StartParams};
use crate::server::{self, Listen, ServerConfig};
use crate::{mount, runc};

/// Where containerd 1.6 expects shim sockets (not configurable there).
pub const SOCKET_ROOT: &str = "/run/containerd";
/// Labels that make several containers share one shim (as the Go shim).
const GROUP_LABELS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];

/// Largest bootstrap payload read from stdin (containerd's own limit).
const MAX_STDIN: u64 = 10 << 20;

/// `unix://<dir>/<sha256(<containerd address>/<ns>/<id>)>`; `dir` is
/// `/run/containerd/s` unless containerd (2.3) names another.
pub fn socket_address(dir: &str, containerd_address: &str, namespace: &str, id: &str) -> String {
    let joined = Path::new(containerd_address).join(namespace).join(id);
    let digest = Sha256::digest(joined.to_string_lossy().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("unix://{}/{hex}", dir.trim_end_matches('/'))
}

/// The path of a `unix://` address (or the address, if it is a path).
pub fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

fn require_namespace(flags: &Flags) -> Result<()> {
    if flags.namespace.is_empty() {
        return Err(Error::InvalidArgument(
            "shim namespace cannot be empty".into(),
        ));
    }
    Ok(())
}

/// The shim grouping of the bundle in `cwd` (its id unless labelled).
fn grouping(bundle: &Path, id: &str) -> String {
    // Only the annotations are kept (and allocated) from the spec.
    #[derive(serde::Deserialize)]
    struct Spec {
        annotations: Option<std::collections::HashMap<String, serde_json::Value>>,
    }
    let annotations = fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|d| serde_json::from_slice::<Spec>(&d).ok())
        .and_then(|s| s.annotations);
    if let Some(a) = annotations {
        for label in GROUP_LABELS {
            if let Some(g) = a.get(label).and_then(|v| v.as_str()) {
                return g.to_owned();
            }
        }
    }
    id.to_owned()
}

/// The `start` action; returns what to print.
pub fn start(flags: &Flags) -> Result<Vec<u8>> {
    require_namespace(flags)?;
    let cwd = std::env::current_dir().map_err(io_ctx("getcwd"))?;
    let mut input = Vec::new();
    if !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        std::io::stdin()
            .take(MAX_STDIN)
            .read_to_end(&mut input)
            .map_err(io_ctx("read stdin"))?;
    }
    let params = protocol::start_params(flags, &input, |k| std::env::var(k).ok())?;
    let address = listen_and_spawn(&params, &cwd)?;
    Ok(protocol::encode_reply(params.reply, &address))
}

/// Listen on the group's socket and start the server (unless one already
/// serves the group); returns the address.
fn listen_and_spawn(p: &StartParams, cwd: &Path) -> Result<String> {
    // Only ShimCgroup matters here; the options are parsed again at Create.
    let opts = RuncOptions::from_any(p.options.as_ref())?;
    let dir = p
        .socket_dir
        .clone()
        .unwrap_or_else(|| format!("{SOCKET_ROOT}/s"));
    let address = socket_address(&dir, &p.grpc_address, &p.namespace, &grouping(cwd, &p.id));
    let path = PathBuf::from(socket_path(&address));
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(io_ctx(format!("mkdir {}", dir.display())))?;
    }
    let listener = match UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(&path).is_ok() {
                // A shim of the same group already serves.
                fs::write("address", &address).map_err(io_ctx("write address"))?;
                return Ok(address);
            }
            fs::remove_file(&path).map_err(io_ctx("remove stale socket"))?;
            UnixListener::bind(&path).map_err(io_ctx(format!("listen on {}", path.display())))?
        }
        Err(e) => return Err(Error::io(format!("listen on {}", path.display()), e)),
    };
    let fail = |e: Error| {
        let _ = fs::remove_file(&path);
        e
    };
    // The server writes `<bundle>/address` (a new file: a few hundred
    // microseconds on a busy ext4) while this process replies.
    let cfg = ServerConfig {
        namespace: p.namespace.clone(),
        id: p.id.clone(),
        debug: p.debug,
        grpc_address: p.grpc_address.clone(),
        publish_binary: p.containerd_binary.clone(),
        ttrpc_address: p.ttrpc_address.clone(),
        listen: Listen::Fd(listener.into()),
        write_address: Some(address.clone()),
    };
    // The server is this process forked, not this binary run again: no
    // second exec, dynamic link and libc start-up on the way to the first
    // RPC. `start` has no threads yet, so the child may go on in Rust.
    let _ = std::io::stdout().flush();
    let child = match unsafe { libc::fork() } {
        -1 => {
            let e = std::io::Error::last_os_error();
            return Err(fail(Error::io("fork the shim server", e)));
        }
        0 => become_server(cfg),
        pid => pid as u32,
    };
    // The listener is the server's now.
    drop(cfg);
    if !opts.shim_cgroup.is_empty() {
        if let Err(e) = join_cgroup(child, &opts.shim_cgroup) {
            let pid = nix::unistd::Pid::from_raw(child as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(pid, None);
            return Err(fail(e));
        }
    }
    adjust_oom_score(child);
    Ok(address)
}

/// The forked child of `start`: detach from containerd's pipes and process
/// group (it keeps `start`'s working directory, the bundle), serve, and exit; never returns into `start` (whose reply is the
/// parent's to print).
fn become_server(cfg: ServerConfig) -> ! {
    // containerd reads `start`'s stdout and stderr until EOF: the server
    // must hold neither.
    if let Ok(null) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..3 {
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    unsafe { libc::setpgid(0, 0) };
    let code = match server::serve(cfg) {
        Ok(()) => 0,
        Err(e) => {
            log::error!("serve: {e}");
            1
        }
    };
    std::process::exit(code)
}

/// Move the shim server into the options' `ShimCgroup` (every hierarchy).
fn join_cgroup(pid: u32, cgroup: &str) -> Result<()> {
    let m = cgroups::Manager::new(Some(cgroup), "shim")
        .map_err(|e| Error::InvalidArgument(format!("ShimCgroup {cgroup:?}: {e}")))?;
    m.add_pid(pid as i32)
        .map_err(|e| Error::Other(format!("move the shim into cgroup {cgroup}: {e}")))
}

/// Make the shim one notch more killable than containerd (as the Go shim).
fn adjust_oom_score(pid: u32) {
    let own = fs::read_to_string("/proc/self/oom_score_adj")
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .unwrap_or(0);
    let _ = fs::write(
        format!("/proc/{pid}/oom_score_adj"),
        (own + 1).min(1000).to_string(),
    );
}

/// The `delete` action: the DeleteResponse to print.
pub fn delete(flags: &Flags) -> Result<Vec<u8>> {
    require_namespace(flags)?;
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().map_err(io_ctx("getcwd"))?
    } else {
        PathBuf::from(&flags.bundle)
    };
    match RuncOptions::load(&bundle).runc(&flags.namespace, &bundle) {
        // containerd runs this after every shim exit, also a clean one: a
        // runtime that keeps no `<root>/<id>` (runc, crun, runc-rs all keep
        // one per container) knows nothing to delete, and the exec is
        // saved on every container's teardown.
        Ok(r) if !r.root.join(&flags.id).exists() => {}
        Ok(r) => {
            if let Err(e) = r.delete(&flags.id, true) {
                if !runc::is_gone(&e) {
                    eprintln!("delete {}: {e}", flags.id);
                }
            }
        }
        Err(e) => eprintln!("delete {}: {e}", flags.id),
    }
    mount::unmount_all(&bundle.join("rootfs"));
    // A socket left by a shim that died: remove it if nobody listens.
    if let Ok(addr) = fs::read_to_string(bundle.join("address")) {
        let p = socket_path(addr.trim());
        let is_socket = fs::symlink_metadata(p)
            .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
            .unwrap_or(false);
        if is_socket && UnixStream::connect(p).is_err() {
            let _ = fs::remove_file(p);
        }
    }
    let pid = runc::read_pid_file(&bundle.join("init.pid")).unwrap_or(0);
    let resp = DeleteResponse {
        pid: pid.max(0) as u32,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: MessageField::some(timestamp(SystemTime::now())),
        ..Default::default()
    };
    resp.write_to_bytes()
        .map_err(|e| Error::Other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_matches_containerd() {
        // sha256("/run/containerd/containerd.sock/default/123"), the value
        // containerd's own shim package computes.
        assert_eq!(
            socket_address("/run/containerd/s", "/run/containerd/containerd.sock", "default", "123"),
            "unix:///run/containerd/s/0ddfbd72d02b3551e75f3a0ed90b9965b533401be618f43a568bc522764e0ad0"
        );
    }

    #[test]
    fn grouping_label() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(grouping(d.path(), "c1"), "c1");
        fs::write(
            d.path().join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        assert_eq!(grouping(d.path(), "c1"), "pod1");
    }

    #[test]
    fn delete_is_repeatable() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("init.pid"), "4242").unwrap();
        fs::write(
            d.path().join("options.json"),
            r#"{"binary_name":"/bin/false","root":"/nonexistent-root"}"#,
        )
        .unwrap();
        let flags = Flags {
            namespace: "ns".into(),
            id: "c1".into(),
            bundle: d.path().to_string_lossy().into_owned(),
            ..Flags::default()
        };
        for _ in 0..2 {
            let out = delete(&flags).unwrap();
            let r = DeleteResponse::parse_from_bytes(&out).unwrap();
            assert_eq!((r.pid, r.exit_status), (4242, 137));
        }
    }
}
