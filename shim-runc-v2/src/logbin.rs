//! `binary://` logging, containerd's contract for logging drivers: for a
//! process whose stdout URI is `binary:///path/to/logger?key=value&flag`,
//! the shim starts `/path/to/logger key value flag` with
//!
//! * fd 3: the read end of the process's stdout pipe,
//! * fd 4: the read end of its stderr pipe,
//! * fd 5: the write end of a "ready" pipe, which the logger closes (or
//!   writes a byte to) once it is ready to consume,
//! * exactly the environment `CONTAINER_ID` and `CONTAINER_NAMESPACE`,
//!
//! and waits for it to be ready before the runtime creates the process. The
//! process writes straight into the pipes: the shim copies nothing. When the
//! process is deleted the logger gets SIGTERM, then SIGKILL after 12 s (the
//! Go shim's grace period), without blocking the caller.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{Error, Result};
use crate::reaper::{self, Spawned};

/// How long a logger may take to signal readiness.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a logger may take to exit after SIGTERM.
const TERM_GRACE: Duration = Duration::from_secs(12);

/// The logger's path and arguments from a `binary://` URI.
pub fn parse_uri(uri: &str) -> Result<(PathBuf, Vec<String>)> {
    let rest = uri
        .strip_prefix("binary://")
        .ok_or_else(|| Error::InvalidArgument(format!("not a binary:// URI: {uri}")))?;
    let (loc, query) = rest.split_once('?').unwrap_or((rest, ""));
    let query = query.split('#').next().unwrap_or_default();
    // `binary://host/path`: the host part is not part of the path (as Go's
    // url.URL.Path).
    let path = match loc.find('/') {
        Some(i) => &loc[i..],
        None => "",
    };
    let path = decode(path);
    if path.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "binary logging URI {uri:?} names no binary"
        )));
    }
    let mut args = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        args.push(decode(&k.replace('+', " ")));
        if !v.is_empty() {
            args.push(decode(&v.replace('+', " ")));
        }
    }
    Ok((PathBuf::from(path), args))
}

/// `%XX` decoding (invalid escapes are kept as they are).
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A running logging binary.
pub struct BinaryLogger {
    child: Option<Spawned>,
    path: PathBuf,
}

impl BinaryLogger {
    /// Start the logger of `uri` for process `id` of namespace `ns`, handing
    /// it `stdout_r` / `stderr_r`, and wait until it is ready.
    pub fn start(
        uri: &str,
        id: &str,
        ns: &str,
        stdout_r: File,
        stderr_r: File,
    ) -> Result<BinaryLogger> {
        let (path, args) = parse_uri(uri)?;
        let (ready_r, ready_w) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe2", e))?;
        let fds: [RawFd; 3] = [
            stdout_r.as_raw_fd(),
            stderr_r.as_raw_fd(),
            ready_w.as_raw_fd(),
        ];
        let mut cmd = Command::new(&path);
        cmd.args(&args)
            .env_clear()
            .env("CONTAINER_ID", id)
            .env("CONTAINER_NAMESPACE", ns)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        unsafe {
            cmd.pre_exec(move || {
                // Move the three out of the way first: any of them may sit
                // on 3..=5 already.
                let mut high = [0; 3];
                for (i, fd) in fds.iter().enumerate() {
                    high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 10);
                    if high[i] < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                for (i, fd) in high.iter().enumerate() {
                    // dup2 leaves the new descriptor without close-on-exec.
                    if libc::dup2(*fd, 3 + i as i32) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = reaper::spawn(&mut cmd).map_err(|e| {
            Error::InvalidArgument(format!("start logging binary {}: {e}", path.display()))
        })?;
        // The logger holds them now.
        drop(cmd);
        drop((stdout_r, stderr_r, ready_w));
        let mut logger = BinaryLogger {
            child: Some(child),
            path,
        };
        if let Err(e) = wait_ready(File::from(ready_r)) {
            logger.stop();
            return Err(Error::Other(format!(
                "logging binary {}: {e}",
                logger.path.display()
            )));
        }
        Ok(logger)
    }

    /// SIGTERM the logger; a thread SIGKILLs it if it lingers.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.pid());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let path = self.path.clone();
        let r = std::thread::Builder::new()
            .name("logger-stop".into())
            .stack_size(64 * 1024)
            .spawn(move || match child.wait_timeout(TERM_GRACE) {
                Ok(Some(_)) => {}
                Ok(None) => {
                    log::warn!("logging binary {} ignored SIGTERM; killing", path.display());
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                    let _ = child.wait();
                }
                Err(e) => log::warn!("wait for logging binary {}: {e}", path.display()),
            });
        if let Err(e) = r {
            log::warn!("spawn logger-stop thread: {e}");
        }
    }
}

impl Drop for BinaryLogger {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Block until the logger closes (or writes to) the ready pipe.
fn wait_ready(mut r: File) -> std::result::Result<(), String> {
    let mut fds = [PollFd::new(r.as_fd(), PollFlags::POLLIN)];
    let ms = READY_TIMEOUT.as_millis() as u16;
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(0) => Err(format!("not ready within {READY_TIMEOUT:?}")),
        Ok(_) => {
            let mut b = [0u8; 1];
            let _ = r.read(&mut b);
            Ok(())
        }
        Err(e) => Err(format!("poll ready pipe: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn uri_parsing() {
        let (p, a) = parse_uri("binary:///usr/bin/logger?tag=a+b&flag&x=%2Fy").unwrap();
        assert_eq!(p, PathBuf::from("/usr/bin/logger"));
        assert_eq!(a, vec!["tag", "a b", "flag", "x", "/y"]);
        let (p, a) = parse_uri("binary://host/opt/my%20log").unwrap();
        assert_eq!((p, a.len()), (PathBuf::from("/opt/my log"), 0));
        assert!(parse_uri("binary://").is_err());
        assert!(parse_uri("file:///x").is_err());
        assert_eq!(decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn logger_gets_fds_env_and_args() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let script = d.path().join("logger.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nexec 5>&-\n{{ echo \"$CONTAINER_ID $CONTAINER_NAMESPACE $* ${{HOME:-nohome}}\"; cat <&3; cat <&4; }} > {}\n",
                out.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (or, mut ow) = pipe();
        let (er, mut ew) = pipe();
        let uri = format!("binary://{}?--tag=x", script.display());
        let mut l = BinaryLogger::start(&uri, "c1", "ns1", or, er).unwrap();
        ow.write_all(b"to-out\n").unwrap();
        ew.write_all(b"to-err\n").unwrap();
        drop((ow, ew));
        let child = l.child.as_mut().unwrap();
        assert_eq!(
            child.wait_timeout(Duration::from_secs(10)).unwrap(),
            Some(0)
        );
        let text = std::fs::read_to_string(&out).unwrap();
        assert_eq!(text, "c1 ns1 --tag x nohome\nto-out\nto-err\n");
    }

    #[test]
    fn logger_that_never_gets_ready_is_an_error_quickly_enough() {
        let (or, _ow) = pipe();
        let (er, _ew) = pipe();
        let e = BinaryLogger::start("binary:///nonexistent/logger", "c", "n", or, er);
        assert!(matches!(e, Err(Error::InvalidArgument(_))));
    }

    fn pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        (File::from(r), File::from(w))
    }
}
