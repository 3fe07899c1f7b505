//! ps, pause/resume, update, events, kill --all and delete --force,
//! differentially against Debian's runc (each scenario under both, outputs
//! normalised and compared), plus the refusals: each a clear error that
//! leaves the container as it was.
//!
//! Run: `cargo build -p runc-rs && cargo test -p integration-tests --test runc_rs_ops`

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use integration_tests::pair::{cgroup_file, json_shape, last_err, run_detached, stdout_ok, Pair};
use integration_tests::runtime::{wait_for, Cli};
use serde_json::{json, Value};

fn three_procs(cli: &Cli, id: &str) -> integration_tests::pair::Running {
    run_detached(
        cli,
        id,
        &["sh", "-c", "sleep 1000 & sleep 1001 & wait"],
        |_| {},
    )
}

#[test]
fn ps_like_runc() {
    let Some(p) = Pair::new() else { return };
    let mut seen = vec![];
    for (rt, cli) in p.both() {
        let c = three_procs(cli, "o-ps");
        assert!(
            wait_for(5, || {
                let j = stdout_ok(cli, &cli.run(&["ps", "--format", "json", &c.id]));
                serde_json::from_str::<Vec<i32>>(&j)
                    .map(|v| v.len() == 3)
                    .unwrap_or(false)
            }),
            "{rt}: three processes"
        );
        let json: Vec<i32> =
            serde_json::from_str(&stdout_ok(cli, &cli.run(&["ps", "-f", "json", &c.id]))).unwrap();
        assert!(json.contains(&c.pid), "{rt}");
        // Default table: `ps -ef` filtered; custom ps options after the id.
        let table = stdout_ok(cli, &cli.run(&["ps", &c.id]));
        assert!(
            table.starts_with("UID") && table.lines().count() == 4,
            "{rt}: {table}"
        );
        let comm = stdout_ok(cli, &cli.run(&["ps", &c.id, "-o", "pid,comm,args"]));
        let comm: String = comm
            .lines()
            .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" ") + "\n")
            .collect();
        let bad = cli.run(&["ps", "-f", "yaml", &c.id]);
        assert_eq!(bad.status.code(), Some(1), "{rt}");
        seen.push((comm, last_err(&bad)));
    }
    assert_eq!(seen[0], seen[1], "runc (left), runc-rs (right)");
    assert_eq!(seen[1].1, "invalid format option");
}

#[test]
fn pause_resume_like_runc() {
    let Some(p) = Pair::new() else { return };
    let mut msgs = vec![];
    for (rt, cli) in p.both() {
        let c = three_procs(cli, "o-pause");
        stdout_ok(cli, &cli.run(&["pause", &c.id]));
        assert_eq!(cli.state(&c.id).unwrap()["status"], "paused", "{rt}");
        assert_eq!(
            cgroup_file(cli, &c.id, "freezer/freezer.state"),
            "FROZEN",
            "{rt}"
        );
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", c.pid)).unwrap();
        let list: Vec<Value> =
            serde_json::from_str(&stdout_ok(cli, &cli.run(&["list", "--format", "json"]))).unwrap();
        assert_eq!(list[0]["status"], "paused", "{rt}");
        let again = cli.run(&["pause", &c.id]);
        stdout_ok(cli, &cli.run(&["resume", &c.id]));
        assert_eq!(cli.state(&c.id).unwrap()["status"], "running", "{rt}");
        assert_eq!(
            cgroup_file(cli, &c.id, "freezer/freezer.state"),
            "THAWED",
            "{rt}"
        );
        let resume_again = cli.run(&["resume", &c.id]);
        // A paused container can be force-deleted (thaw + kill).
        stdout_ok(cli, &cli.run(&["pause", &c.id]));
        stdout_ok(cli, &cli.run(&["delete", "--force", &c.id]));
        assert!(cli.state(&c.id).is_none(), "{rt}");
        assert!(cli.cgroup_dirs(&c.id).is_empty(), "{rt}: cgroup removed");
        assert!(
            wait_for(5, || !std::path::Path::new(&format!("/proc/{}", c.pid))
                .exists()
                || std::fs::read_to_string(format!("/proc/{}/stat", c.pid))
                    .map(|s| s.contains(") Z"))
                    .unwrap_or(true)),
            "{rt}: {stat}"
        );
        let gone = cli.run(&["pause", &c.id]);
        msgs.push(vec![
            again.status.code(),
            resume_again.status.code(),
            gone.status.code(),
        ]);
        let texts = [last_err(&again), last_err(&resume_again), last_err(&gone)];
        assert_eq!(
            texts,
            [
                "container not running",
                "container not paused",
                "container does not exist"
            ],
            "{rt}"
        );
    }
    assert_eq!(msgs[0], msgs[1]);
}

/// The cgroup v1 files `update` writes, as read after each step.
const FILES: &[&str] = &[
    "memory/memory.limit_in_bytes",
    "memory/memory.memsw.limit_in_bytes",
    "memory/memory.soft_limit_in_bytes",
    "cpu/cpu.shares",
    "cpu/cpu.cfs_period_us",
    "cpu/cpu.cfs_quota_us",
    "cpuset/cpuset.cpus",
    "pids/pids.max",
    "blkio/blkio.bfq.weight",
];

fn files(cli: &Cli, id: &str) -> Vec<String> {
    FILES
        .iter()
        .map(|f| format!("{f}={}", cgroup_file(cli, id, f)))
        .collect()
}

#[test]
fn update_like_runc() {
    let Some(p) = Pair::new() else { return };
    // Kernels without BFQ have no blkio weight file: there a weight is
    // refused (by both runtimes), so it is tried among the refusals.
    let weight = Path::new("/sys/fs/cgroup/blkio/blkio.bfq.weight").exists()
        || Path::new("/sys/fs/cgroup/blkio/blkio.weight").exists();
    let mut second = vec![
        "--cpu-period",
        "100000",
        "--cpu-quota",
        "50000",
        "--cpuset-cpus",
        "0",
        "--pids-limit",
        "42",
    ];
    if weight {
        second.extend(["--blkio-weight", "300"]);
    }
    let mut steps: Vec<&[&str]> = vec![
        &[
            "--memory",
            "64m",
            "--memory-swap",
            "128m",
            "--memory-reservation",
            "32m",
            "--cpu-share",
            "512",
        ],
        &second,
        &["--cpu-quota", "20000"],
        &["--cpu-period", "50000"],
        &["--memory", "48M"],
        &["--memory", "-1"],
        &["--pids-limit", "-1", "--kernel-memory", "10m"],
        &["--resources", "{FILE}"],
        &["--resources", "-"],
        // Refused: each leaves every file as it was.
        &["--memory", "abc"],
        &["--cpu-share", "abc"],
        &["--pids-limit", "abc"],
        &["--cpu-quota", "500"],
        &["--cpuset-cpus", "99"],
        &["--memory", "64m", "--memory-swap", "32m"],
        &["--l3-cache-schema", "L3:0=f"],
    ];
    if !weight {
        steps.push(&["--blkio-weight", "300"]);
    }
    let dir = testdata::temp_dir().unwrap();
    let file = dir.path().join("resources.json");
    std::fs::write(
        &file,
        json!({"memory": {"limit": 33554432}, "cpu": {"shares": 256}, "pids": {"limit": 10}})
            .to_string(),
    )
    .unwrap();
    let stdin_json =
        json!({"memory": {"limit": 40000000, "reservation": 20000000}, "cpu": {"cpus": "0-1"}})
            .to_string();
    let mut seen: Vec<Vec<(Option<i32>, Vec<String>)>> = vec![];
    for (rt, cli) in p.both() {
        let c = run_detached(cli, "o-upd", &["sleep", "1000"], |_| {});
        let mut these = vec![];
        for step in &steps {
            let args: Vec<String> = step
                .iter()
                .map(|a| a.replace("{FILE}", file.to_str().unwrap()))
                .collect();
            let mut all: Vec<&str> = vec!["update"];
            all.extend(args.iter().map(String::as_str));
            all.push(&c.id);
            let mut child = cli
                .command(&all)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            // Steps that do not read stdin may exit before we write: a
            // broken pipe is then expected, not a failure.
            match child.stdin.take().unwrap().write_all(stdin_json.as_bytes()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                r => r.unwrap(),
            }
            let out = child.wait_with_output().unwrap();
            if out.status.success() {
                assert!(
                    out.stdout.is_empty(),
                    "{rt} {step:?}: update prints nothing"
                );
            } else {
                assert!(!last_err(&out).is_empty(), "{rt} {step:?}: a message");
            }
            these.push((out.status.code(), files(cli, &c.id)));
        }
        if rt == "runc-rs" {
            // The new values are the container's recorded resources.
            let st: Value = serde_json::from_slice(
                &std::fs::read(cli.root.path().join(&c.id).join("state.json")).unwrap(),
            )
            .unwrap();
            let r = &st["config"]["linux"]["resources"];
            assert_eq!(
                (
                    r["memory"]["limit"].clone(),
                    r["pids"]["limit"].clone(),
                    r["cpu"]["cpus"].clone()
                ),
                (json!(40000000), json!(10), json!("0-1")),
                "{r}"
            );
            assert_eq!(r["cpu"]["period"], json!(50000), "{r}");
        }
        assert_eq!(cli.state(&c.id).unwrap()["status"], "running", "{rt}");
        seen.push(these);
    }
    for (i, step) in steps.iter().enumerate() {
        let (runc, rs) = (&seen[0][i], &seen[1][i]);
        assert_eq!(
            runc.0, rs.0,
            "update {step:?}: exit status of runc (left) and runc-rs (right)"
        );
        if rs.0 == Some(0) {
            assert_eq!(
                runc.1, rs.1,
                "update {step:?}: cgroup files under runc (left) and runc-rs (right)"
            );
        } else {
            // runc may write part of a refused update (memory before a
            // failing memsw); runc-rs checks everything first.
            assert_eq!(
                rs.1,
                seen[1][i - 1].1,
                "update {step:?}: refused, nothing changed"
            );
        }
    }
}

#[test]
fn update_and_events_of_a_stopped_container_refused_like_runc() {
    let Some(p) = Pair::new() else { return };
    let mut msgs = vec![];
    for (rt, cli) in p.both() {
        let mut b = testdata::Bundle::with_args(&["true"]).unwrap();
        cli.place(&mut b.spec, "o-stop");
        b.write_spec().unwrap();
        stdout_ok(
            cli,
            &cli.run_detached(&["run", "-d", "--bundle", b.dir.to_str().unwrap(), "o-stop"]),
        );
        let c = integration_tests::pair::Running {
            id: "o-stop".into(),
            pid: 0,
            bundle: b,
        };
        assert!(
            wait_for(10, || cli
                .state(&c.id)
                .is_some_and(|s| s["status"] == "stopped")),
            "{rt}"
        );
        let u = cli.run(&["update", "--memory", "64m", &c.id]);
        let e = cli.run(&["events", "--stats", &c.id]);
        let i = cli.run(&["events", "--interval", "0s", &c.id]);
        msgs.push((
            u.status.code(),
            last_err(&u),
            e.status.code(),
            last_err(&e),
            i.status.code(),
            last_err(&i),
        ));
    }
    assert_eq!(msgs[0], msgs[1]);
    assert_eq!(msgs[1].1, "container not running");
}

#[test]
fn events_stats_json_like_runc() {
    let Some(p) = Pair::new() else { return };
    let mut docs = vec![];
    for (rt, cli) in p.both() {
        let c = run_detached(cli, "o-stats", &["sh", "-c", "sleep 1000 & wait"], |s| {
            s["linux"]["resources"]["pids"] = json!({"limit": 100});
            s["linux"]["resources"]["memory"] = json!({"limit": 134217728});
        });
        let out = stdout_ok(cli, &cli.run(&["events", "--stats", &c.id]));
        assert_eq!(out.lines().count(), 1, "{rt}: one JSON line");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            (v["type"].as_str(), v["id"].as_str()),
            (Some("stats"), Some("o-stats")),
            "{rt}"
        );
        assert_eq!(
            v["data"]["pids"],
            json!({"current": 2, "limit": 100}),
            "{rt}"
        );
        assert_eq!(
            v["data"]["memory"]["usage"]["limit"],
            json!(134217728),
            "{rt}"
        );
        docs.push(v);
    }
    let (a, b) = (json_shape(&docs[0]), json_shape(&docs[1]));
    // Keys that Go leaves out when zero may come and go with the load
    // (blkio entries, cache, throttling, ...); everything both printed has
    // the same type, and the fixed structure is the same.
    for (k, t) in &a {
        if let Some(u) = b.get(k) {
            assert_eq!(t, u, "type of {k}");
        }
    }
    let fixed = |m: &std::collections::BTreeMap<String, &str>| -> Vec<String> {
        m.keys()
            .filter(|k| {
                k.matches('/').count() <= 3
                    && !k.starts_with("/data/blkio/")
                    && !k.contains("/throttling/")
            })
            .cloned()
            .collect()
    };
    let omit_zero = [
        "/data/memory/cache",
        "/data/cpu/usage/percpu_user",
        "/data/cpu/usage/percpu_kernel",
    ];
    let (fa, fb): (Vec<String>, Vec<String>) = (
        fixed(&a)
            .into_iter()
            .filter(|k| !omit_zero.iter().any(|z| k.starts_with(z)))
            .collect(),
        fixed(&b)
            .into_iter()
            .filter(|k| !omit_zero.iter().any(|z| k.starts_with(z)))
            .collect(),
    );
    assert_eq!(fa, fb, "runc (left) and runc-rs (right) keys");
    let raw_keys = |d: &Value| {
        d["data"]["memory"]["raw"]
            .as_object()
            .map(|m| m.keys().cloned().collect::<Vec<_>>())
    };
    assert_eq!(raw_keys(&docs[0]), raw_keys(&docs[1]), "memory.raw keys");
}

#[test]
fn events_stream_stats_and_oom_like_runc() {
    let Some(p) = Pair::new() else { return };
    for (rt, cli) in p.both() {
        let c = run_detached(cli, "o-oom", &["sleep", "1000"], |s| {
            s["linux"]["resources"]["memory"] = json!({"limit": 16777216, "swap": 16777216});
        });
        let mut ev = cli
            .command(&["events", "--interval", "300ms", &c.id])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let reader = {
            let lines = lines.clone();
            let out = ev.stdout.take().unwrap();
            std::thread::spawn(move || {
                for l in BufReader::new(out).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(l);
                }
            })
        };
        let has = |t: &str| {
            lines.lock().unwrap().iter().any(|l| {
                serde_json::from_str::<Value>(l).is_ok_and(|v| v["type"] == t && v["id"] == "o-oom")
            })
        };
        assert!(wait_for(20, || has("stats")), "{rt}: periodic stats");
        // A process that outgrows the limit is OOM-killed: one oom event.
        let _ = cli.run(&["exec", &c.id, "sh", "-c", "x=a; while :; do x=$x$x; done"]);
        assert!(
            wait_for(20, || has("oom")),
            "{rt}: oom event in {:?}",
            lines.lock().unwrap()
        );
        // The stream ends with the container's cgroup.
        stdout_ok(cli, &cli.run(&["delete", "--force", &c.id]));
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(s) = ev.try_wait().unwrap() {
                break Some(s);
            }
            if Instant::now() > deadline {
                let _ = ev.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(
            status.is_some_and(|s| s.success()),
            "{rt}: events ends when the container is gone ({status:?})"
        );
        reader.join().unwrap();
    }
}

#[test]
fn kill_all_like_runc() {
    let Some(p) = Pair::new() else { return };
    for (rt, cli) in p.both() {
        let c = three_procs(cli, "o-kill");
        let pids: Vec<i32> =
            serde_json::from_str(&stdout_ok(cli, &cli.run(&["ps", "-f", "json", &c.id]))).unwrap();
        assert_eq!(pids.len(), 3, "{rt}");
        stdout_ok(cli, &cli.run(&["kill", "--all", &c.id, "KILL"]));
        assert!(
            wait_for(10, || cli
                .state(&c.id)
                .is_some_and(|s| s["status"] == "stopped")),
            "{rt}"
        );
        assert!(
            wait_for(10, || stdout_ok(
                cli,
                &cli.run(&["ps", "-f", "json", &c.id])
            )
            .trim()
                == "null"),
            "{rt}: no process left"
        );
        stdout_ok(cli, &cli.run(&["delete", &c.id]));
    }
}

#[test]
fn checkpoint_without_criu_is_refused_like_runc() {
    let Some(p) = Pair::new() else { return };
    let empty = testdata::temp_dir().unwrap();
    let mut msgs = vec![];
    for (rt, cli) in p.both() {
        let c = run_detached(cli, "o-nocriu", &["sleep", "1000"], |_| {});
        let img = c.bundle.dir.join("img");
        let no_path = cli
            .command(&["checkpoint", "--image-path", img.to_str().unwrap(), &c.id])
            .env("PATH", empty.path())
            .output()
            .unwrap();
        let bogus = cli.run(&[
            "--criu",
            "/nonexistent/criu",
            "checkpoint",
            "--image-path",
            img.to_str().unwrap(),
            &c.id,
        ]);
        assert_eq!(
            cli.state(&c.id).unwrap()["status"],
            "running",
            "{rt}: container unchanged"
        );
        assert_eq!(cli.state(&c.id).unwrap()["pid"], json!(c.pid), "{rt}");
        msgs.push((
            no_path.status.code(),
            last_err(&no_path),
            bogus.status.code(),
            last_err(&bogus),
        ));
    }
    assert_eq!(msgs[0], msgs[1]);
    assert!(
        msgs[1].1.contains("CRIU version check failed"),
        "{:?}",
        msgs[1]
    );
}
