//! A process's stdio. The container never sees containerd's FIFOs: the shim
//! hands the runtime pipes it owns (or, with a terminal, receives the pty
//! master through a console socket) and copies between them and the
//! destinations containerd asked for, on small threads:
//!
//! * stdout / stderr: a FIFO path (opened read-write, so the shim's writes
//!   never fail while the client reopens it), a plain file, or `file://PATH`
//!   (appended to, as `ctr run --log-uri` asks); `binary://` is not supported
//!   yet;
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
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{io_ctx, Error, Result};
use crate::runc::ProcStdio;

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
    copiers: Vec<JoinHandle<()>>,
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
        if uri.starts_with("binary://") {
            return Err(Error::Unimplemented(format!("binary:// logging ({uri})")));
        }
        if let Some((scheme, _)) = uri.split_once("://") {
            if scheme != "file" && scheme != "fifo" {
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
) -> Result<(Prepared, ProcStdio, Option<PathBuf>)> {
    validate(cfg)?;
    let mut p = Prepared {
        stdin_w: None,
        stdout_r: None,
        stderr_r: None,
        console: None,
    };
    if cfg.terminal {
        let sock = ConsoleSocket::new()?;
        let path = sock.path.clone();
        p.console = Some(sock);
        return Ok((p, ProcStdio::null(), Some(path)));
    }
    let mut io = ProcStdio::null();
    if !cfg.stdin.is_empty() {
        let (r, w) = pipe()?;
        chown_fd(&r, uid, gid)?;
        io.stdin = Stdio::from(r);
        p.stdin_w = Some(w);
    }
    if !cfg.stdout.is_empty() {
        let (r, w) = pipe()?;
        chown_fd(&w, uid, gid)?;
        io.stdout = Stdio::from(w);
        p.stdout_r = Some(r);
    }
    if !cfg.stderr.is_empty() {
        let (r, w) = pipe()?;
        chown_fd(&w, uid, gid)?;
        io.stderr = Stdio::from(w);
        p.stderr_r = Some(r);
    }
    Ok((p, io, None))
}

/// Open an output destination: FIFO (read-write), `file://` or a plain file.
fn open_output(uri: &str) -> Result<File> {
    if let Some(path) = uri.strip_prefix("file://") {
        let path = Path::new(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_ctx(format!("mkdir {}", dir.display())))?;
        }
        return OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o644)
            .open(path)
            .map_err(io_ctx(format!("open {}", path.display())));
    }
    let path = uri.strip_prefix("fifo://").unwrap_or(uri);
    let is_fifo = std::fs::metadata(path)
        .map_err(io_ctx(format!("stat {path}")))?
        .file_type()
        .is_fifo();
    let mut o = OpenOptions::new();
    if is_fifo {
        o.read(true).write(true);
    } else {
        o.append(true);
    }
    o.open(path).map_err(io_ctx(format!("open {path}")))
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
            ..ProcessIo::default()
        };
        let cancel = |_: &ProcessIo| -> Result<File> {
            cancel_r.try_clone().map_err(io_ctx("dup cancel pipe"))
        };
        if let Some(sock) = self.console {
            let master = sock.receive_master()?;
            if !cfg.stdout.is_empty() {
                let dst = open_output(&cfg.stdout)?;
                let src = master.try_clone().map_err(io_ctx("dup pty master"))?;
                io.copiers.push(spawn_copy(
                    format!("{name}-tty-out"),
                    src,
                    dst,
                    cancel(&io)?,
                )?);
            }
            if !cfg.stdin.is_empty() {
                let (src, keep) = open_stdin(&cfg.stdin)?;
                let dst = master.try_clone().map_err(io_ctx("dup pty master"))?;
                io.stdin_keep = Some(keep);
                io.copiers.push(spawn_copy(
                    format!("{name}-tty-in"),
                    src,
                    dst,
                    cancel(&io)?,
                )?);
            }
            io.console = Some(master);
            return Ok(io);
        }
        if let Some(src) = self.stdout_r {
            let dst = open_output(&cfg.stdout)?;
            io.copiers
                .push(spawn_copy(format!("{name}-out"), src, dst, cancel(&io)?)?);
        }
        if let Some(src) = self.stderr_r {
            let dst = open_output(&cfg.stderr)?;
            io.copiers
                .push(spawn_copy(format!("{name}-err"), src, dst, cancel(&io)?)?);
        }
        if let Some(dst) = self.stdin_w {
            let (src, keep) = open_stdin(&cfg.stdin)?;
            io.stdin_keep = Some(keep);
            io.copiers
                .push(spawn_copy(format!("{name}-in"), src, dst, cancel(&io)?)?);
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

    /// Take the copier threads (to wait for them without any lock held).
    pub fn take_copiers(&mut self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut self.copiers)
    }

    /// Stop everything: cancel the copies and close the shim's ends.
    pub fn close(&mut self) {
        self.cancel = None;
        self.stdin_keep = None;
        self.console = None;
    }
}

/// Wait for `copiers` to finish, at most `timeout` in all (the output of a
/// process that exited is flushed before it is deleted).
pub fn wait_copiers(copiers: Vec<JoinHandle<()>>, timeout: Duration) -> Vec<JoinHandle<()>> {
    let deadline = Instant::now() + timeout;
    let mut left = Vec::new();
    for h in copiers {
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if h.is_finished() {
            let _ = h.join();
        } else {
            left.push(h);
        }
    }
    left
}

fn spawn_copy(name: String, src: File, dst: File, cancel: File) -> Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(name.clone())
        .stack_size(64 * 1024)
        .spawn(move || copy_loop(&name, src, dst, cancel))
        .map_err(io_ctx("spawn stdio copier"))
}

fn copy_loop(name: &str, mut src: File, mut dst: File, cancel: File) {
    let mut buf = vec![0u8; 32 * 1024];
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

/// A unix socket the runtime sends the pty master to (`--console-socket`),
/// in a private temporary directory removed on drop.
pub struct ConsoleSocket {
    dir: PathBuf,
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn new() -> Result<ConsoleSocket> {
        let dir =
            nix::unistd::mkdtemp("/tmp/pty-rs-XXXXXX").map_err(|e| Error::sys("mkdtemp", e))?;
        let path = dir.join("pty.sock");
        let listener = UnixListener::bind(&path).map_err(io_ctx("bind console socket"))?;
        Ok(ConsoleSocket {
            dir,
            path,
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accept the runtime's connection and receive the master (SCM_RIGHTS).
    pub fn receive_master(&self) -> Result<File> {
        let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(10_000u16)) {
            Ok(0) => {
                return Err(Error::Runtime(
                    "no console from the runtime within 10s".into(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Err(Error::sys("poll console socket", e)),
        }
        let (conn, _) = self.listener.accept().map_err(io_ctx("accept console"))?;
        let mut name = [0u8; 4096];
        let mut iov = [io::IoSliceMut::new(&mut name)];
        let mut cmsg = nix::cmsg_space!([std::os::fd::RawFd; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            nix::sys::socket::MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| Error::sys("receive console master", e))?;
        for c in msg.cmsgs().map_err(|e| Error::sys("console cmsg", e))? {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                if let Some(&fd) = fds.first() {
                    use std::os::fd::FromRawFd;
                    for &extra in &fds[1..] {
                        let _ = nix::unistd::close(extra);
                    }
                    return Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
                }
            }
        }
        Err(Error::Runtime(
            "console socket message carried no fd".into(),
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let (prep, child, sock) = prepare(&cfg, 0, 0).unwrap();
        assert!(sock.is_none());
        let reader = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
        let status = std::process::Command::new("sh")
            .args(["-c", "echo out; echo err >&2"])
            .stdin(child.stdin)
            .stdout(child.stdout)
            .stderr(child.stderr)
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
    fn binary_logging_is_unimplemented() {
        let cfg = StdioConfig {
            stdout: "binary:///bin/logger".into(),
            ..Default::default()
        };
        assert!(matches!(validate(&cfg), Err(Error::Unimplemented(_))));
    }
}
