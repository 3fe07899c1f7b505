//! The host side: driving a runtime through create/start/delete, observing
//! the container from the host, and cleaning up (Drop guards).

use super::compare::{self, CaseOutcome, Placeholders};
use super::script;
use super::{Case, Observations};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Stdio};
use std::time::{Duration, Instant};

use super::host::*;
use super::runcmd::*;

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

fn ok_or_failed(ok: bool) -> String {
    if ok { "ok" } else { "failed" }.into()
}

/// One run's files: the bundle, the runtime's state root, a work dir (the
/// container's stdout/stderr, the pid file), the cgroup path and the id.
/// The temp dirs are removed when this is dropped.
struct Workspace {
    bundle: testdata::Bundle,
    root_dir: tempfile::TempDir,
    work_dir: tempfile::TempDir,
    cgpath: String,
    id: String,
}

impl Workspace {
    fn out(&self) -> PathBuf {
        self.work_dir.path().join("container.out")
    }
    fn err(&self) -> PathBuf {
        self.work_dir.path().join("container.err")
    }
    fn pid_file(&self) -> PathBuf {
        self.work_dir.path().join("pidfile")
    }
}

/// The bundle of `case` (default spec + the script + our cgroup, then the
/// case's mutation) and the placeholders that make its paths comparable.
fn prepare(
    case: &Case,
    label: &str,
    suite: &Suite,
    ph: &mut Placeholders,
) -> Result<Workspace, String> {
    let bundle = testdata::Bundle::new().map_err(|e| format!("bundle: {e}"))?;
    let (root_dir, work_dir) = match (testdata::temp_dir(), testdata::temp_dir()) {
        (Ok(r), Ok(w)) => (r, w),
        _ => return Err("temp dir".into()),
    };
    let mut ws = Workspace {
        bundle,
        root_dir,
        work_dir,
        cgpath: format!("{}/{}-{}", suite.cgroup_parent, label, case.name),
        id: format!("diff-{}", case.name),
    };
    for (p, name) in [
        (ws.bundle.dir.clone(), "<BUNDLE>"),
        (ws.root_dir.path().to_path_buf(), "<ROOT>"),
        (ws.work_dir.path().to_path_buf(), "<WORK>"),
    ] {
        ph.add(p.to_string_lossy(), name);
        if let Ok(c) = fs::canonicalize(&p) {
            ph.add(c.to_string_lossy(), name);
        }
        // mountinfo shows a bind's root relative to its filesystem (e.g.
        // `/runc-rs-test-XXXX/rootfs` when the temp dir is on a tmpfs).
        if let Some(base) = p.file_name() {
            ph.add(format!("/{}", base.to_string_lossy()), name);
        }
    }
    ph.add(ws.cgpath.clone(), "<CGROUP>");
    ph.add(suite.cgroup_parent.clone(), "<CGPARENT>");

    let bundle_dir = ws.bundle.dir.clone();
    let spec = &mut ws.bundle.spec;
    spec["process"]["args"] = json!(["sh", "-c", script::build(case.script)]);
    spec["linux"]["cgroupsPath"] = json!("{{CGROUP}}");
    (case.mutate)(spec);
    substitute(
        spec,
        &[
            ("{{BUNDLE}}", bundle_dir.to_string_lossy().into_owned()),
            ("{{BB}}", script::BUSYBOX.to_string()),
            ("{{CGROUP}}", ws.cgpath.clone()),
            ("{{HARNESS_PID}}", std::process::id().to_string()),
        ],
    );
    ws.bundle
        .write_spec()
        .map_err(|e| format!("write spec: {e}"))?;
    Ok(ws)
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
    let ws = match prepare(case, label, suite, &mut ph) {
        Ok(ws) => ws,
        Err(e) => {
            obs.insert("host.outcome".into(), format!("harness error: {e}"));
            return (obs, ph, String::new());
        }
    };
    let mut run = Run {
        rt,
        root: ws.root_dir.path().to_path_buf(),
        work: ws.work_dir.path().to_path_buf(),
        bundle: ws.bundle.dir.clone(),
        log: String::new(),
        n: 0,
    };
    let mut guard = ContainerGuard {
        rt,
        root: run.root.clone(),
        id: ws.id.clone(),
        cgroup_dirs: suite
            .hierarchies
            .iter()
            .map(|h| h.join(ws.cgpath.trim_start_matches('/')))
            .collect(),
        deleted: false,
    };
    let mut stdin = create(&mut run, &ws);
    obs.insert("host.create".into(), ok_or_failed(stdin.is_some()));
    let outcome = if stdin.is_some() {
        lifecycle(case, &mut run, &ws, &mut obs, &mut stdin, &mut guard)
    } else {
        "create failed"
    };
    drop(stdin);
    observe_leftovers(&mut run, &ws, &guard, &mut obs);
    container_output(&ws, outcome, &mut obs, &mut run.log);
    let log = std::mem::take(&mut run.log);
    drop(guard);
    (obs, ph, log)
}

/// `create`, with the container's stdio: stdin a pipe we hold (the script
/// waits on it), stdout/stderr files. `None` when create failed.
fn create(run: &mut Run, ws: &Workspace) -> Option<Option<ChildStdin>> {
    let rt = run.rt;
    let mut c = rt.command(&run.root);
    c.args(["create", "--bundle"])
        .arg(&ws.bundle.dir)
        .arg("--pid-file")
        .arg(ws.pid_file())
        .arg(&ws.id);
    c.current_dir(&ws.bundle.dir).stdin(Stdio::piped());
    let spawned = fs::File::create(ws.out())
        .and_then(|o| Ok((o, fs::File::create(ws.err())?)))
        .and_then(|(o, e)| c.stdout(o).stderr(e).spawn());
    match spawned {
        Ok(mut child) => {
            let stdin = child.stdin.take();
            let st = wait_timeout(&mut child, T_CREATE);
            let r = CmdResult {
                status: st,
                stdout: String::new(),
                stderr: String::new(),
            };
            let _ = writeln!(run.log, "$ {} create {}: {}", rt.desc, ws.id, r.describe());
            r.ok().then_some(stdin)
        }
        Err(e) => {
            let _ = writeln!(run.log, "$ {} create: spawn failed: {e}", rt.desc);
            None
        }
    }
}

/// After a successful create: what the host sees, start, let the script
/// run to its end, delete. Returns the outcome.
fn lifecycle(
    case: &Case,
    run: &mut Run,
    ws: &Workspace,
    obs: &mut Observations,
    stdin: &mut Option<Option<ChildStdin>>,
    guard: &mut ContainerGuard,
) -> &'static str {
    let id = ws.id.as_str();
    let mut outcome = "ran";
    let st = run.rt(&["state", id], T_SHORT);
    let pid = record_state(obs, "created", &st);
    let pf = fs::read_to_string(ws.pid_file())
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
        observe_init(pid, obs);
    }
    observe_cgroup_files(case, &ws.cgpath, obs);

    let start = run.rt(&["start", id], T_SHORT);
    obs.insert("host.start".into(), ok_or_failed(start.ok()));
    if !start.ok() {
        outcome = "start failed";
    }
    let st = run.rt(&["state", id], T_SHORT);
    let _ = record_state(obs, "started", &st);
    obs.retain(|k, _| !k.starts_with("host.state.started.") || k == "host.state.started.status");

    // Let the script go on, and close our end so a second read sees EOF.
    if let Some(mut w) = stdin.take().flatten() {
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
            wait_stopped(run, id);
            "unknown (init was not reparented to the harness)".into()
        }
    };
    obs.insert("host.exit".into(), exit_desc);
    if matches!(exit, Exit::Timeout) {
        run.rt(&["kill", id, "KILL"], T_SHORT);
        outcome = "timed out";
    }
    let st = run.rt(&["state", id], T_SHORT);
    record_state(obs, "exited", &st);
    obs.retain(|k, _| !k.starts_with("host.state.exited.") || k == "host.state.exited.status");

    let del = run.rt(&["delete", id], T_SHORT);
    obs.insert("host.delete".into(), ok_or_failed(del.ok()));
    guard.deleted = del.ok();
    outcome
}

/// Which cgroup the init is in, per hierarchy, and whether it is alive
/// (blocked before exec), as the host sees it.
fn observe_init(pid: i32, obs: &mut Observations) {
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
            // Only the letter class (e.g. "S (sleeping)").
            let letter = v.trim().chars().next().unwrap_or('?');
            obs.insert(
                "host.init_alive_after_create".into(),
                (letter != 'Z').to_string(),
            );
        }
    }
}

/// The case's cgroup files (v1: `<hierarchy>/<file>`; v2: `<file>`).
fn observe_cgroup_files(case: &Case, cgpath: &str, obs: &mut Observations) {
    let pure_v2 = crate::hygiene::pure_cgroup_v2_host();
    let files = if pure_v2 {
        case.cgroup_v2_files
    } else {
        case.cgroup_files
    };
    for f in files {
        let (h, file) = if pure_v2 {
            ("", *f)
        } else {
            f.split_once('/').unwrap_or((f, ""))
        };
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
}

/// Init was not reparented to us: poll the runtime until it says stopped.
fn wait_stopped(run: &mut Run, id: &str) {
    let t0 = Instant::now();
    loop {
        let st = run.rt(&["state", id], T_SHORT);
        let stopped = serde_json::from_str::<Value>(&st.stdout)
            .ok()
            .and_then(|v| {
                v.get("status")
                    .and_then(Value::as_str)
                    .map(|s| s == "stopped")
            })
            .unwrap_or(true);
        if stopped || t0.elapsed() > T_EXIT {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Nothing may be left behind: state, state-root entries, cgroup dirs,
/// processes (killed if found); and what hooks wrote.
fn observe_leftovers(
    run: &mut Run,
    ws: &Workspace,
    guard: &ContainerGuard,
    obs: &mut Observations,
) {
    let st = run.rt(&["state", &ws.id], T_SHORT);
    obs.insert(
        "host.leftover.state".into(),
        if st.ok() {
            "container still known"
        } else {
            "gone"
        }
        .into(),
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
    if let Ok(h) = fs::read_to_string(ws.bundle.dir.join("hooks.log")) {
        obs.insert("host.hooks".into(), h.trim_end().to_string());
    }
}

/// What the container printed (its script's observations) and the final
/// outcome: a run whose script did not reach its end marker says so.
fn container_output(
    ws: &Workspace,
    outcome: &'static str,
    obs: &mut Observations,
    log: &mut String,
) {
    let out = fs::read(ws.out()).unwrap_or_default();
    let cobs = script::parse(&out);
    let mut outcome = outcome;
    if outcome == "ran" && !(cobs.contains_key("marker.begin") && cobs.contains_key("marker.end")) {
        outcome = if cobs.contains_key("marker.begin") {
            "script did not finish"
        } else {
            "script did not run"
        };
    }
    obs.extend(cobs);
    obs.insert("host.outcome".into(), outcome.into());
    let err = fs::read_to_string(ws.err()).unwrap_or_default();
    if !err.trim().is_empty() {
        let _ = writeln!(log, "container/runtime stderr:\n{}", err.trim_end());
    }
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
