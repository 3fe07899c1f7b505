//! containerd 1.6 + its Go shim (`io.containerd.runc.v2`) driving the
//! runtime under test through `ctr run --runc-binary`.
//!
//! The runtime is runc-rs (`$RUNC_RS_BIN` or the one cargo built); set
//! `E2E_RUNTIME=/usr/sbin/runc` to check these tests against runc. Every
//! test starts its own containerd (see `integration_tests::containerd`),
//! which is torn down even when the test fails. Needs root; a missing
//! runtime binary fails the tests.
//!
//! Run: `cargo test -p integration-tests --test containerd_go_shim`

use std::fs;
use std::time::{Duration, Instant};

use integration_tests::containerd::{describe, exit_code, go_shim};

#[test]
fn run_rm_prints_output_and_propagates_exit_code() {
    let Some(c) = go_shim() else { return };
    let out = c
        .run(&["--rm"], "rm-exit", &["sh", "-c", "echo hi; exit 3"])
        .unwrap_or_else(|e| panic!("ctr run: {e}"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi\n",
        "container output not relayed: {}",
        describe(&out)
    );
    assert_eq!(
        exit_code(&out.status),
        3,
        "exit code not propagated: {}",
        describe(&out)
    );
    // --rm: nothing left behind.
    assert!(c.task_status("rm-exit").is_none(), "task left after --rm");
    assert!(
        !c.containers().contains(&"rm-exit".to_owned()),
        "container left after --rm"
    );

    // A zero exit is zero, and stdout/stderr stay apart.
    let out = c
        .run(
            &["--rm"],
            "rm-ok",
            &["sh", "-c", "echo to-out; echo to-err >&2"],
        )
        .unwrap_or_else(|e| panic!("ctr run: {e}"));
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "to-out\n",
        "{}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("to-err"),
        "{}",
        describe(&out)
    );
}

#[test]
fn detached_task_lifecycle() {
    let Some(c) = go_shim() else { return };
    let id = "detached";
    let log = c.log_file(id);
    let log_uri = format!("file://{}", log.display());
    // SIGTERM is ignored by a PID 1 without a handler: install one.
    let script = "echo started; trap 'echo got-term; exit 5' TERM; while true; do sleep 1; done";
    let out = c
        .run(&["-d", "--log-uri", &log_uri], id, &["sh", "-c", script])
        .unwrap_or_else(|e| panic!("ctr run -d: {e}"));
    assert!(
        out.status.success(),
        "ctr run -d failed: {}",
        describe(&out)
    );

    let (pid, status) = c.task_status(id).expect("task listed by ctr task ls");
    assert_eq!(
        status,
        "RUNNING",
        "ctr task ls: {:?}",
        c.ctr(&["task", "ls"]).map(|o| describe(&o))
    );
    assert!(pid > 0, "task has no pid");
    let cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("task pid alive");
    assert!(
        cgroup.contains(&c.cgroups().child(id)),
        "task not in cgroup {}:\n{cgroup}",
        c.cgroups().child(id)
    );
    wait_for_file_containing(&log, "started", Duration::from_secs(10));

    let out = c
        .ctr(&["task", "kill", id])
        .unwrap_or_else(|e| panic!("ctr task kill: {e}"));
    assert!(out.status.success(), "ctr task kill: {}", describe(&out));
    assert!(
        c.wait_task_status(id, "STOPPED", Duration::from_secs(15)),
        "task not STOPPED after SIGTERM: {:?}",
        c.task_status(id)
    );
    wait_for_file_containing(&log, "got-term", Duration::from_secs(5));

    let out = c
        .ctr(&["task", "rm", id])
        .unwrap_or_else(|e| panic!("ctr task rm: {e}"));
    assert!(out.status.success(), "ctr task rm: {}", describe(&out));
    // ctr reports a non-zero exit status of the deleted task as a warning.
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("non-zero exit code 5"),
        "exit status 5 not reported by ctr task rm: {}",
        describe(&out)
    );
    assert!(
        c.task_status(id).is_none(),
        "task still listed after ctr task rm"
    );

    let out = c
        .ctr(&["container", "rm", id])
        .unwrap_or_else(|e| panic!("ctr container rm: {e}"));
    assert!(out.status.success(), "ctr container rm: {}", describe(&out));
    assert!(
        !c.containers().contains(&id.to_owned()),
        "container still listed after rm"
    );
}

#[test]
fn run_with_tty() {
    let Some(c) = go_shim() else { return };
    let out = c
        .run_tty("tty", &["sh", "-c", "tty; echo tty-ok; exit 4"])
        .unwrap_or_else(|e| panic!("ctr run -t: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("/dev/pts/"),
        "tty did not report a pts: {}",
        describe(&out)
    );
    assert!(
        text.contains("tty-ok"),
        "no output through the tty: {}",
        describe(&out)
    );
    assert!(
        !text.contains("not a tty"),
        "stdin is not a tty: {}",
        describe(&out)
    );
    assert_eq!(
        exit_code(&out.status),
        4,
        "exit code not propagated with -t: {}",
        describe(&out)
    );
    assert!(c.task_status("tty").is_none(), "task left after --rm");
}

fn wait_for_file_containing(path: &std::path::Path, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let text = fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{needle:?} not in {} after {timeout:?}; it holds:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
