//! A client of the runc command-line contract: every operation is one run
//! of a runc-compatible binary (runc-rs, runc, crun) with the global flags
//! `--root <root> --log <bundle>/log.json --log-format json`.
//!
//! When a command fails, the error is the `msg` of the last `error` entry the
//! runtime appended to its JSON log during that run (what runc reports), else
//! its stderr, else its exit status.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::reaper;

/// The runtime binary and its global flags, for one container.
#[derive(Debug, Clone)]
pub struct Runc {
    pub binary: PathBuf,
    /// `--root`: the runtime's state directory (`<Options.Root>/<namespace>`).
    pub root: PathBuf,
    /// `--log`: `<bundle>/log.json`.
    pub log: PathBuf,
    pub systemd_cgroup: bool,
}

/// stdin, stdout and stderr handed to `create` / `exec` (the container's);
/// `None` is /dev/null.
#[derive(Default)]
pub struct ProcStdio {
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

impl ProcStdio {
    pub fn null() -> ProcStdio {
        ProcStdio::default()
    }
}

/// Flags of `create` and `exec` beyond the id.
#[derive(Debug, Default, Clone)]
pub struct CreateOpts {
    pub pid_file: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
}

/// Flags of `checkpoint` (and the criu part of `restore`).
#[derive(Debug, Default, Clone)]
pub struct CheckpointArgs {
    pub image_path: PathBuf,
    /// Empty: the runtime's default (the image path).
    pub work_path: Option<PathBuf>,
    pub parent_path: Option<PathBuf>,
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub manage_cgroups_mode: Option<String>,
    pub empty_ns: Vec<String>,
}

impl CheckpointArgs {
    fn push(&self, a: &mut Vec<OsString>) {
        let mut path = |flag: &str, p: &Path| {
            a.push(flag.into());
            a.push(p.into());
        };
        path("--image-path", &self.image_path);
        if let Some(w) = &self.work_path {
            path("--work-path", w);
        }
        if let Some(p) = &self.parent_path {
            path("--parent-path", p);
        }
        for (on, flag) in [
            (self.tcp_established, "--tcp-established"),
            (self.ext_unix_sk, "--ext-unix-sk"),
            (self.shell_job, "--shell-job"),
            (self.file_locks, "--file-locks"),
        ] {
            if on {
                a.push(flag.into());
            }
        }
        if let Some(m) = &self.manage_cgroups_mode {
            a.push("--manage-cgroups-mode".into());
            a.push(m.into());
        }
        for ns in &self.empty_ns {
            a.push("--empty-ns".into());
            a.push(ns.into());
        }
    }
}

/// The fields of `runc state` the shim uses.
#[derive(Debug, Clone, Deserialize)]
pub struct State {
    pub id: String,
    #[serde(default)]
    pub pid: i64,
    pub status: String,
    #[serde(default)]
    pub bundle: String,
}

#[derive(Deserialize)]
struct LogEntry {
    #[serde(default)]
    level: String,
    #[serde(default)]
    msg: String,
}

/// An anonymous in-memory file (close-on-exec) for a command's output.
fn memfd(name: &str) -> Result<File> {
    let cname = std::ffi::CString::new(name).unwrap_or_default();
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::io("memfd_create", std::io::Error::last_os_error()));
    }
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn read_all(mut f: File) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = f.seek(SeekFrom::Start(0));
    let _ = f.read_to_end(&mut out);
    out
}

/// The `msg` of the last `"level":"error"` JSON entry in `log` after byte
/// `from`.
pub fn last_error(log: &Path, from: u64) -> Option<String> {
    let mut f = File::open(log).ok()?;
    f.seek(SeekFrom::Start(from)).ok()?;
    let mut text = String::new();
    f.read_to_string(&mut text).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<LogEntry>(l.trim()).ok())
        .find(|e| e.level == "error" && !e.msg.is_empty())
        .map(|e| e.msg)
}

/// A runtime command on its way; `finish` waits for it and turns a failure
/// into an error with the runtime's own message.
struct Running {
    what: &'static str,
    child: reaper::Spawned,
    out: Option<File>,
    err: Option<File>,
    log: PathBuf,
    log_start: u64,
}

impl Running {
    /// Wait for the command: its stdout, or its error.
    fn finish(self) -> Result<Vec<u8>> {
        let what = self.what;
        let status = self
            .child
            .wait()
            .map_err(|e| Error::Runtime(format!("{what}: wait: {e}")))?;
        let stdout = self.out.map(read_all).unwrap_or_default();
        if status == 0 {
            return Ok(stdout);
        }
        let stderr = self.err.map(read_all).unwrap_or_default();
        let msg = last_error(&self.log, self.log_start)
            .or_else(|| {
                let s = String::from_utf8_lossy(&stderr).trim().to_owned();
                (!s.is_empty()).then_some(s)
            })
            .unwrap_or_else(|| format!("exit status {status}"));
        Err(Error::Runtime(format!("{what}: {msg}")))
    }
}

impl Runc {
    /// The arguments of one runtime command: the global flags, then `args`.
    fn argv(&self, args: &[OsString]) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![
            "--root".into(),
            self.root.clone().into(),
            "--log".into(),
            self.log.clone().into(),
            "--log-format".into(),
            "json".into(),
        ];
        if self.systemd_cgroup {
            a.push("--systemd-cgroup".into());
        }
        a.extend(args.iter().cloned());
        a
    }

    /// Run one command to completion with the given stdio; on failure the
    /// error is prefixed with `what`. Returns what it printed on stdout when
    /// `stdio` is `None` (stdout and stderr are then captured).
    fn run(
        &self,
        what: &'static str,
        args: Vec<OsString>,
        stdio: Option<ProcStdio>,
        stdin_data: Option<&[u8]>,
    ) -> Result<Vec<u8>> {
        self.spawn(what, args, stdio, stdin_data)?.finish()
    }

    /// Start a runtime command; [`Running::finish`] waits for it.
    fn spawn(
        &self,
        what: &'static str,
        args: Vec<OsString>,
        stdio: Option<ProcStdio>,
        stdin_data: Option<&[u8]>,
    ) -> Result<Running> {
        let argv = self.argv(&args);
        let log_start = std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0);
        let dup = |f: &File| -> Result<OwnedFd> {
            f.try_clone()
                .map(OwnedFd::from)
                .map_err(|e| Error::io("dup", e))
        };
        let (fds, out, err) = match stdio {
            Some(s) => ([s.stdin, s.stdout, s.stderr], None, None),
            None => {
                let out = memfd("runc-stdout")?;
                let err = memfd("runc-stderr")?;
                let stdin = match stdin_data {
                    Some(data) => {
                        let mut f = memfd("runc-stdin")?;
                        f.write_all(data).map_err(|e| Error::io("write stdin", e))?;
                        f.seek(SeekFrom::Start(0))
                            .map_err(|e| Error::io("rewind stdin", e))?;
                        Some(OwnedFd::from(f))
                    }
                    None => None,
                };
                (
                    [stdin, Some(dup(&out)?), Some(dup(&err)?)],
                    Some(out),
                    Some(err),
                )
            }
        };
        log::debug!("exec {} {:?}", self.binary.display(), argv);
        let child = reaper::spawn_fds(&self.binary, &argv, fds)
            .map_err(|e| Error::Runtime(format!("{what}: exec {}: {e}", self.binary.display())))?;
        // (Our copies of the child's stdio went with `fds`.)
        Ok(Running {
            what,
            child,
            out,
            err,
            log: self.log.clone(),
            log_start,
        })
    }

    fn create_args(verb: &str, o: &CreateOpts) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec![verb.into()];
        a.push("--pid-file".into());
        a.push(o.pid_file.clone().into());
        if let Some(s) = &o.console_socket {
            a.push("--console-socket".into());
            a.push(s.clone().into());
        }
        if o.no_pivot && verb != "exec" {
            a.push("--no-pivot".into());
        }
        if o.no_new_keyring && verb == "create" {
            a.push("--no-new-keyring".into());
        }
        a
    }

    /// `create --bundle B --pid-file P [--console-socket S] ID`; `meanwhile`
    /// runs while the runtime does. Should it fail, the created container
    /// is deleted again and its error returned.
    pub fn create(
        &self,
        id: &str,
        bundle: &Path,
        o: &CreateOpts,
        stdio: ProcStdio,
        meanwhile: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        let mut a = Self::create_args("create", o);
        a.push("--bundle".into());
        a.push(bundle.into());
        a.push(id.into());
        let running = self.spawn("OCI runtime create failed", a, Some(stdio), None)?;
        let also = meanwhile();
        running.finish()?;
        if also.is_err() {
            if let Err(e) = self.delete(id, true) {
                log::warn!("{id}: delete after a failed create: {e}");
            }
        }
        also
    }

    /// `exec --detach --process F --pid-file P [--console-socket S] ID`.
    pub fn exec(&self, id: &str, process: &Path, o: &CreateOpts, stdio: ProcStdio) -> Result<()> {
        let mut a = Self::create_args("exec", o);
        a.push("--detach".into());
        a.push("--process".into());
        a.push(process.into());
        a.push(id.into());
        self.run("OCI runtime exec failed", a, Some(stdio), None)
            .map(drop)
    }

    pub fn start(&self, id: &str) -> Result<()> {
        let a = vec!["start".into(), id.into()];
        self.run("OCI runtime start failed", a, None, None)
            .map(drop)
    }

    pub fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let mut a: Vec<OsString> = vec!["kill".into()];
        if all {
            a.push("--all".into());
        }
        a.push(id.into());
        a.push(signal.to_string().into());
        self.run("OCI runtime kill failed", a, None, None).map(drop)
    }

    pub fn delete(&self, id: &str, force: bool) -> Result<()> {
        let mut a: Vec<OsString> = vec!["delete".into()];
        if force {
            a.push("--force".into());
        }
        a.push(id.into());
        self.run("OCI runtime delete failed", a, None, None)
            .map(drop)
    }

    pub fn pause(&self, id: &str) -> Result<()> {
        let a = vec!["pause".into(), id.into()];
        self.run("OCI runtime pause failed", a, None, None)
            .map(drop)
    }

    pub fn resume(&self, id: &str) -> Result<()> {
        let a = vec!["resume".into(), id.into()];
        self.run("OCI runtime resume failed", a, None, None)
            .map(drop)
    }

    pub fn state(&self, id: &str) -> Result<State> {
        let a = vec!["state".into(), id.into()];
        let out = self.run("OCI runtime state failed", a, None, None)?;
        serde_json::from_slice(&out)
            .map_err(|e| Error::Runtime(format!("OCI runtime state: bad JSON: {e}")))
    }

    /// Pids of every process in the container (`ps --format json`).
    pub fn ps(&self, id: &str) -> Result<Vec<u32>> {
        let a = vec!["ps".into(), "--format".into(), "json".into(), id.into()];
        let out = self.run("OCI runtime ps failed", a, None, None)?;
        let text = String::from_utf8_lossy(&out);
        if text.trim().is_empty() || text.trim() == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_str(text.trim())
            .map_err(|e| Error::Runtime(format!("OCI runtime ps: bad JSON: {e}")))
    }

    /// `checkpoint <criu flags> [--leave-running] ID`.
    pub fn checkpoint(&self, id: &str, c: &CheckpointArgs, leave_running: bool) -> Result<()> {
        let mut a: Vec<OsString> = vec!["checkpoint".into()];
        c.push(&mut a);
        if leave_running {
            a.push("--leave-running".into());
        }
        a.push(id.into());
        self.run("OCI runtime checkpoint failed", a, None, None)
            .map(drop)
    }

    /// `restore --detach --no-subreaper --pid-file P [--console-socket S]
    /// <criu flags> --bundle B ID`: the restored init is the container's
    /// process, with `stdio` as the pipes its checkpointed stdio were.
    pub fn restore(
        &self,
        id: &str,
        bundle: &Path,
        c: &CheckpointArgs,
        o: &CreateOpts,
        stdio: ProcStdio,
    ) -> Result<()> {
        let mut a = Self::create_args("restore", o);
        c.push(&mut a);
        a.push("--detach".into());
        a.push("--no-subreaper".into());
        a.push("--bundle".into());
        a.push(bundle.into());
        a.push(id.into());
        self.run("OCI runtime restore failed", a, Some(stdio), None)
            .map(drop)
    }

    /// `update --resources - ID` with the OCI LinuxResources JSON on stdin.
    pub fn update(&self, id: &str, resources_json: &[u8]) -> Result<()> {
        let a = vec!["update".into(), "--resources".into(), "-".into(), id.into()];
        self.run("OCI runtime update failed", a, None, Some(resources_json))
            .map(drop)
    }

    /// `events --stats ID`: one JSON stats object.
    pub fn stats(&self, id: &str) -> Result<serde_json::Value> {
        let a = vec!["events".into(), "--stats".into(), id.into()];
        let out = self.run("OCI runtime events failed", a, None, None)?;
        serde_json::from_slice(&out)
            .map_err(|e| Error::Runtime(format!("OCI runtime events: bad JSON: {e}")))
    }
}

/// Map a failed `kill` the way the Go shim does: a process or container
/// that is already gone is `NotFound`.
pub fn kill_error(e: Error) -> Error {
    let text = e.to_string();
    let lower = text.to_lowercase();
    if lower.contains("process already finished")
        || lower.contains("container not running")
        || lower.contains("no such process")
        || lower.contains("not running")
    {
        Error::NotFound(format!("process already finished ({text})"))
    } else if lower.contains("does not exist") || lower.contains("not found") {
        Error::NotFound(format!("no such container ({text})"))
    } else {
        e
    }
}

/// Whether a failed `delete` only says the container is already gone.
pub fn is_gone(e: &Error) -> bool {
    let t = e.to_string().to_lowercase();
    t.contains("does not exist") || t.contains("not found") || t.contains("no such")
}

/// The pid a runtime wrote to `path` (`--pid-file`).
pub fn read_pid_file(path: &Path) -> Result<i32> {
    let s = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("read pid file {}", path.display()), e))?;
    s.trim()
        .parse()
        .map_err(|_| Error::Runtime(format!("bad pid file {}: {s:?}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_error_after_offset() {
        let d = tempfile::tempdir().unwrap();
        let log = d.path().join("log.json");
        std::fs::write(
            &log,
            "{\"level\":\"error\",\"msg\":\"old\"}\n{\"level\":\"info\",\"msg\":\"x\"}\n",
        )
        .unwrap();
        let off = std::fs::metadata(&log).unwrap().len();
        assert_eq!(last_error(&log, 0).as_deref(), Some("old"));
        assert_eq!(last_error(&log, off), None);
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        writeln!(
            f,
            "{{\"level\":\"error\",\"msg\":\"new one\",\"time\":\"t\"}}"
        )
        .unwrap();
        writeln!(f, "not json").unwrap();
        assert_eq!(last_error(&log, off).as_deref(), Some("new one"));
    }

    #[test]
    fn failing_command_reports_log_then_stderr() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("fake-runc");
        std::fs::write(
            &bin,
            "#!/bin/sh\nlog=$4\ncase \"$7\" in\n  start) echo '{\"level\":\"error\",\"msg\":\"boom\"}' >> \"$log\"; exit 1;;\n  kill) echo 'container not running' >&2; exit 1;;\n  ps) echo '[1,2]';;\n  state) echo '{\"id\":\"c\",\"pid\":5,\"status\":\"running\"}';;\nesac\n",
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        let r = Runc {
            binary: bin,
            root: d.path().join("root"),
            log: d.path().join("log.json"),
            systemd_cgroup: false,
        };
        let e = r.start("c").unwrap_err();
        assert_eq!(e.to_string(), "OCI runtime start failed: boom");
        let e = kill_error(r.kill("c", 15, false).unwrap_err());
        assert!(matches!(e, Error::NotFound(_)), "{e}");
        assert_eq!(r.ps("c").unwrap(), vec![1, 2]);
        let st = r.state("c").unwrap();
        assert_eq!((st.pid, st.status.as_str()), (5, "running"));
    }
}
