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
