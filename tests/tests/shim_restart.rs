//! containerd restarting under running containers (an upgrade, a crash, a
//! `systemctl restart`), with the Rust shim and, for comparison, the Go
//! shim, both driving runc-rs:
//!
//! * the shims and their containers go on while containerd is down;
//! * a container writing to its stdout after its reader went away (ctr
//!   killed, containerd stopped) is not killed by SIGPIPE: the shim owns
//!   the pipe the container writes to;
//! * a container that exits while containerd is down is reaped, and the
//!   new containerd learns of it twice, as the Go shim tells it: the
//!   TaskExit event, retried until containerd listens again, and the exit
//!   status in Delete's answer;
//! * the new containerd drives the running container: `ctr task attach`
//!   to its stdout, exec, kill (with its
//!   TaskExit), delete; nothing is left behind;
//! * a shim that died while containerd was down is cleaned up after by the
//!   new containerd through the shim binary's `delete`: its container is
//!   killed, its runtime state, cgroup and rootfs mount go, and the
//!   container record can be removed.
//!
//! Needs root and the binaries `cargo build --workspace --bins` makes.
//!
//! Run: `cargo test -p integration-tests --test shim_restart`

use std::fs;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use integration_tests::containerd::{describe, go_shim, stop_child, Containerd};
use integration_tests::shim_rs::{
    assert_clean, ppid, rust_shim, shim_socket, shims, wait_until, CtrEvents,
};

/// The counter the talker container keeps in its own `/tmp/n` (renamed
/// into place, so never read half-written).
fn talker_count(pid: u32) -> Option<u64> {
    fs::read_to_string(format!("/proc/{pid}/root/tmp/n"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether `pid`'s counter still goes up (the container still runs and
/// writes).
fn still_counting(pid: u32) -> bool {
    let Some(before) = talker_count(pid) else {
        return false;
    };
    thread::sleep(Duration::from_millis(400));
    talker_count(pid).is_some_and(|after| after > before)
}

/// Run `argv` (a ctr command) in the background, its stdout into `out`.
fn spawn_ctr(argv: &[String], out: &std::path::Path) -> Child {
    Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(fs::File::create(out).expect("output file"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {argv:?}: {e}"))
}

/// Wait until `out` holds at least three of the talker's numbers.
fn wait_for_count_lines(what: &str, out: &std::path::Path) {
    wait_until(what, Duration::from_secs(20), || {
        fs::read_to_string(out)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.parse::<u64>().is_ok())
            .count()
            >= 3
    });
}

/// Whether process `pid` exists (a zombie counts).
fn exists(pid: impl std::fmt::Display) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The TaskExit of container `id`'s init (not of its execs), waited for.
fn init_exit(events: &CtrEvents, id: &str, timeout: Duration) -> serde_json::Value {
    let find = || {
        events
            .of("/tasks/exit", id)
            .into_iter()
            .find(|e| e["id"] == id)
    };
    wait_until(&format!("the TaskExit of {id}"), timeout, || {
        find().is_some()
    });
    find().expect("found")
}

/// Returns where containerd's log of the restarted daemon begins.
fn restart_checks(c: &mut Containerd) -> usize {
    // `ctr run`, attached, of a container writing a number to its stdout
    // every 50 ms.
    let script = "i=0; while :; do i=$((i+1)); echo $i; echo $i > /tmp/n.new; mv /tmp/n.new /tmp/n; sleep 0.05; done";
    let out_file = c.dir().join("talker.out");
    let mut ctr = spawn_ctr(&c.run_argv(&[], "talker", &["sh", "-c", script]), &out_file);
    wait_for_count_lines("the talker's output through ctr", &out_file);
    let (talker, status) = c.task_status("talker").expect("talker listed");
    assert_eq!(status, "RUNNING");

    let script = "trap 'exit 7' USR1; while :; do sleep 0.1; done";
    let out = c
        .run(&["-d"], "quitter", &["sh", "-c", script])
        .unwrap_or_else(|e| panic!("ctr run -d: {e}"));
    assert!(out.status.success(), "ctr run -d: {}", describe(&out));
    let (quitter, _) = c.task_status("quitter").expect("quitter listed");
    // Its trap is set once SIGUSR1 is caught (SigCgt bit 10).
    wait_until("the quitter's trap", Duration::from_secs(10), || {
        fs::read_to_string(format!("/proc/{quitter}/status"))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            .is_some_and(|m| m & (1 << (libc::SIGUSR1 - 1)) != 0)
    });

    // The reader of the talker's stdout goes (SIGKILL: ctr would forward
    // a SIGTERM to the container), then containerd.
    unsafe { libc::kill(ctr.id() as i32, libc::SIGKILL) };
    let _ = ctr.wait();
    c.stop_daemon();

    // containerd is down: the quitter exits, its shim reaps it.
    unsafe { libc::kill(quitter as i32, libc::SIGUSR1) };
    wait_until("the quitter to be reaped", Duration::from_secs(10), || {
        !exists(quitter)
    });
    assert!(
        still_counting(talker),
        "the talker stopped writing once its reader and containerd were gone"
    );

    let log_mark = c.log().len();
    c.start_daemon()
        .unwrap_or_else(|e| panic!("restart containerd: {e}"));
    let events = CtrEvents::start(c);
    assert_eq!(
        c.task_status("talker"),
        Some((talker, "RUNNING".to_owned())),
        "{:?}",
        c.ctr(&["task", "ls"]).map(|o| describe(&o))
    );
    assert_eq!(
        c.task_status("quitter").map(|(_, s)| s),
        Some("STOPPED".to_owned())
    );
    // Sent while containerd was down, retried until it listened again
    // (containerd's debug log: a subscriber might come too late for it).
    wait_until(
        "containerd to be forwarded the quitter's TaskExit",
        Duration::from_secs(30),
        || {
            c.log()[log_mark..]
                .lines()
                .any(|l| l.contains("event forwarded") && l.contains("topic=/tasks/exit"))
        },
    );

    // The talker's stdout, kept open by its shim, can be attached to again.
    let attached = c.dir().join("attached.out");
    let mut attach = spawn_ctr(&c.ctr_argv(&["task", "attach", "talker"]), &attached);
    wait_for_count_lines("the talker's output through ctr task attach", &attached);
    // SIGKILL: ctr would forward a SIGTERM to the container.
    unsafe { libc::kill(attach.id() as i32, libc::SIGKILL) };
    let _ = attach.wait();

    let n = c.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "after",
        "talker",
        "cat",
        "/tmp/n",
    ]);
    assert!(
        n.trim().parse::<u64>().is_ok(),
        "exec after the restart: {n:?}"
    );
    assert!(
        still_counting(talker),
        "the talker stopped after the restart"
    );

    c.ctr_ok(&["task", "kill", "--signal", "SIGKILL", "talker"]);
    let exit = init_exit(&events, "talker", Duration::from_secs(10));
    assert_eq!(exit["exit_status"], 137, "{exit}");
    for (id, code) in [("quitter", 7), ("talker", 137)] {
        let out = c
            .ctr(&["task", "delete", id])
            .unwrap_or_else(|e| panic!("ctr task delete {id}: {e}"));
        // ctr prints a non-zero exit status that Delete answered with.
        let text = describe(&out);
        assert!(
            out.status.success() && text.contains(&format!("exit code {code}")),
            "ctr task delete {id}: {text}"
        );
        c.ctr_ok(&["containers", "rm", id]);
    }
    assert_clean(c, &["talker", "quitter"]);
    drop(events);
    stop_child(&mut ctr, Duration::from_secs(1));
    log_mark
}

/// `go_leaves_socket`: the Go shim's `delete` does not remove the socket
/// of a shim that died (its next `start` on the address would); ours does.
fn dead_shim_checks(c: &mut Containerd, go_leaves_socket: bool) {
    let out = c
        .run(
            &["-d"],
            "orphan",
            &["sh", "-c", "while :; do sleep 0.1; done"],
        )
        .unwrap_or_else(|e| panic!("ctr run -d: {e}"));
    assert!(out.status.success(), "ctr run -d: {}", describe(&out));
    let (init, _) = c.task_status("orphan").expect("orphan listed");
    let shim = ppid(init);
    assert!(shims(c).contains(&shim), "{shim} is not a shim of ours");
    let socket = shim_socket(c, "orphan").expect("the orphan's shim socket");

    c.stop_daemon();
    unsafe { libc::kill(shim, libc::SIGKILL) };
    wait_until("the shim to die", Duration::from_secs(10), || !exists(shim));
    assert!(exists(init), "the container died with its shim");

    c.start_daemon()
        .unwrap_or_else(|e| panic!("restart containerd: {e}"));
    // containerd ran `<shim> delete` for the bundle while loading.
    wait_until(
        "the container to be killed",
        Duration::from_secs(10),
        || !exists(init),
    );
    assert_eq!(c.task_status("orphan"), None);
    c.ctr_ok(&["containers", "rm", "orphan"]);
    assert_clean(c, &["orphan"]);
    if go_leaves_socket {
        let _ = fs::remove_file(&socket);
    } else {
        assert!(!socket.exists(), "{} left behind", socket.display());
    }
}

#[test]
fn rust_shim_dead_during_a_restart_is_cleaned_up() {
    let Some((mut c, _)) = rust_shim() else {
        return;
    };
    dead_shim_checks(&mut c, false);
}

#[test]
fn go_shim_dead_during_a_restart_is_cleaned_up() {
    let Some(mut c) = go_shim() else { return };
    dead_shim_checks(&mut c, true);
}

#[test]
fn rust_shim_survives_a_containerd_restart() {
    let Some((mut c, _)) = rust_shim() else {
        return;
    };
    let log_mark = restart_checks(&mut c);
    // The quitter's shim logged while containerd was down (its event not
    // taken); its log FIFO, reopened by the new containerd, still carries
    // what it logs after (its last line, on the way out).
    let log = c.log();
    assert!(
        log[log_mark..]
            .lines()
            .any(|l| l.contains("msg=\"shutting down\"") && l.contains("id=quitter")),
        "no log line of the quitter's shim after the restart:\n{}",
        &log[log_mark..]
    );
}

/// The same with containerd's Go shim: what the Rust shim must match.
#[test]
fn go_shim_survives_a_containerd_restart() {
    let Some(mut c) = go_shim() else { return };
    restart_checks(&mut c);
}
