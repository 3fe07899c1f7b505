//! Running one runtime command with a timeout, and the guard that
//! force-deletes a container however a case ends.

use super::host::{kill_children, live_children, remove_cgroup_tree};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub(super) const T_CREATE: Duration = Duration::from_secs(30);
pub(super) const T_SHORT: Duration = Duration::from_secs(15);
pub(super) const T_EXIT: Duration = Duration::from_secs(20);

/// How to invoke one runtime (`<argv...> --root DIR <command> ...`).
#[derive(Clone, Debug)]
pub struct Runtime {
    /// What the user configured (shown in reports, matched by [`super::Known`]).
    pub desc: String,
    pub(super) argv: Vec<OsString>,
    /// The program that must exist (first word), for a clear early error.
    pub(super) program: PathBuf,
}

impl Runtime {
    /// From a setting: a program path/name, or (if it contains whitespace)
    /// a shell command prefix run as `sh -c '<setting> "$@"' diff-runtime ARGS`.
    pub fn from_setting(setting: &str) -> Runtime {
        let setting = setting.trim();
        if setting.split_whitespace().count() > 1 {
            let first = setting.split_whitespace().next().unwrap_or("sh");
            Runtime {
                desc: setting.to_string(),
                argv: vec![
                    "sh".into(),
                    "-c".into(),
                    format!("{setting} \"$@\"").into(),
                    "diff-runtime".into(),
                ],
                program: PathBuf::from(first),
            }
        } else {
            Runtime {
                desc: setting.to_string(),
                argv: vec![setting.into()],
                program: PathBuf::from(setting),
            }
        }
    }

    /// `$DIFF_REFERENCE`, default `/usr/sbin/runc`.
    pub fn reference() -> Runtime {
        Runtime::from_setting(
            &std::env::var("DIFF_REFERENCE").unwrap_or_else(|_| "/usr/sbin/runc".into()),
        )
    }

    /// `$DIFF_RUNTIME`, default the runc-rs binary cargo built.
    pub fn under_test() -> Runtime {
        match std::env::var("DIFF_RUNTIME") {
            Ok(s) if !s.trim().is_empty() => Runtime::from_setting(&s),
            _ => {
                let p = crate::runtime::runc_rs_bin();
                Runtime::from_setting(&p.to_string_lossy())
            }
        }
    }

    /// Err(explanation) when the program cannot be found.
    pub fn check_available(&self) -> Result<(), String> {
        let p = &self.program;
        let found = if p.components().count() > 1 {
            p.is_file()
        } else {
            std::env::var_os("PATH")
                .map(|path| std::env::split_paths(&path).any(|d| d.join(p).is_file()))
                .unwrap_or(false)
        };
        if found {
            Ok(())
        } else {
            Err(format!(
                "runtime program {} not found (setting: {:?}); build runc-rs with \
                 `cargo build -p runc-rs` or point DIFF_RUNTIME / DIFF_REFERENCE elsewhere",
                p.display(),
                self.desc
            ))
        }
    }

    pub(super) fn command(&self, root: &Path) -> Command {
        let mut c = Command::new(&self.argv[0]);
        c.args(&self.argv[1..]).arg("--root").arg(root);
        c
    }
}

/// Result of one runtime command.
pub(super) struct CmdResult {
    /// None: timed out (and was killed).
    pub(super) status: Option<ExitStatus>,
    pub(super) stdout: String,
    pub(super) stderr: String,
}

impl CmdResult {
    pub(super) fn ok(&self) -> bool {
        self.status.map(|s| s.success()).unwrap_or(false)
    }

    pub(super) fn describe(&self) -> String {
        match self.status {
            None => "timed out".into(),
            Some(s) if s.success() => "ok".into(),
            Some(s) => match s.code() {
                Some(c) => format!("failed (exit {c})"),
                None => format!("failed ({s})"),
            },
        }
    }
}

pub(super) fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if start.elapsed() < timeout => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                // Our own direct child, by pid.
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// One run of one case under one runtime: its directories and log.
pub(super) struct Run<'a> {
    pub(super) rt: &'a Runtime,
    pub(super) root: PathBuf,
    pub(super) work: PathBuf,
    pub(super) bundle: PathBuf,
    pub(super) log: String,
    pub(super) n: usize,
}

impl Run<'_> {
    /// Run `<rt> --root R args...` with stdout/stderr in files (never pipes:
    /// a runtime may leave children holding them) and a timeout.
    pub(super) fn rt(&mut self, args: &[&str], timeout: Duration) -> CmdResult {
        self.n += 1;
        let (out_p, err_p) = (
            self.work.join(format!("{}.out", self.n)),
            self.work.join(format!("{}.err", self.n)),
        );
        let mut c = self.rt.command(&self.root);
        c.args(args).current_dir(&self.bundle).stdin(Stdio::null());
        let res = match (fs::File::create(&out_p), fs::File::create(&err_p)) {
            (Ok(o), Ok(e)) => match c.stdout(o).stderr(e).spawn() {
                Ok(mut child) => {
                    let status = wait_timeout(&mut child, timeout);
                    CmdResult {
                        status,
                        stdout: fs::read_to_string(&out_p).unwrap_or_default(),
                        stderr: fs::read_to_string(&err_p).unwrap_or_default(),
                    }
                }
                Err(e) => CmdResult {
                    status: None,
                    stdout: String::new(),
                    stderr: format!("spawn: {e}"),
                },
            },
            _ => CmdResult {
                status: None,
                stdout: String::new(),
                stderr: "cannot create log files".into(),
            },
        };
        let _ = writeln!(
            self.log,
            "$ {} {}: {}",
            self.rt.desc,
            args.join(" "),
            res.describe()
        );
        if !res.stderr.trim().is_empty() {
            let _ = writeln!(self.log, "  stderr: {}", res.stderr.trim());
        }
        res
    }
}

/// Deletes the container and removes its cgroup directories on drop, even
/// when the test panics.
pub(super) struct ContainerGuard<'a> {
    pub(super) rt: &'a Runtime,
    pub(super) root: PathBuf,
    pub(super) id: String,
    pub(super) cgroup_dirs: Vec<PathBuf>,
    pub(super) deleted: bool,
}

impl Drop for ContainerGuard<'_> {
    fn drop(&mut self) {
        if !self.deleted {
            let mut c = self.rt.command(&self.root);
            c.args(["delete", "-f", &self.id])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Ok(mut child) = c.spawn() {
                wait_timeout(&mut child, T_SHORT);
            }
        }
        for d in &self.cgroup_dirs {
            remove_cgroup_tree(d);
        }
        kill_children(&live_children());
    }
}
