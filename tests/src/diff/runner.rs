//! The host side: driving a runtime through create/start/delete, observing
//! the container from the host, and cleaning up (Drop guards).

use super::compare::{self, CaseOutcome, Placeholders};
use super::script;
use super::{Case, Observations};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const T_CREATE: Duration = Duration::from_secs(30);
const T_SHORT: Duration = Duration::from_secs(15);
const T_EXIT: Duration = Duration::from_secs(20);

/// How to invoke one runtime (`<argv...> --root DIR <command> ...`).
#[derive(Clone, Debug)]
pub struct Runtime {
    /// What the user configured (shown in reports, matched by [`super::Known`]).
    pub desc: String,
    argv: Vec<OsString>,
    /// The program that must exist (first word), for a clear early error.
    program: PathBuf,
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

    fn command(&self, root: &Path) -> Command {
        let mut c = Command::new(&self.argv[0]);
        c.args(&self.argv[1..]).arg("--root").arg(root);
        c
    }
}

/// Result of one runtime command.
struct CmdResult {
    /// None: timed out (and was killed).
    status: Option<ExitStatus>,
    stdout: String,
    stderr: String,
}

impl CmdResult {
    fn ok(&self) -> bool {
        self.status.map(|s| s.success()).unwrap_or(false)
    }

    fn describe(&self) -> String {
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

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
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
struct Run<'a> {
    rt: &'a Runtime,
    root: PathBuf,
    work: PathBuf,
    bundle: PathBuf,
    log: String,
    n: usize,
}

impl Run<'_> {
    /// Run `<rt> --root R args...` with stdout/stderr in files (never pipes:
    /// a runtime may leave children holding them) and a timeout.
    fn rt(&mut self, args: &[&str], timeout: Duration) -> CmdResult {
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
struct ContainerGuard<'a> {
    rt: &'a Runtime,
    root: PathBuf,
    id: String,
    cgroup_dirs: Vec<PathBuf>,
    deleted: bool,
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

/// Remove a cgroup directory we created (and its children), first killing
/// (by pid) any process of ours still inside it.
pub fn remove_cgroup_tree(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    if let Ok(rd) = fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    for attempt in 0..100 {
        if fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        if attempt == 0 || attempt % 20 == 10 {
            // A frozen process cannot die: thaw first (freezer hierarchy).
            let _ = fs::write(dir.join("freezer.state"), "THAWED");
            for pid in fs::read_to_string(dir.join("cgroup.procs"))
                .unwrap_or_default()
                .split_whitespace()
            {
                if let Ok(pid) = pid.parse::<i32>() {
                    if pid > 1 {
                        unsafe { libc::kill(pid, libc::SIGKILL) };
                    }
                }
            }
        }
        reap_zombies();
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!(
        "differential: WARNING: could not remove cgroup {}",
        dir.display()
    );
}

/// Reap every exited child (orphans reparented to us as subreaper).
/// Only called when no `std::process::Child` of this thread is pending, and
/// the differential suite is the only test spawning processes in this binary.
fn reap_zombies() {
    loop {
        let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) };
        if r <= 0 {
            break;
        }
    }
}

/// The cgroup hierarchies of the host (mount points of cgroup and cgroup2
/// filesystems), e.g. `/sys/fs/cgroup/memory`, `/sys/fs/cgroup/unified`.
pub fn cgroup_hierarchies() -> Vec<PathBuf> {
    let mi = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = mi
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|x| *x == "-")?;
            let fstype = *f.get(dash + 1)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(f[4]))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn host_namespaces() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    if let Ok(rd) = fs::read_dir("/proc/self/ns") {
        for e in rd.flatten() {
            if let Ok(l) = fs::read_link(e.path()) {
                m.insert(
                    e.file_name().to_string_lossy().into_owned(),
                    l.to_string_lossy().into_owned(),
                );
            }
        }
    }
    m
}

/// Replace placeholders in every string of the spec.
fn substitute(v: &mut Value, subs: &[(&str, String)]) {
    match v {
        Value::String(s) => {
            for (k, r) in subs {
                if s.contains(k) {
                    *s = s.replace(k, r);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| substitute(x, subs)),
        Value::Object(o) => o.values_mut().for_each(|x| substitute(x, subs)),
        _ => {}
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Record a `state` answer under `host.state.<phase>.*`; returns the pid.
fn record_state(obs: &mut Observations, phase: &str, res: &CmdResult) -> Option<i32> {
    let p = format!("host.state.{phase}");
    if !res.ok() {
        obs.insert(p, format!("state {}", res.describe()));
        return None;
    }
    let v: Value = match serde_json::from_str(&res.stdout) {
        Ok(v) => v,
        Err(e) => {
            obs.insert(p, format!("unparseable JSON: {e}"));
            return None;
        }
    };
    let Some(o) = v.as_object() else {
        obs.insert(p, format!("not an object: {}", json_type(&v)));
        return None;
    };
    let keys: Vec<String> = o
        .iter()
        .map(|(k, v)| format!("{k}:{}", json_type(v)))
        .collect();
    obs.insert(format!("{p}.keys"), keys.join(","));
    for (k, v) in o {
        let shown = match (k.as_str(), v) {
            ("pid", Value::Number(n)) => match n.as_i64() {
                Some(x) if x > 0 => ">0".to_string(),
                _ => n.to_string(),
            },
            // Values that differ per run or per implementation version.
            ("created", Value::String(s)) => {
                if s.len() >= 20 && s.as_bytes()[4] == b'-' && s.contains('T') {
                    "<RFC 3339 timestamp>".into()
                } else {
                    format!("<not RFC 3339: {s}>")
                }
            }
            ("ociVersion", Value::String(_)) => "<string>".into(),
            (_, Value::String(s)) => s.clone(),
            (_, v) => v.to_string(),
        };
        obs.insert(format!("{p}.{k}"), shown);
    }
    // Only a real pid: 0 or negative must never reach waitpid/kill.
    v.get("pid")
        .and_then(Value::as_i64)
        .filter(|&p| p > 0 && p <= i32::MAX as i64)
        .map(|p| p as i32)
}

enum Exit {
    Status(i32),
    NotChild,
    Timeout,
}

/// Wait for the container's init (our child: we are a subreaper and the
/// runtime's create process exited).
fn wait_init(pid: i32, timeout: Duration) -> Exit {
    if pid <= 0 {
        return Exit::NotChild;
    }
    let start = Instant::now();
    loop {
        let mut st = 0;
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return Exit::Status(st);
        }
        if r < 0 {
            return Exit::NotChild;
        }
        if start.elapsed() > timeout {
            return Exit::Timeout;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn describe_wait_status(st: i32) -> String {
    if libc::WIFEXITED(st) {
        format!("exited {}", libc::WEXITSTATUS(st))
    } else if libc::WIFSIGNALED(st) {
        format!("killed by signal {}", libc::WTERMSIG(st))
    } else {
        format!("wait status {st:#x}")
    }
}

/// A cgroup file's content on one line (`; ` between lines). Files whose
/// lines form an unordered set (`devices.list`: the kernel keeps exceptions
/// in insertion order, which has no effect on access checks) are sorted.
fn cgroup_file_value(file: &str, s: &str) -> String {
    let mut lines: Vec<String> = s
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    if file == "devices.list" {
        lines.sort();
    }
    lines.join("; ")
}

/// Live (non-zombie) processes whose parent is this process: container
/// processes orphaned by a runtime and reparented to us (we are a child
/// subreaper). Called when no `Child` of ours is running.
fn live_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    let mut v = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) S ppid ..." - comm may contain spaces and parens.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let (state, ppid) = (
            f.next().unwrap_or(""),
            f.next().and_then(|p| p.parse::<i32>().ok()),
        );
        if ppid == Some(me) && state != "Z" && state != "X" {
            v.push(pid);
        }
    }
    v.sort();
    v
}

/// Kill (by pid) and reap leftover children of ours.
fn kill_children(pids: &[i32]) {
    for &pid in pids {
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    for &pid in pids {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            if r != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Remove `runc-rs-diff-<pid>` cgroup trees left by an earlier run of this
/// harness that was killed before its guards ran (its pid no longer exists;
/// trees of a live harness, e.g. a concurrent run, are left alone).
fn sweep_stale_cgroups(hierarchies: &[PathBuf]) {
    for h in hierarchies {
        let Ok(rd) = fs::read_dir(h) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("runc-rs-diff-")
                .and_then(|p| p.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("differential: removing stale cgroup {}", e.path().display());
                remove_cgroup_tree(&e.path());
            }
        }
    }
}

/// Suite-wide facts.
pub struct Suite {
    /// `/runc-rs-diff-<pid>`: parent of every case's cgroupsPath.
    pub cgroup_parent: String,
    pub hierarchies: Vec<PathBuf>,
    pub host_ns: BTreeMap<String, String>,
}

/// Removes the suite's cgroup parent from every hierarchy on drop.
struct SuiteGuard {
    dirs: Vec<PathBuf>,
}

impl Drop for SuiteGuard {
    fn drop(&mut self) {
        for d in &self.dirs {
            remove_cgroup_tree(d);
        }
        reap_zombies();
    }
}

/// One run: returns raw observations, the placeholders for them, the log.
fn run_one(
    case: &Case,
    rt: &Runtime,
    label: &str,
    suite: &Suite,
) -> (Observations, Placeholders, String) {
    let mut obs = Observations::new();
    let mut ph = Placeholders::default();
    let mut bundle = match testdata::Bundle::new() {
        Ok(b) => b,
        Err(e) => {
            obs.insert("host.outcome".into(), format!("harness error: bundle: {e}"));
            return (obs, ph, String::new());
        }
    };
    // Declared before the guard: dropped (removed) after it.
    let (root_dir, work_dir) = match (testdata::temp_dir(), testdata::temp_dir()) {
        (Ok(r), Ok(w)) => (r, w),
        _ => {
            obs.insert("host.outcome".into(), "harness error: temp dir".into());
            return (obs, ph, String::new());
        }
    };
    let cgpath = format!("{}/{}-{}", suite.cgroup_parent, label, case.name);
    let id = format!("diff-{}", case.name);
    let bundle_dir = bundle.dir.clone();
    for (p, name) in [
        (&bundle_dir, "<BUNDLE>"),
        (&root_dir.path().to_path_buf(), "<ROOT>"),
        (&work_dir.path().to_path_buf(), "<WORK>"),
    ] {
        ph.add(p.to_string_lossy(), name);
        if let Ok(c) = fs::canonicalize(p) {
            ph.add(c.to_string_lossy(), name);
        }
        // mountinfo shows a bind's root relative to its filesystem (e.g.
        // `/runc-rs-test-XXXX/rootfs` when the temp dir is on a tmpfs).
        if let Some(base) = p.file_name() {
            ph.add(format!("/{}", base.to_string_lossy()), name);
        }
    }
    ph.add(cgpath.clone(), "<CGROUP>");
    ph.add(suite.cgroup_parent.clone(), "<CGPARENT>");

    // The spec: default + script + our cgroup, then the case's mutation.
    let spec = &mut bundle.spec;
    spec["process"]["args"] = json!(["sh", "-c", script::build(case.script)]);
    spec["linux"]["cgroupsPath"] = json!("{{CGROUP}}");
    (case.mutate)(spec);
    substitute(
        spec,
        &[
            ("{{BUNDLE}}", bundle_dir.to_string_lossy().into_owned()),
            ("{{BB}}", script::BUSYBOX.to_string()),
            ("{{CGROUP}}", cgpath.clone()),
            ("{{HARNESS_PID}}", std::process::id().to_string()),
        ],
    );
    if let Err(e) = bundle.write_spec() {
        obs.insert(
            "host.outcome".into(),
            format!("harness error: write spec: {e}"),
        );
        return (obs, ph, String::new());
    }

    let mut run = Run {
        rt,
        root: root_dir.path().to_path_buf(),
        work: work_dir.path().to_path_buf(),
        bundle: bundle_dir.clone(),
        log: String::new(),
        n: 0,
    };
    let mut guard = ContainerGuard {
        rt,
        root: run.root.clone(),
        id: id.clone(),
        cgroup_dirs: suite
            .hierarchies
            .iter()
            .map(|h| h.join(cgpath.trim_start_matches('/')))
            .collect(),
        deleted: false,
    };

    // create, with the container's stdio: stdin a pipe we hold (the script
    // waits on it), stdout/stderr files.
    let (out_p, err_p, pid_p) = (
        run.work.join("container.out"),
        run.work.join("container.err"),
        run.work.join("pidfile"),
    );
    let mut stdin: Option<ChildStdin> = None;
    let create_ok = {
        let mut c = rt.command(&run.root);
        c.args(["create", "--bundle"])
            .arg(&bundle_dir)
            .arg("--pid-file")
            .arg(&pid_p)
            .arg(&id);
        c.current_dir(&bundle_dir).stdin(Stdio::piped());
        let spawned = fs::File::create(&out_p)
            .and_then(|o| Ok((o, fs::File::create(&err_p)?)))
            .and_then(|(o, e)| c.stdout(o).stderr(e).spawn());
        match spawned {
            Ok(mut child) => {
                stdin = child.stdin.take();
                let st = wait_timeout(&mut child, T_CREATE);
                let r = CmdResult {
                    status: st,
                    stdout: String::new(),
                    stderr: String::new(),
                };
                let _ = writeln!(run.log, "$ {} create {id}: {}", rt.desc, r.describe());
                r.ok()
            }
            Err(e) => {
                let _ = writeln!(run.log, "$ {} create: spawn failed: {e}", rt.desc);
                false
            }
        }
    };
    obs.insert(
        "host.create".into(),
        if create_ok {
            "ok".into()
        } else {
            "failed".into()
        },
    );

    let mut outcome = "ran";
    if create_ok {
        let st = run.rt(&["state", &id], T_SHORT);
        let pid = record_state(&mut obs, "created", &st);
        // pid file written by create
        let pf = fs::read_to_string(&pid_p)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok());
        obs.insert(
            "host.pidfile".into(),
            match (pf, pid) {
                (Some(a), Some(b)) if a == b => "matches state pid".into(),
                (Some(_), _) => "differs from state pid".into(),
                (None, _) => "missing or unparseable".into(),
            },
        );
        if let Some(pid) = pid {
            // Which cgroup the init is in, per hierarchy, as the host sees it.
            let cg = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
            for l in cg.lines() {
                let mut it = l.splitn(3, ':');
                let (_, ctrl, path) = (it.next(), it.next().unwrap_or(""), it.next().unwrap_or(""));
                let ctrl = if ctrl.is_empty() { "<unified>" } else { ctrl };
                obs.insert(format!("host.init_cgroup.{ctrl}"), path.to_string());
            }
            let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            for l in status.lines() {
                if let Some(("State", v)) = l.split_once(':') {
                    // Blocked before exec (e.g. "S (sleeping)"); record only the letter class.
                    let letter = v.trim().chars().next().unwrap_or('?');
                    obs.insert(
                        "host.init_alive_after_create".into(),
                        (letter != 'Z').to_string(),
                    );
                }
            }
        }
        let pure_v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
        let files = if pure_v2 { case.cgroup_v2_files } else { case.cgroup_files };
        for f in files {
            // v1: "<hierarchy>/<file>"; v2: "<file>" in the one hierarchy.
            let (h, file) = if pure_v2 { ("", *f) } else { f.split_once('/').unwrap_or((f, "")) };
            let p = Path::new("/sys/fs/cgroup")
                .join(h)
                .join(cgpath.trim_start_matches('/'))
                .join(file);
            let v = match fs::read_to_string(&p) {
                Ok(s) => cgroup_file_value(file, &s),
                Err(e) => format!("<unreadable: {}>", e.kind()),
            };
            obs.insert(format!("host.cgroup {f}"), v);
        }

        let start = run.rt(&["start", &id], T_SHORT);
        obs.insert(
            "host.start".into(),
            if start.ok() {
                "ok".into()
            } else {
                "failed".into()
            },
        );
        if !start.ok() {
            outcome = "start failed";
        }
        let st = run.rt(&["state", &id], T_SHORT);
        let _ = record_state(&mut obs, "started", &st);
        obs.retain(|k, _| {
            !k.starts_with("host.state.started.") || k == "host.state.started.status"
        });

        // Let the script go on, and close our end so a second read sees EOF.
        if let Some(mut w) = stdin.take() {
            let _ = w.write_all(b"go\n");
        }
        let exit = match pid {
            Some(pid) => wait_init(pid, T_EXIT),
            None => Exit::NotChild,
        };
        let exit_desc = match exit {
            Exit::Status(st) => describe_wait_status(st),
            Exit::Timeout => "timed out".into(),
            Exit::NotChild => {
                // Not reparented to us: poll the runtime instead.
                let t0 = Instant::now();
                loop {
                    let st = run.rt(&["state", &id], T_SHORT);
                    let stopped = serde_json::from_str::<Value>(&st.stdout)
                        .ok()
                        .and_then(|v| {
                            v.get("status")
                                .and_then(Value::as_str)
                                .map(|s| s == "stopped")
                        })
                        .unwrap_or(true);
                    if stopped || t0.elapsed() > T_EXIT {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                "unknown (init was not reparented to the harness)".into()
            }
        };
        obs.insert("host.exit".into(), exit_desc);
        if matches!(exit, Exit::Timeout) {
            run.rt(&["kill", &id, "KILL"], T_SHORT);
            outcome = "timed out";
        }
        let st = run.rt(&["state", &id], T_SHORT);
        record_state(&mut obs, "exited", &st);
        obs.retain(|k, _| !k.starts_with("host.state.exited.") || k == "host.state.exited.status");

        let del = run.rt(&["delete", &id], T_SHORT);
        obs.insert(
            "host.delete".into(),
            if del.ok() {
                "ok".into()
            } else {
                "failed".into()
            },
        );
        guard.deleted = del.ok();
    } else {
        outcome = "create failed";
    }
    drop(stdin);

    // Nothing may be left behind: state, state-root entries, cgroup dirs.
    let st = run.rt(&["state", &id], T_SHORT);
    obs.insert(
        "host.leftover.state".into(),
        if st.ok() {
            "container still known".into()
        } else {
            "gone".into()
        },
    );
    let mut entries: Vec<String> = fs::read_dir(&run.root)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    entries.sort();
    obs.insert("host.leftover.root".into(), entries.join(","));
    let left: Vec<String> = guard
        .cgroup_dirs
        .iter()
        .filter(|d| d.exists())
        .map(|d| {
            d.strip_prefix("/sys/fs/cgroup")
                .unwrap_or(d)
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    obs.insert("host.leftover.cgroup".into(), left.join(","));
    let orphans = live_children();
    obs.insert("host.leftover.processes".into(), orphans.len().to_string());
    if !orphans.is_empty() {
        let _ = writeln!(run.log, "leftover processes (killed): {orphans:?}");
        kill_children(&orphans);
    }

    // Hooks write here (see the hook cases).
    if let Ok(h) = fs::read_to_string(bundle_dir.join("hooks.log")) {
        obs.insert("host.hooks".into(), h.trim_end().to_string());
    }

    // What the container printed.
    let out = fs::read(&out_p).unwrap_or_default();
    let cobs = script::parse(&out);
    if outcome == "ran" && !(cobs.contains_key("marker.begin") && cobs.contains_key("marker.end")) {
        outcome = if cobs.contains_key("marker.begin") {
            "script did not finish"
        } else {
            "script did not run"
        };
    }
    obs.extend(cobs);
    obs.insert("host.outcome".into(), outcome.into());
    let err = fs::read_to_string(&err_p).unwrap_or_default();
    if !err.trim().is_empty() {
        let _ = writeln!(run.log, "container/runtime stderr:\n{}", err.trim_end());
    }
    let log = std::mem::take(&mut run.log);
    drop(guard);
    drop(root_dir);
    drop(work_dir);
    drop(bundle);
    (obs, ph, log)
}

/// Every case's outcome plus what to print.
pub struct SuiteReport {
    pub outcomes: Vec<CaseOutcome>,
    pub text: String,
    pub seconds: f64,
}

impl SuiteReport {
    pub fn all_passed(&self) -> bool {
        self.outcomes.iter().all(CaseOutcome::passed)
    }
}

fn write_report_file(dir: &Path, case: &str, label: &str, obs: &Observations) {
    let _ = fs::create_dir_all(dir);
    let mut s = String::new();
    for (k, v) in obs {
        let _ = writeln!(s, "{k} = {}", v.replace('\n', "\\n"));
    }
    let _ = fs::write(dir.join(format!("{case}.{label}.txt")), s);
}

/// Run `cases` (filtered by `$DIFF_CASES`) under both runtimes, sequentially.
///
/// Sets this process as a child subreaper (so container inits become our
/// children and their exit status is observable) and reaps orphans between
/// cases: call it from a test binary where no other test spawns processes.
pub fn run_suite(cases: &[Case], reference: &Runtime, test: &Runtime) -> SuiteReport {
    let t0 = Instant::now();
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let hierarchies = cgroup_hierarchies();
    let suite = Suite {
        cgroup_parent: format!("/runc-rs-diff-{}", std::process::id()),
        host_ns: host_namespaces(),
        hierarchies,
    };
    sweep_stale_cgroups(&suite.hierarchies);
    let _suite_guard = SuiteGuard {
        dirs: suite
            .hierarchies
            .iter()
            .map(|h| h.join(suite.cgroup_parent.trim_start_matches('/')))
            .collect(),
    };
    let filter: Vec<String> = std::env::var("DIFF_CASES")
        .unwrap_or_default()
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    let report_dir = std::env::var_os("DIFF_REPORT").map(PathBuf::from);
    let mut outcomes = Vec::new();
    for case in cases {
        if !filter.is_empty() && !filter.iter().any(|f| case.name.contains(f.as_str())) {
            continue;
        }
        let t = Instant::now();
        let (r_raw, r_ph, r_log) = run_one(case, reference, "ref", &suite);
        let tr = t.elapsed().as_secs_f64();
        reap_zombies();
        let t = Instant::now();
        let (t_raw, t_ph, t_log) = run_one(case, test, "test", &suite);
        let tt = t.elapsed().as_secs_f64();
        reap_zombies();
        let r = compare::normalise(&r_raw, &r_ph, &suite.host_ns);
        let tn = compare::normalise(&t_raw, &t_ph, &suite.host_ns);
        if let Some(d) = &report_dir {
            write_report_file(d, case.name, "ref", &r);
            write_report_file(d, case.name, "test", &tn);
        }
        let mut o = compare::compare(case, &r, &tn, &test.desc);
        o.reference_log = r_log;
        o.test_log = t_log;
        o.seconds = (tr, tt);
        let verdict = if !o.errors.is_empty() {
            "CASE ERROR".to_string()
        } else if o.diffs.is_empty() {
            "equal".to_string()
        } else {
            format!("{} difference(s)", o.diffs.len())
        };
        println!(
            "differential: {:<28} {:>4} keys  {:<18} ({:.2}s + {:.2}s)",
            case.name, o.keys, verdict, tr, tt
        );
        outcomes.push(o);
    }
    let text = compare::render(&outcomes, &reference.desc, &test.desc);
    SuiteReport {
        outcomes,
        text,
        seconds: t0.elapsed().as_secs_f64(),
    }
}
