//! The serving process: the ttrpc task server, a subreaper whose main
//! thread waits for signals (SIGCHLD → reap), until Shutdown (with no
//! containers left) or SIGTERM.
//!
//! `start` forks it (see [`crate::bootstrap`]); it can also be started by
//! hand, with no action, holding a listener as fd 3 or given `-socket`.

use std::fs;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use nix::sys::signal::{SigSet, Signal};

use crate::args::Flags;
use crate::error::{io_ctx, Error, Result};
use crate::events::{Publisher, Sink};
use crate::task::Task;
use crate::{bootstrap, logger, reaper, rpc, service, spare, RUNTIME_NAME};

/// How long the exiting server leaves its last replies to be written.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(30);
/// Threads parked for later: a connection's three (one more while a Wait
/// blocks) and a container's three stdio copies.
const SPARE_THREADS: usize = 6;
/// Of those, parked before the listener starts: a connection's reader and
/// the handler that takes over when the reader runs a request.
const CONNECTION_THREADS: usize = 2;
/// The listener's fd when the server is started by hand without `-socket`.
const LISTENER_FD: i32 = 3;

/// Where the server takes connections from.
pub enum Listen {
    /// A bound, listening socket (from `start`, or fd 3).
    Fd(OwnedFd),
    /// `-socket PATH` (a path, or already a `unix://` address): bound here.
    Path(String),
}

/// Everything the server needs; `start` fills it from what containerd gave.
pub struct ServerConfig {
    pub namespace: String,
    pub id: String,
    pub debug: bool,
    /// containerd's gRPC address (`-address`), for the publish binary.
    pub grpc_address: String,
    /// containerd's binary (`-publish-binary`), if events cannot go over ttrpc.
    pub publish_binary: String,
    /// containerd's ttrpc address, where events go (preferred).
    pub ttrpc_address: String,
    pub listen: Listen,
    /// The address to write to `<bundle>/address` before serving (from
    /// `start`, which replies meanwhile).
    pub write_address: Option<String>,
}

impl ServerConfig {
    /// The configuration of a server started by hand (no action): the
    /// flags, `$TTRPC_ADDRESS`, and fd 3 unless `-socket` names a path.
    pub fn from_flags(flags: &Flags) -> ServerConfig {
        let listen = if flags.socket.is_empty() {
            Listen::Fd(unsafe { OwnedFd::from_raw_fd(LISTENER_FD) })
        } else {
            Listen::Path(flags.socket.clone())
        };
        ServerConfig {
            namespace: flags.namespace.clone(),
            id: flags.id.clone(),
            debug: flags.debug,
            grpc_address: flags.address.clone(),
            publish_binary: flags.publish_binary.clone(),
            ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
            listen,
            write_address: None,
        }
    }
}

/// Serve the task API until Shutdown (with no containers left) or SIGTERM.
pub fn serve(cfg: ServerConfig) -> Result<()> {
    if cfg.namespace.is_empty() {
        return Err(Error::InvalidArgument(
            "shim namespace cannot be empty".into(),
        ));
    }
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
    #[cfg(target_env = "gnu")]
    unsafe {
        // One malloc arena: the shim is small and mostly idle.
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let fields = [
        ("runtime", RUNTIME_NAME),
        ("namespace", cfg.namespace.as_str()),
        ("id", cfg.id.as_str()),
    ];
    logger::init(Some(Path::new("log")), cfg.debug, &fields);
    if let Some(addr) = &cfg.write_address {
        // containerd reads it only to find this shim again after it
        // restarted; `start`'s reply is what it connects to now. Written
        // before serving: a containerd restarting meanwhile finds it.
        if let Err(e) = fs::write("address", addr) {
            let _ = fs::remove_file(bootstrap::socket_path(addr));
            return Err(Error::io("write address", e));
        }
    }
    reaper::set_subreaper().map_err(io_ctx("set child subreaper"))?;
    let (exit_tx, exit_rx) = mpsc::channel();
    reaper::install(exit_tx);

    let sink = if !cfg.ttrpc_address.is_empty() {
        Sink::Ttrpc(cfg.ttrpc_address.clone())
    } else if !cfg.publish_binary.is_empty() {
        Sink::Binary {
            binary: cfg.publish_binary.clone(),
            address: cfg.grpc_address.clone(),
        }
    } else {
        Sink::Discard
    };
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let on_shutdown = Box::new(move || {
        stop2.store(true, Ordering::SeqCst);
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), Signal::SIGUSR1);
    });
    let task = Arc::new(Task::new(
        cfg.namespace.clone(),
        Publisher::new(sink, cfg.namespace.clone()),
        on_shutdown,
    ));
    let own_socket = match &cfg.listen {
        Listen::Path(s) => Some(bootstrap::socket_path(s).to_owned()),
        Listen::Fd(_) => None,
    };
    let listener = match cfg.listen {
        Listen::Fd(fd) => {
            // Not for the runtime's children.
            let _ = nix::fcntl::fcntl(
                fd.as_raw_fd(),
                nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
            );
            UnixListener::from(fd)
        }
        Listen::Path(s) => {
            let path = bootstrap::socket_path(&s);
            UnixListener::bind(path).map_err(io_ctx(format!("listen on {path}")))?
        }
    };
    // containerd connects as soon as `start` replied, and it would wait
    // for the listener (a third of a millisecond in most traced runs when
    // four threads came first): the listener comes first, then parked
    // threads for its connection; the rest follows while containerd sends
    // its first request, and what the workers get meanwhile waits for them.
    let server = rpc::Server::start(listener, service::methods(Arc::clone(&task)))
        .map_err(io_ctx("start the ttrpc server"))?;
    spare::start(CONNECTION_THREADS);
    task.start_workers();
    // Exits wait in their channel until this thread takes them.
    let t2 = Arc::clone(&task);
    std::thread::Builder::new()
        .name("exits".into())
        .stack_size(256 * 1024)
        .spawn(move || t2.run_exits(exit_rx))
        .map_err(io_ctx("spawn exit handler"))?;
    spare::start(SPARE_THREADS);
    log::info!("serving (pid {})", std::process::id());
    // Read now: containerd removes the bundle (and this file) right after
    // Shutdown, before the socket is removed on the way out.
    let own_address = cfg
        .write_address
        .clone()
        .or_else(|| fs::read_to_string("address").ok());

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
        let _ = fs::remove_file(bootstrap::socket_path(addr.trim()));
    }
    if let Some(p) = own_socket {
        let _ = fs::remove_file(p);
    }
    // The Shutdown RPC that got us here still has to send its reply (its
    // thread writes it once the handler returns): no new connections, and
    // a moment for that write before the process ends.
    server.stop_listen();
    task.finish_background(Duration::from_secs(5));
    task.events().close(Duration::from_secs(5));
    std::thread::sleep(SHUTDOWN_GRACE);
    let _ = std::io::stderr().flush();
    Ok(())
}
