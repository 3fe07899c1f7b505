//! A process's stdio. The container never sees containerd's FIFOs: the shim
//! hands the runtime pipes it owns (or, with a terminal, receives the pty
//! master through a console socket) and copies between them and the
//! destinations containerd asked for, on small threads:
//!
//! * stdout / stderr: a FIFO path (opened read-write once the client has
//!   its read side open, so the shim's writes never fail while the client
//!   reopens it), a plain file, or `file://PATH`
//!   (appended to, as `ctr run --log-uri` asks); or `binary://` (see
//!   [`crate::logbin`]: the runtime gets pipes whose other ends go to a
//!   logging binary, nothing is copied);
//! * stdin: the FIFO is opened for reading, and the shim also keeps a writer
//!   of its own, so the container sees EOF only after CloseIO *and* the
//!   client closed its end.
//!
//! Copiers end on EOF (the container closed its side) or when the process's
//! cancel pipe closes (delete).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::console::ConsoleSocket;
use crate::error::{io_ctx, Error, Result};
use crate::logbin::BinaryLogger;
use crate::runc::ProcStdio;
use crate::spare::{self, Finished};

/// How long a FIFO destination may wait for its reader.
const FIFO_READER_WAIT: Duration = Duration::from_secs(5);

/// Where a process's stdio goes, as containerd gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioConfig {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// The shim's side of a process's stdio, between the runtime call and the
/// start of the copies.
pub struct Prepared {
    stdin_w: Option<File>,
    stdout_r: Option<File>,
    stderr_r: Option<File>,
    console: Option<ConsoleSocket>,
    logger: Option<BinaryLogger>,
}

/// Whose stdio it is: the logging binary's `CONTAINER_ID` and
/// `CONTAINER_NAMESPACE`.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub id: &'a str,
    pub namespace: &'a str,
}

/// Running copies of a process's stdio.
#[derive(Default)]
pub struct ProcessIo {
    /// The shim's own writer on the stdin FIFO; CloseIO drops it.
    stdin_keep: Option<File>,
    /// The pty master, for ResizePty.
    console: Option<File>,
    /// Dropping it stops the copiers.
    cancel: Option<OwnedFd>,
    /// The output copies (stdout, stderr, the terminal).
    copiers: Vec<Finished>,
    output: OutputDone,
    /// The stdin copy: it ends with CloseIO or on close, not with the process.
    stdin_copier: Option<Finished>,
    /// The `binary://` logger, stopped on close.
    logger: Option<BinaryLogger>,
}

/// Counts a process's running output copies, so that its exit can wait
/// until they flushed what it wrote: ctr 1.6 closes its FIFOs as soon as
/// it sees the exit.
#[derive(Default, Clone)]
pub struct OutputDone(Arc<(Mutex<usize>, Condvar)>);

impl OutputDone {
    fn begin(&self) -> OutputGuard {
        *self.0 .0.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        OutputGuard(self.clone())
    }

    /// Wait until every output copy ended, at most `timeout`; false if
    /// some still run.
    pub fn wait(&self, timeout: Duration) -> bool {
        let (lock, cv) = &*self.0;
        let n = lock.lock().unwrap_or_else(|e| e.into_inner());
        let (n, _) = cv
            .wait_timeout_while(n, timeout, |n| *n > 0)
            .unwrap_or_else(|e| e.into_inner());
        *n == 0
    }
}

/// Ends one output copy (also if its thread panics).
struct OutputGuard(OutputDone);

impl Drop for OutputGuard {
    fn drop(&mut self) {
        let (lock, cv) = &*self.0 .0;
        let mut n = lock.lock().unwrap_or_else(|e| e.into_inner());
        *n = n.saturating_sub(1);
        cv.notify_all();
    }
}

fn pipe() -> Result<(File, File)> {
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
    Ok((File::from(r), File::from(w)))
}

fn chown_fd(f: &File, uid: u32, gid: u32) -> Result<()> {
    if uid == 0 && gid == 0 {
        return Ok(());
    }
    nix::unistd::fchown(
        f.as_raw_fd(),
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
    )
    .map_err(|e| Error::sys("fchown stdio pipe", e))
}

/// Reject what cannot be served before anything is created.
pub fn validate(cfg: &StdioConfig) -> Result<()> {
    for uri in [&cfg.stdout, &cfg.stderr] {
        if let Some((scheme, _)) = uri.split_once("://") {
            if !matches!(scheme, "file" | "fifo" | "binary") {
                return Err(Error::InvalidArgument(format!(
                    "unknown STDIO scheme {scheme}"
                )));
            }
        }
    }
    Ok(())
}

/// Create the pipes (or the console socket) for a process about to be
/// created by the runtime; returns the runtime's stdio and, with a
/// terminal, the console socket path for `--console-socket`.
pub fn prepare(
    cfg: &StdioConfig,
    uid: u32,
    gid: u32,
    owner: Owner<'_>,
) -> Result<(Prepared, ProcStdio, Option<PathBuf>)> {
    validate(cfg)?;
    let mut p = Prepared {
        stdin_w: None,
        stdout_r: None,
        stderr_r: None,
        console: None,
        logger: None,
    };
    if cfg.terminal {
        let sock = ConsoleSocket::new()?;
        let path = sock.path().to_path_buf();
        p.console = Some(sock);
        return Ok((p, ProcStdio::null(), Some(path)));
    }
    let mut io = ProcStdio::null();
    if cfg.stdout.starts_with("binary://") {
        // As the Go shim: the stdout URI decides, the logger gets both
        // streams, stdin is not connected.
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        chown_fd(&out_w, uid, gid)?;
        chown_fd(&err_w, uid, gid)?;
        p.logger = Some(BinaryLogger::start(
            &cfg.stdout,
            owner.id,
            owner.namespace,
            out_r,
            err_r,
        )?);
        io.stdout = Some(out_w.into());
        io.stderr = Some(err_w.into());
        return Ok((p, io, None));
    }
    if !cfg.stdin.is_empty() {
        let (r, w) = pipe()?;
        chown_fd(&r, uid, gid)?;
        io.stdin = Some(r.into());
        p.stdin_w = Some(w);
    }
    if !cfg.stdout.is_empty() {
        let (r, w) = pipe()?;
        chown_fd(&w, uid, gid)?;
        io.stdout = Some(w.into());
        p.stdout_r = Some(r);
    }
    if !cfg.stderr.is_empty() {
        let (r, w) = pipe()?;
        chown_fd(&w, uid, gid)?;
        io.stderr = Some(w.into());
        p.stderr_r = Some(r);
    }
    Ok((p, io, None))
}

/// An output destination: FIFO, `file://` or a plain file. The second file
/// is a FIFO's keep-alive reader (see [`open_fifo`]).
fn open_output(uri: &str) -> Result<(File, Option<File>)> {
    if let Some(path) = uri.strip_prefix("file://") {
        let path = Path::new(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_ctx(format!("mkdir {}", dir.display())))?;
        }
        let f = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)
            .map_err(io_ctx(format!("open {}", path.display())))?;
        return Ok((f, None));
    }
    let path = uri.strip_prefix("fifo://").unwrap_or(uri);
    let is_fifo = std::fs::metadata(path)
        .map_err(io_ctx(format!("stat {path}")))?
        .file_type()
        .is_fifo();
    if is_fifo {
        return open_fifo(path).map(|(w, r)| (w, Some(r)));
    }
    let f = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io_ctx(format!("open {path}")))?;
    Ok((f, None))
}

/// Open the client's FIFO for writing once the client holds its read side,
/// plus a reader of the shim's own.
///
/// A FIFO keeps written data only while a descriptor holds it open: output
/// written and closed before the client's (asynchronous) open would be
/// dropped, and a writer that comes and goes makes the client read EOF.
/// So, as the Go shim does (a blocking write-only open), the writer waits
/// for the reader, bounded here: after [`FIFO_READER_WAIT`] the FIFO is
/// opened read-write anyway. The keep-alive reader means the shim's writes
/// never fail (EPIPE) while the client closes and reopens its end.
fn open_fifo(path: &str) -> Result<(File, File)> {
    let deadline = Instant::now() + FIFO_READER_WAIT;
    let mut pause = Duration::from_micros(200);
    let writer = loop {
        let w = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path);
        match w {
            Ok(w) => break w,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(20));
            }
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                log::warn!("{path}: no reader after {FIFO_READER_WAIT:?}; writing to it anyway");
                break OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(path)
                    .map_err(io_ctx(format!("open {path}")))?;
            }
            Err(e) => return Err(Error::io(format!("open {path}"), e)),
        }
    };
    // Writes block (rather than fail) while the client is slow to read.
    let fl = nix::fcntl::fcntl(writer.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| Error::sys("fcntl", e))?;
    let fl = OFlag::from_bits_truncate(fl) & !OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(writer.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(fl))
        .map_err(|e| Error::sys("fcntl", e))?;
    let keep = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_ctx(format!("open {path} for reading")))?;
    Ok((writer, keep))
}

/// Open the stdin FIFO for reading plus a writer the shim keeps.
fn open_stdin(path: &str) -> Result<(File, File)> {
    let r = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_ctx(format!("open stdin fifo {path}")))?;
    let w = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_ctx(format!("open stdin fifo {path} for writing")))?;
    Ok((r, w))
}

impl Prepared {
    /// After the runtime created the process: open the destinations and
    /// start copying. Consumes the shim's copies of the runtime's ends.
    pub fn start(self, cfg: &StdioConfig, name: &str) -> Result<ProcessIo> {
        let (cancel_r, cancel_w) = pipe()?;
        let mut io = ProcessIo {
            cancel: Some(OwnedFd::from(cancel_w)),
            logger: self.logger,
            ..ProcessIo::default()
        };
        if io.logger.is_some() {
            return Ok(io);
        }
        let cancel = |_: &ProcessIo| -> Result<File> {
            cancel_r.try_clone().map_err(io_ctx("dup cancel pipe"))
        };
        if let Some(sock) = self.console {
            let master = sock.receive_master()?;
            if !cfg.stdout.is_empty() {
                let dst = open_output(&cfg.stdout)?;
                let src = master.try_clone().map_err(io_ctx("dup pty master"))?;
                let done = Some(io.output.begin());
                io.copiers.push(spawn_copy(
                    format!("{name}-tty-out"),
                    src,
                    dst,
                    cancel(&io)?,
                    done,
                )?);
            }
            if !cfg.stdin.is_empty() {
                let (src, keep) = open_stdin(&cfg.stdin)?;
                let dst = master.try_clone().map_err(io_ctx("dup pty master"))?;
                io.stdin_keep = Some(keep);
                io.stdin_copier = Some(spawn_copy(
                    format!("{name}-tty-in"),
                    src,
                    (dst, None),
                    cancel(&io)?,
                    None,
                )?);
            }
            io.console = Some(master);
            return Ok(io);
        }
        if let Some(src) = self.stdout_r {
            let dst = open_output(&cfg.stdout)?;
            let done = Some(io.output.begin());
            io.copiers.push(spawn_copy(
                format!("{name}-out"),
                src,
                dst,
                cancel(&io)?,
                done,
            )?);
        }
        if let Some(src) = self.stderr_r {
            let dst = open_output(&cfg.stderr)?;
            let done = Some(io.output.begin());
            io.copiers.push(spawn_copy(
                format!("{name}-err"),
                src,
                dst,
                cancel(&io)?,
                done,
            )?);
        }
        if let Some(dst) = self.stdin_w {
            let (src, keep) = open_stdin(&cfg.stdin)?;
            io.stdin_keep = Some(keep);
            io.stdin_copier = Some(spawn_copy(
                format!("{name}-in"),
                src,
                (dst, None),
                cancel(&io)?,
                None,
            )?);
        }
        Ok(io)
    }
}

impl ProcessIo {
    /// CloseIO: drop the shim's writer on the stdin FIFO.
    pub fn close_stdin(&mut self) {
        self.stdin_keep = None;
    }

    /// Resize the pty, if the process has one.
    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let Some(m) = &self.console else {
            return Ok(());
        };
        let ws = libc::winsize {
            ws_row: height as u16,
            ws_col: width as u16,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let r = unsafe { libc::ioctl(m.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if r != 0 {
            return Err(Error::io("resize pty", io::Error::last_os_error()));
        }
        Ok(())
    }

    /// Tracks the output copies (to wait for them without any lock held).
    pub fn output_done(&self) -> OutputDone {
        self.output.clone()
    }

    /// Take the output copier threads (to wait for them without any lock held).
    pub fn take_copiers(&mut self) -> Vec<Finished> {
        std::mem::take(&mut self.copiers)
    }

    /// Stop everything: cancel the copies and close the shim's ends.
    pub fn close(&mut self) {
        self.cancel = None;
        self.stdin_keep = None;
        self.console = None;
        if let Some(mut l) = self.logger.take() {
            l.stop();
        }
    }
}

/// Wait for `copiers` to finish, at most `timeout` in all (the output of a
/// process that exited is flushed before it is deleted).
pub fn wait_copiers(copiers: Vec<Finished>, timeout: Duration) -> Vec<Finished> {
    let deadline = Instant::now() + timeout;
    copiers
        .into_iter()
        .filter(|h| !h.wait(deadline.saturating_duration_since(Instant::now())))
        .collect()
}

/// Copy `src` to `dst.0` on a thread; `dst.1` (a FIFO's keep-alive reader)
/// lives as long as the copy.
fn spawn_copy(
    name: String,
    src: File,
    dst: (File, Option<File>),
    cancel: File,
    done: Option<OutputGuard>,
) -> Result<Finished> {
    let thread_name = name.clone();
    spare::run(&thread_name, move || {
        let (dst, keep) = dst;
        copy_loop(&name, src, dst, cancel);
        drop(keep);
        drop(done);
    })
    .map_err(io_ctx("spawn stdio copier"))
}

/// A stdio copy's buffer (as the Go shim's).
const COPY_BUFFER: usize = 32 * 1024;

fn copy_loop(name: &str, mut src: File, mut dst: File, cancel: File) {
    // Made when the first bytes come: most containers write little or
    // nothing, and a shim lives as long as its container.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let (src_ready, cancelled) = {
            let mut fds = [
                PollFd::new(src.as_fd(), PollFlags::POLLIN),
                PollFd::new(cancel.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => (
                    fds[0].revents().unwrap_or(PollFlags::empty()),
                    !fds[1].revents().unwrap_or(PollFlags::empty()).is_empty(),
                ),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    log::warn!("{name}: poll: {e}");
                    return;
                }
            }
        };
        if cancelled {
            return;
        }
        if src_ready.is_empty() {
            continue;
        }
        if !src_ready.contains(PollFlags::POLLIN) {
            return; // hung up with nothing left to read
        }
        if buf.is_empty() {
            buf = vec![0u8; COPY_BUFFER];
        }
        let n = match src.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::Interrupted | io::ErrorKind::WouldBlock
                ) =>
            {
                continue
            }
            // EIO: the pty's last slave closed.
            Err(e) => {
                if e.raw_os_error() != Some(libc::EIO) {
                    log::warn!("{name}: read: {e}");
                }
                return;
            }
        };
        if let Err(e) = dst.write_all(&buf[..n]) {
            log::warn!("{name}: write: {e}");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn as_stdio(fd: Option<std::os::fd::OwnedFd>) -> std::process::Stdio {
        fd.map(std::process::Stdio::from)
            .unwrap_or_else(std::process::Stdio::null)
    }

    #[test]
    fn pipes_to_file_and_fifo() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out.log");
        let fifo = d.path().join("err.fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let cfg = StdioConfig {
            stdin: String::new(),
            stdout: format!("file://{}", out.display()),
            stderr: fifo.to_string_lossy().into_owned(),
            terminal: false,
        };
        let owner = Owner {
            id: "t",
            namespace: "ns",
        };
        let (prep, child, sock) = prepare(&cfg, 0, 0, owner).unwrap();
        assert!(sock.is_none());
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        let status = std::process::Command::new("sh")
            .args(["-c", "echo out; echo err >&2"])
            .stdin(as_stdio(child.stdin))
            .stdout(as_stdio(child.stdout))
            .stderr(as_stdio(child.stderr))
            .status()
            .unwrap();
        assert!(status.success());
        let mut io = prep.start(&cfg, "t").unwrap();
        let left = wait_copiers(io.take_copiers(), Duration::from_secs(5));
        assert!(left.is_empty());
        io.close();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "out\n");
        let mut s = String::new();
        let mut r = reader.unwrap();
        let mut b = [0u8; 16];
        let n = r.read(&mut b).unwrap();
        s.push_str(std::str::from_utf8(&b[..n]).unwrap());
        assert_eq!(s, "err\n");
    }

    #[test]
    fn schemes() {
        let cfg = |s: &str| StdioConfig {
            stdout: s.into(),
            ..Default::default()
        };
        assert!(validate(&cfg("binary:///bin/logger")).is_ok());
        assert!(validate(&cfg("file:///x")).is_ok());
        assert!(matches!(
            validate(&cfg("npipe://x")),
            Err(Error::InvalidArgument(_))
        ));
    }
}
