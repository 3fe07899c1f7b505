//! `run`: create + start, and in the foreground wait for the container,
//! forwarding signals to it, then delete it and return its exit code.
//!
//! In the foreground the container's stdio is, as under runc, either pipes
//! copied to and from ours (see [`super::stdio`]) or, when the process has a
//! terminal, a pty that the runtime allocates through a console socket of
//! its own and relays to its own terminal.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use super::create::{create, CreateOpts};
use super::exec::{check_terminal, receive_console};
use super::foreground::{Console, Foreground};
use super::stdio::{host_root_ids, Pipes};
use super::{delete, io_err, start, ContainerError};

pub fn run(root: &Path, opts: &CreateOpts, detach: bool) -> Result<i32, ContainerError> {
    // Read as create reads it (same errors), for the terminal checks first.
    let bundle = std::path::absolute(&opts.bundle)
        .map_err(io_err(format!("bundle {}", opts.bundle.display())))?;
    let spec = crate::spec::load(&bundle)?;
    let terminal = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    check_terminal(detach, terminal, opts.console_socket.is_some())?;
    if detach {
        create(root, opts)?;
        start::start(root, &opts.id)?;
        return Ok(0);
    }
    if terminal {
        run_with_pty(root, opts)
    } else {
        run_with_pipes(root, opts, host_root_ids(&spec)?)
    }
}

/// The foreground without a terminal: the container's stdio is pipes.
fn run_with_pipes(root: &Path, opts: &CreateOpts, ids: (u32, u32)) -> Result<i32, ContainerError> {
    let pipes = Pipes::new()?;
    pipes.chown(ids)?;
    let created = {
        let _installed = pipes.install()?;
        create(root, opts)
    };
    // Blocked before the copying threads start, so that they inherit the mask.
    let blocked = created.and_then(|st| block(root, &opts.id).map(|fg| (st.pid, fg)));
    match (blocked, pipes.relay()) {
        (Ok((pid, mut fg)), Ok(relay)) => {
            let code = start_wait_delete(root, &opts.id, pid, &mut fg, None);
            // runc too drains the output only once the container is gone.
            relay.finish();
            code
        }
        (Ok(_), Err(e)) => {
            let _ = delete::delete(root, &opts.id, true);
            Err(e)
        }
        (Err(e), Ok(relay)) => {
            relay.finish();
            Err(e)
        }
        (Err(e), Err(_)) => Err(e),
    }
}

/// The foreground with a terminal and no console socket: the pty's master
/// comes to a socket of ours and is relayed to our terminal.
fn run_with_pty(root: &Path, opts: &CreateOpts) -> Result<i32, ContainerError> {
    // runc fails here, before creating anything, without a terminal.
    let host = Console::host_terminal()?;
    let sock = ConsoleListener::new()?;
    let mut with_socket = opts.clone();
    with_socket.console_socket = Some(sock.path.clone());
    let st = create(root, &with_socket)?;
    let console = sock.accept().and_then(|conn| receive_console(&conn, host));
    drop(sock);
    let mut console = match console {
        Ok(c) => c,
        Err(e) => {
            let _ = delete::delete(root, &opts.id, true);
            return Err(e);
        }
    };
    let mut fg = block(root, &opts.id)?;
    start_wait_delete(root, &opts.id, st.pid, &mut fg, Some(&mut console))
}

/// Blocks the forwarded signals (and SIGCHLD) once the container's process
/// exists: a mask set before the fork would be inherited by the setup code
/// of init (which unblocks only at execve).
fn block(root: &Path, id: &str) -> Result<Foreground, ContainerError> {
    Foreground::block().inspect_err(|_| {
        let _ = delete::delete(root, id, true);
    })
}

fn start_wait_delete(
    root: &Path,
    id: &str,
    pid: i32,
    fg: &mut Foreground,
    console: Option<&mut Console>,
) -> Result<i32, ContainerError> {
    if let Err(e) = start::start(root, id) {
        let _ = delete::delete(root, id, true);
        return Err(e);
    }
    let code = fg.wait(pid, console);
    delete::delete(root, id, true)?;
    Ok(code)
}

/// A console socket in a private directory, removed when dropped.
struct ConsoleListener {
    dir: PathBuf,
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleListener {
    fn new() -> Result<ConsoleListener, ContainerError> {
        use std::os::unix::fs::DirBuilderExt;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("runc-rs-console-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io_err(format!("mkdir {}", dir.display())))?;
        let path = dir.join("console.sock");
        let listener = UnixListener::bind(&path).map_err(|e| {
            let _ = std::fs::remove_dir_all(&dir);
            ContainerError::Io {
                what: format!("listen on {}", path.display()),
                source: e,
            }
        })?;
        Ok(ConsoleListener {
            dir,
            path,
            listener,
        })
    }

    /// The connection create made (it connects before init starts, so it
    /// is pending by now: never wait).
    fn accept(&self) -> Result<UnixStream, ContainerError> {
        self.listener
            .set_nonblocking(true)
            .map_err(io_err("console socket"))?;
        let (conn, _) = self
            .listener
            .accept()
            .map_err(io_err("accept on the console socket"))?;
        Ok(conn)
    }
}

impl Drop for ConsoleListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
