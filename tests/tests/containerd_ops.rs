//! containerd 1.6 + its Go shim driving runc-rs beyond create/start/kill:
//! `ctr task exec` (plain and `-t`), `ctr task pause/resume`,
//! `ctr task metrics`, `ctr task ps`, and `ctr task exec` into a paused task
//! refused. The shim calls `runc-rs exec --process F --detach --pid-file P`
//! (`--console-socket S` with -t), `runc-rs pause/resume` and
//! `runc-rs ps --format json`.
//!
//! Run: `cargo build -p runc-rs && cargo test -p integration-tests --test containerd_ops`
//! (`E2E_RUNTIME=/usr/sbin/runc` checks the test itself against runc).

use std::process::Command;
use std::time::Duration;

use integration_tests::containerd::{
    default_timeout, describe, exit_code, go_shim, run_with_timeout, shell_quote, Containerd,
};

fn ctr_ok(c: &Containerd, args: &[&str]) -> String {
    let out = c.ctr(args).unwrap_or_else(|e| panic!("ctr {args:?}: {e}"));
    assert!(out.status.success(), "ctr {args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn task_exec_ps_pause_resume_metrics() {
    let Some(c) = go_shim() else { return };
    let id = "ops";
    let out = c
        .run(&["-d"], id, &["sh", "-c", "sleep 1000 & wait"])
        .unwrap_or_else(|e| panic!("ctr run -d: {e}"));
    assert!(out.status.success(), "ctr run -d: {}", describe(&out));
    let (pid, status) = c.task_status(id).expect("task listed");
    assert_eq!(status, "RUNNING");

    // exec: output relayed, exit status returned, in the task's cgroup and namespaces.
    let out = c
        .ctr(&[
            "task",
            "exec",
            "--exec-id",
            "e1",
            id,
            "sh",
            "-c",
            "echo from-exec; readlink /proc/self/ns/pid; cat /proc/self/cgroup; exit 3",
        ])
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(exit_code(&out.status), 3, "{}", describe(&out));
    assert!(text.starts_with("from-exec\n"), "{}", describe(&out));
    let init_pidns = std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap();
    assert!(
        text.contains(&init_pidns.display().to_string()),
        "exec joined the task's pid namespace: {text}"
    );
    assert!(
        text.contains(&c.cgroups().child(id)),
        "exec in the task's cgroup: {text}"
    );

    // exec -t: on a pty, through the shim's console socket.
    let argv = c.ctr_argv(&[
        "task",
        "exec",
        "-t",
        "--exec-id",
        "e2",
        id,
        "sh",
        "-c",
        "tty; echo tty-exec; exit 4",
    ]);
    let line: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
    let out = run_with_timeout(
        Command::new("script").args(["-q", "-e", "-c", &line.join(" "), "/dev/null"]),
        default_timeout(),
    )
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/") && text.contains("tty-exec"),
        "{}",
        describe(&out)
    );
    assert_eq!(exit_code(&out.status), 4, "{}", describe(&out));

    // ps: the shim asks the runtime (`ps --format json`).
    let ps = ctr_ok(&c, &["task", "ps", id]);
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().next() == Some(&pid.to_string())),
        "init in ctr task ps: {ps}"
    );
    assert!(ps.lines().count() >= 3, "init and its sleep: {ps}");

    // pause / resume: the freezer, seen by containerd.
    ctr_ok(&c, &["task", "pause", id]);
    assert!(
        c.wait_task_status(id, "PAUSED", Duration::from_secs(10)),
        "{:?}",
        c.task_status(id)
    );
    let frozen = c
        .cgroups()
        .dirs()
        .iter()
        .map(|d| d.join(id).join("freezer.state"))
        .find(|f| f.exists());
    if let Some(f) = frozen {
        assert_eq!(std::fs::read_to_string(f).unwrap().trim(), "FROZEN");
    }
    let out = c
        .ctr(&["task", "exec", "--exec-id", "e3", id, "true"])
        .unwrap();
    assert!(
        !out.status.success(),
        "exec into a paused task: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("paused"),
        "{}",
        describe(&out)
    );
    ctr_ok(&c, &["task", "resume", id]);
    assert!(
        c.wait_task_status(id, "RUNNING", Duration::from_secs(10)),
        "{:?}",
        c.task_status(id)
    );

    // metrics: the shim reads the cgroup of the task.
    let m = ctr_ok(&c, &["task", "metrics", id]);
    assert!(
        m.contains(id) && (m.contains("memory") || m.contains("pids")),
        "ctr task metrics: {m}"
    );
    let j = ctr_ok(&c, &["task", "metrics", "--format", "json", id]);
    assert!(j.contains("\"pids\"") || j.contains("\"memory\""), "{j}");

    ctr_ok(&c, &["task", "kill", "-s", "KILL", id]);
    assert!(
        c.wait_task_status(id, "STOPPED", Duration::from_secs(15)),
        "{:?}",
        c.task_status(id)
    );
    ctr_ok(&c, &["task", "rm", id]);
    ctr_ok(&c, &["container", "rm", id]);
}
