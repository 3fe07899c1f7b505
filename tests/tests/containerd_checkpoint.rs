//! Checkpoint and restore through stock containerd 1.6 and `ctr`, with
//! runc-rs as the runtime under each shim:
//!
//! - containerd's Go shim (`io.containerd.runc.v2 --runc-binary runc-rs`);
//! - our shim under its own runtime type (`io.containerd.runc.v2-rs`);
//! - our shim as the drop-in `containerd-shim-runc-v2`.
//!
//! A container appending a counter to a file is checkpointed with
//! `ctr containers checkpoint --task --rw` (ctr pauses it, the shim runs
//! `checkpoint --leave-running`, ctr resumes it), killed and removed, then
//! `ctr containers restore --live --rw` brings it back: the file must read
//! 1..=N without restart or gap, N growing after the restore. `ctr task
//! checkpoint --image-path` (and `--exit`) write criu images where asked;
//! ctr sends those options only for the runtime name `io.containerd.runc.v2`,
//! so they are tried through the Go shim and the drop-in. Our shim also
//! publishes `/tasks/checkpointed`, and refuses to checkpoint a stopped task
//! while serving on.
//!
//! Debian's criu cannot dump on this host's kernel: the tests marked
//! `#[ignore]` are run by `checkpoint_suite`, in place where `criu check`
//! passes, else in the cgroup v2 VM (`../shared/cgroup2-vm`).
//!
//! ```text
//! export CARGO_TARGET_DIR=/var/cache/runc-rs/target
//! cargo build --workspace --bins && cargo test -p integration-tests --test containerd_checkpoint
//! ```

use std::time::Duration;

use integration_tests::containerd::{describe, Containerd};
use integration_tests::runtime::is_root;
use integration_tests::shim_rs::{containerd_with, runc_rs, rust_shim_env, wait_until, CtrEvents};
use integration_tests::vm;

const COUNTER: &str = "i=0; while :; do i=$((i+1)); echo $i >> /count; sleep 0.1; done";
const SLOW: Duration = Duration::from_secs(90);

#[test]
fn checkpoint_suite() {
    if !is_root() {
        eprintln!("skipping: needs root");
        return;
    }
    vm::run_self_where_criu_works(&["--ignored", "--nocapture", "--test-threads=1"]);
}

fn ctr_ok(c: &Containerd, args: &[&str]) -> String {
    let out = c
        .ctr_timeout(args, SLOW)
        .unwrap_or_else(|e| panic!("ctr {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ctr {args:?}: {}\ncontainerd log tail:\n{}",
        describe(&out),
        tail(&c.log())
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The counter file as the container sees it (read by `ctr task exec`).
fn counts(c: &Containerd, id: &str) -> Vec<u64> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let exec_id = format!(
        "read{}",
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    );
    let out = c
        .ctr_timeout(
            &["task", "exec", "--exec-id", &exec_id, id, "cat", "/count"],
            SLOW,
        )
        .expect("ctr task exec");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn start_counter(c: &Containerd, id: &str) {
    let out = c
        .run(&["-d"], id, &["sh", "-c", COUNTER])
        .expect("ctr run -d");
    assert!(out.status.success(), "ctr run -d {id}: {}", describe(&out));
    wait_until("the counter to count", SLOW, || counts(c, id).len() >= 5);
}

/// Kill the task, remove it and the container.
fn remove(c: &Containerd, id: &str) {
    if c.task_status(id).is_some_and(|(_, s)| s != "STOPPED") {
        ctr_ok(c, &["task", "kill", "-s", "KILL", id]);
        assert!(
            c.wait_task_status(id, "STOPPED", SLOW),
            "{id} stopped after KILL"
        );
    }
    ctr_ok(c, &["task", "rm", id]);
    ctr_ok(c, &["containers", "rm", id]);
}

/// checkpoint --task --rw, remove, restore --live --rw: counting goes on.
fn live_restore(c: &Containerd, id: &str) {
    start_counter(c, id);
    let image = format!("localhost/checkpoint/{id}:1");
    ctr_ok(
        c,
        &["containers", "checkpoint", "--task", "--rw", id, &image],
    );
    // ctr paused the task around the dump and resumed it: it runs on.
    let (_, status) = c.task_status(id).expect("task listed");
    assert_eq!(status, "RUNNING", "after ctr containers checkpoint");
    let before = counts(c, id).len();
    wait_until("counting after the checkpoint", SLOW, || {
        counts(c, id).len() > before
    });
    remove(c, id);

    ctr_ok(c, &["containers", "restore", "--live", "--rw", id, &image]);
    let (rpid, rstatus) = c.task_status(id).expect("restored task listed");
    assert_eq!(rstatus, "RUNNING", "restored task");
    assert_ne!(rpid, 0, "restored task has a pid");
    let at_restore = counts(c, id).len();
    wait_until("counting after the restore", SLOW, || {
        counts(c, id).len() >= at_restore + 5
    });
    let all = counts(c, id);
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(
        all, expected,
        "{id}: counting went on from the checkpoint, without restart or gap"
    );
    remove(c, id);
}

/// `ctr task checkpoint --image-path` (leaves it running), then with
/// `--exit` (stops it); a stopped task is refused and the shim serves on.
fn image_path_and_exit(c: &Containerd, id: &str, events: Option<&CtrEvents>) {
    start_counter(c, id);
    let keep = c.dir().join(format!("{id}-keep"));
    let keep_s = keep.to_str().unwrap();
    ctr_ok(c, &["task", "checkpoint", "--image-path", keep_s, id]);
    assert!(
        keep.join("inventory.img").is_file(),
        "criu images in {keep_s}"
    );
    assert_eq!(c.task_status(id).map(|t| t.1).as_deref(), Some("RUNNING"));
    if let Some(ev) = events {
        let e = ev.wait_for("/tasks/checkpointed", id, SLOW);
        assert_eq!(e["checkpoint"], keep_s, "{e}");
    }

    let last = c.dir().join(format!("{id}-exit"));
    ctr_ok(
        c,
        &[
            "task",
            "checkpoint",
            "--exit",
            "--image-path",
            last.to_str().unwrap(),
            id,
        ],
    );
    assert!(
        last.join("inventory.img").is_file(),
        "criu images in {}",
        last.display()
    );
    assert!(
        c.wait_task_status(id, "STOPPED", SLOW),
        "--exit stopped the task"
    );

    let out = c
        .ctr_timeout(&["task", "checkpoint", "--image-path", keep_s, id], SLOW)
        .unwrap();
    assert!(
        !out.status.success(),
        "checkpoint of a stopped task refused"
    );
    let text = describe(&out);
    assert!(text.contains("stopped"), "{text}");
    assert!(
        c.task_status(id).is_some(),
        "the shim still serves after the refusal"
    );
    remove(c, id);
}

fn with_xdg(f: impl FnOnce(&[(&str, &str)])) {
    // containerd makes its checkpoint temp dirs in $XDG_RUNTIME_DIR: keep
    // them off the VM's shared /tmp.
    let xdg = testdata::temp_dir().expect("temp dir");
    let x = xdg.path().to_str().unwrap().to_owned();
    f(&[("XDG_RUNTIME_DIR", &x)]);
}

#[test]
#[ignore = "needs criu: run by checkpoint_suite"]
fn go_shim_with_runc_rs() {
    with_xdg(|env| {
        let mut c = Containerd::start_with_env(&runc_rs(), &[], env).expect("containerd");
        c.import_busybox().expect("import busybox");
        live_restore(&c, "go-live");
        image_path_and_exit(&c, "go-path", None);
    });
}

#[test]
#[ignore = "needs criu: run by checkpoint_suite"]
fn rust_shim_own_runtime_name() {
    with_xdg(|env| {
        let Some((c, _)) = rust_shim_env(env) else {
            return;
        };
        let events = CtrEvents::start(&c);
        live_restore(&c, "rs-live");
        let e = events.wait_for("/tasks/checkpointed", "rs-live", SLOW);
        assert!(
            e["checkpoint"].as_str().is_some_and(|p| !p.is_empty()),
            "{e}"
        );

        // Without options, containerd keeps the images in its content store.
        start_counter(&c, "rs-store");
        let name = ctr_ok(&c, &["task", "checkpoint", "rs-store"]);
        let name = name.trim();
        assert!(
            name.starts_with("containerd.io/checkpoint/rs-store"),
            "{name}"
        );
        assert!(
            ctr_ok(&c, &["images", "ls", "-q"])
                .lines()
                .any(|l| l.trim() == name),
            "{name} listed"
        );
        remove(&c, "rs-store");
    });
}

#[test]
#[ignore = "needs criu: run by checkpoint_suite"]
fn rust_shim_drop_in() {
    with_xdg(|env| {
        let rs = runc_rs();
        let Some((c, _)) = containerd_with("containerd-shim-runc-v2", Some(&rs), env) else {
            return;
        };
        let events = CtrEvents::start(&c);
        image_path_and_exit(&c, "di-path", Some(&events));
        live_restore(&c, "di-live");
    });
}
