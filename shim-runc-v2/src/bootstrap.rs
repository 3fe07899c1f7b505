//! The shim's three lives, as containerd's runtime-v2 contract defines them:
//!
//! * `start`: work out what containerd gave and expects ([`crate::protocol`]),
//!   compute the socket address, listen on it, write it to
//!   `<bundle>/address`, re-execute this binary (no action) as the
//!   daemonized server holding the listener as fd 3 (moved into the
//!   options' `ShimCgroup`, if any), and print the reply (nothing else:
//!   containerd reads stdout and stderr as one).
//! * serve (no action): the ttrpc task server, a subreaper whose main thread
//!   waits for signals (SIGCHLD → reap).
//! * `delete`: clean up after a dead shim (force-delete the container in
//!   the runtime, unmount the rootfs) and print a DeleteResponse; safe to
//!   run any number of times.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::{Message, MessageField};
use nix::sys::signal::{SigSet, Signal};
use sha2::{Digest, Sha256};

use crate::args::Flags;
use crate::error::{io_ctx, Error, Result};
use crate::events::{timestamp, Publisher, Sink};
use crate::options::RuncOptions;
use crate::protocol::{self, StartParams};
use crate::task::Task;
use crate::{logger, mount, reaper, runc, service, RUNTIME_NAME};

/// Where containerd 1.6 expects shim sockets (not configurable there).
pub const SOCKET_ROOT: &str = "/run/containerd";
/// Labels that make several containers share one shim (as the Go shim).
const GROUP_LABELS: [&str; 2] = [
    "io.containerd.runc.v2.group",
    "io.kubernetes.cri.sandbox-id",
];
/// How long the exiting server leaves its last replies to be written.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(30);
/// The listener's fd in the server process.
const LISTENER_FD: i32 = 3;

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

fn socket_path(address: &str) -> &str {
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
    let spec = fs::read(bundle.join("config.json"))
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok());
    if let Some(spec) = spec {
        for label in GROUP_LABELS {
            if let Some(g) = spec["annotations"][label].as_str() {
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
    fs::write("address", &address).map_err(|e| fail(Error::io("write address", e)))?;
    let exe = std::env::current_exe().map_err(|e| fail(Error::io("current_exe", e)))?;
    let mut cmd = Command::new(exe);
    cmd.args([
        "-namespace",
        &p.namespace,
        "-id",
        &p.id,
        "-address",
        &p.grpc_address,
    ]);
    if !p.containerd_binary.is_empty() {
        cmd.args(["-publish-binary", &p.containerd_binary]);
    }
    if p.debug {
        cmd.arg("-debug");
    }
    if !p.ttrpc_address.is_empty() {
        cmd.env("TTRPC_ADDRESS", &p.ttrpc_address);
    }
    let lfd = listener.as_raw_fd();
    cmd.current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    unsafe {
        cmd.pre_exec(move || {
            // dup2 clears close-on-exec, except onto itself.
            let r = if lfd == LISTENER_FD {
                libc::fcntl(lfd, libc::F_SETFD, 0)
            } else {
                libc::dup2(lfd, LISTENER_FD)
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(Error::io("start the shim server", e)))?;
    if !opts.shim_cgroup.is_empty() {
        if let Err(e) = join_cgroup(child.id(), &opts.shim_cgroup) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(fail(e));
        }
    }
    adjust_oom_score(child.id());
    Ok(address)
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

/// Serve the task API until Shutdown (with no containers left) or SIGTERM.
pub fn serve(flags: &Flags) -> Result<()> {
    require_namespace(flags)?;
    // Signals are taken synchronously by this thread only: every thread
    // spawned from here on inherits the mask (children get a clean one).
    let mut sigs = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGUSR1,
    ] {
        sigs.add(s);
    }
    sigs.thread_block()
        .map_err(|e| Error::sys("block signals", e))?;
    unsafe {
        // One malloc arena: the shim is small and mostly idle.
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let fields = [
        ("runtime", RUNTIME_NAME),
        ("namespace", flags.namespace.as_str()),
        ("id", flags.id.as_str()),
    ];
    logger::init(Some(Path::new("log")), flags.debug, &fields);
    reaper::set_subreaper().map_err(io_ctx("set child subreaper"))?;
    let (exit_tx, exit_rx) = mpsc::channel();
    reaper::install(exit_tx);

    let sink = match std::env::var("TTRPC_ADDRESS") {
        Ok(a) if !a.is_empty() => Sink::Ttrpc(a),
        _ if !flags.publish_binary.is_empty() => Sink::Binary {
            binary: flags.publish_binary.clone(),
            address: flags.address.clone(),
        },
        _ => Sink::Discard,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let on_shutdown = Box::new(move || {
        stop2.store(true, Ordering::SeqCst);
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGUSR1);
    });
    let task = Arc::new(Task::new(
        flags.namespace.clone(),
        Publisher::new(sink, flags.namespace.clone()),
        on_shutdown,
    ));
    let t2 = Arc::clone(&task);
    std::thread::Builder::new()
        .name("exits".into())
        .stack_size(256 * 1024)
        .spawn(move || t2.run_exits(exit_rx))
        .map_err(io_ctx("spawn exit handler"))?;

    let server = if flags.socket.is_empty() {
        // The listener `start` passed us; not for the runtime's children.
        let fd = unsafe { OwnedFd::from_raw_fd(LISTENER_FD) };
        let _ = nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
        ttrpc::Server::new().add_listener(std::os::fd::IntoRawFd::into_raw_fd(fd))
    } else {
        // `-socket PATH` (a path, or already a `unix://` address).
        let addr = if flags.socket.contains("://") {
            flags.socket.clone()
        } else {
            format!("unix://{}", flags.socket)
        };
        ttrpc::Server::new().bind(&addr)
    };
    let mut server = server
        .map_err(|e| Error::Other(format!("ttrpc listener: {e}")))?
        .set_thread_count_default(2)
        .set_thread_count_min(1)
        .set_thread_count_max(8)
        .register_service(service::methods(Arc::clone(&task)));
    server
        .start()
        .map_err(|e| Error::Other(format!("start ttrpc server: {e}")))?;
    log::info!("serving (pid {})", std::process::id());
    // Read now: containerd removes the bundle (and this file) right after
    // Shutdown, before the socket is removed on the way out.
    let own_address = fs::read_to_string("address").ok();

    loop {
        match sigs.wait() {
            Ok(Signal::SIGCHLD) => reaper::reap(),
            Ok(Signal::SIGUSR1) if stop.load(Ordering::SeqCst) => break,
            Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => {
                log::info!("terminating on signal");
                break;
            }
            Ok(_) => {}
            Err(e) => log::warn!("sigwait: {e}"),
        }
    }
    log::info!("shutting down");
    // First the socket file: a `start` for the same group (a container id
    // reused at once) must bind a new shim, not connect to this one.
    if let Some(addr) = own_address {
        let _ = fs::remove_file(socket_path(addr.trim()));
    }
    if !flags.socket.is_empty() {
        let _ = fs::remove_file(socket_path(&flags.socket));
    }
    // The Shutdown RPC that got us here still has to send its reply, and
    // the server offers no way to wait for that: no new connections, and a
    // moment for the writer before the process ends.
    let server = server.stop_listen();
    task.events().close(Duration::from_secs(5));
    std::thread::sleep(SHUTDOWN_GRACE);
    drop(server);
    let _ = std::io::stderr().flush();
    Ok(())
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
