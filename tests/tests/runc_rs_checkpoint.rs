//! checkpoint / restore through criu: a container appending a counter to a
//! file is pre-dumped, dumped (it is gone), restored, and must go on
//! counting from where it stopped (the file is 1..=M with no restart and no
//! gap); exec works in the restored container; `--leave-running` keeps the
//! container; a foreground restore returns the container's exit status.
//!
//! Debian's criu 3.17 cannot dump on this host's kernel (`criu check`
//! fails), so when `criu check` fails the test re-runs itself in the
//! throwaway cgroup v2 VM (`../shared/cgroup2-vm`), where it passes:
//!
//! ```text
//! export CARGO_TARGET_DIR=/var/cache/runc-rs/target
//! cargo build -p runc-rs && cargo test -p integration-tests --test runc_rs_checkpoint
//! ```
//!
//! `CGROUP2_VM` names the VM runner (default `<repo>/../shared/cgroup2-vm/run-in-cgroup2-vm.sh`).

use std::process::{Command, Stdio};
use std::time::Duration;

use integration_tests::runtime::{is_root, runc_rs_bin, wait_for, Cli};
use integration_tests::vm;
use testdata::Bundle;

/// Runs test `name` of this binary in the cgroup v2 VM unless criu works
/// here; true if it did.
fn rerun_in_vm(name: &str) -> bool {
    if vm::criu_here() {
        return false;
    }
    vm::run_self_where_criu_works(&["--exact", name, "--nocapture", "--test-threads=1"]);
    true
}

/// A runc-rs CLI whose state root is on a local tmpfs (/run), not on the
/// VM's shared /tmp.
fn cli() -> Cli {
    let root = tempfile::Builder::new()
        .prefix("runc-rs-cr-")
        .tempdir_in("/run")
        .unwrap();
    let log = root.path().join("runtime.log");
    Cli {
        bin: runc_rs_bin(),
        log,
        cgroup_parent: testdata::host::cgroup_name("cr"),
        root,
    }
}

fn ok(what: &str, out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A command that leaves a container behind: its stdio is /dev/null (a
/// container's stdio must be something criu can dump: /dev/null, which init
/// re-opens inside the container, or pipes), errors are in the log.
fn detached(cli: &Cli, args: &[&str]) {
    let status = cli
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{args:?}: {}", cli.log_text());
}

fn counts(b: &Bundle) -> Vec<u64> {
    std::fs::read_to_string(b.rootfs().join("count.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn counter_bundle(cli: &Cli, id: &str) -> Bundle {
    let mut b = Bundle::with_args(&[
        "sh",
        "-c",
        "i=0; while :; do i=$((i+1)); echo $i >> /count.log; sleep 0.1; done",
    ])
    .unwrap();
    b.spec["root"]["readonly"] = serde_json::json!(false);
    cli.place(&mut b.spec, id);
    b.write_spec().unwrap();
    b
}

#[test]
fn checkpoint_restore_counter_continues() {
    if !is_root() || rerun_in_vm("checkpoint_restore_counter_continues") {
        return;
    }
    let cli = cli();
    let id = "cr";
    let b = counter_bundle(&cli, id);
    let bundle = b.dir.to_str().unwrap();
    detached(&cli, &["run", "-d", "--bundle", bundle, id]);
    assert!(wait_for(60, || counts(&b).len() >= 5), "counter started");
    let img = b.dir.join("img");
    let work = b.dir.join("work");
    let (img_s, work_s) = (img.to_str().unwrap(), work.to_str().unwrap());

    // A pre-dump leaves the container running.
    ok(
        "pre-dump",
        &cli.run(&[
            "checkpoint",
            "--pre-dump",
            "--image-path",
            &format!("{img_s}/pre"),
            "--work-path",
            work_s,
            id,
        ]),
    );
    assert_eq!(cli.state(id).unwrap()["status"], "running");

    // The dump (on top of the pre-dump) stops and removes the container.
    let final_img = format!("{img_s}/final");
    ok(
        "dump",
        &cli.run(&[
            "checkpoint",
            "--image-path",
            &final_img,
            "--parent-path",
            "../pre",
            "--work-path",
            work_s,
            id,
        ]),
    );
    assert!(cli.state(id).is_none(), "checkpointed container removed");
    assert!(cli.cgroup_dirs(id).is_empty(), "its cgroup removed");
    let stopped_at = counts(&b);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(counts(&b), stopped_at, "nothing counts while checkpointed");
    let n = *stopped_at.last().unwrap();

    let pidfile = b.dir.join("restored.pid");
    detached(
        &cli,
        &[
            "restore",
            "-d",
            "--image-path",
            &final_img,
            "--work-path",
            work_s,
            "--bundle",
            bundle,
            "--pid-file",
            pidfile.to_str().unwrap(),
            id,
        ],
    );
    let st = cli.state(id).expect("restored container listed");
    assert_eq!(st["status"], "running");
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap(),
        st["pid"].to_string()
    );
    assert!(
        wait_for(60, || counts(&b).len() as u64 >= n + 5),
        "counter resumed"
    );
    let all = counts(&b);
    let expected: Vec<u64> = (1..=all.len() as u64).collect();
    assert_eq!(
        all, expected,
        "counting went on from {n}, without restart or gap"
    );

    // The restored container is a container: exec joins it, its cgroup is ours.
    let out = cli.run(&[
        "exec",
        id,
        "sh",
        "-c",
        "cat /proc/self/cgroup; tail -n 1 /count.log",
    ]);
    ok("exec after restore", &out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("/{}/{id}", cli.cgroup_parent)),
        "exec'd process in the container's cgroup: {text}"
    );

    // --leave-running: an image, and the container goes on.
    let keep = format!("{img_s}/keep");
    ok(
        "checkpoint --leave-running",
        &cli.run(&[
            "checkpoint",
            "--leave-running",
            "--image-path",
            &keep,
            "--work-path",
            work_s,
            id,
        ]),
    );
    assert_eq!(cli.state(id).unwrap()["status"], "running");
    ok("delete -f", &cli.run(&["delete", "--force", id]));

    // A foreground restore waits for the container and returns its status.
    let mut fg = cli
        .command(&[
            "restore",
            "--image-path",
            &keep,
            "--work-path",
            work_s,
            "--bundle",
            bundle,
            id,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_for(60, || cli
            .state(id)
            .is_some_and(|s| s["status"] == "running")),
        "foreground restore running"
    );
    ok("kill", &cli.run(&["kill", id, "KILL"]));
    let status = fg.wait().unwrap();
    assert_eq!(status.code(), Some(137), "the restored container's status");
    assert!(
        cli.state(id).is_none(),
        "a foreground restore deletes the container after"
    );
}

#[test]
fn checkpoint_refusals() {
    if !is_root() || rerun_in_vm("checkpoint_refusals") {
        return;
    }
    let cli = cli();
    let b = counter_bundle(&cli, "crc");
    let bundle = b.dir.to_str().unwrap();
    detached(&cli, &["create", "--bundle", bundle, "crc"]);
    let img = b.dir.join("img");
    let img_s = img.to_str().unwrap();
    let out = cli.run(&["checkpoint", "--image-path", img_s, "crc"]);
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("Container cannot be checkpointed in created state"));
    ok("start", &cli.run(&["start", "crc"]));
    for (args, msg) in [
        (
            vec!["--parent-path", "/abs"],
            "--parent-path must be relative",
        ),
        (vec!["--parent-path", "missing"], "invalid --parent-path"),
        (
            vec!["--manage-cgroups-mode", "bogus"],
            "Invalid manage cgroups mode",
        ),
        (
            vec!["--empty-ns", "pid"],
            "namespace \"pid\" is not supported",
        ),
    ] {
        let mut a = vec!["checkpoint", "--image-path", img_s];
        a.extend(args);
        a.push("crc");
        let out = cli.run(&a);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(msg),
            "{msg}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            cli.state("crc").unwrap()["status"],
            "running",
            "container unchanged"
        );
    }
    // A restore from a directory holding no checkpoint: refused, nothing created.
    let out = cli.run(&[
        "restore",
        "--console-socket",
        "/tmp/none.sock",
        "--image-path",
        img_s,
        "--bundle",
        bundle,
        "crc2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(cli.state("crc2").is_none());
}

/// Receives the pty master sent to a console socket.
fn recv_master(listener: &std::os::unix::net::UnixListener) -> std::fs::File {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let (conn, _) = listener.accept().unwrap();
    let mut buf = [0u8; 256];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([i32; 1]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .unwrap();
    for c in msg.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(fds) = c {
            return std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        }
    }
    panic!("no fd received");
}

/// Numbers printed as "n=<i>" on a pty, collected by a thread until EOF/EIO.
fn collect(
    master: std::fs::File,
) -> (
    std::sync::Arc<std::sync::Mutex<Vec<u64>>>,
    std::thread::JoinHandle<()>,
) {
    use std::io::BufRead;
    let seen = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
    let s = seen.clone();
    let h = std::thread::spawn(move || {
        for line in std::io::BufReader::new(master)
            .lines()
            .map_while(Result::ok)
        {
            if let Some(n) = line.trim().strip_prefix("n=").and_then(|v| v.parse().ok()) {
                s.lock().unwrap().push(n);
            }
        }
    });
    (seen, h)
}

#[test]
fn checkpoint_restore_terminal_container_with_hooks() {
    if !is_root() || rerun_in_vm("checkpoint_restore_terminal_container_with_hooks") {
        return;
    }
    let cli = cli();
    let id = "crt";
    let mut b = Bundle::with_args(&[
        "sh",
        "-c",
        "i=0; while :; do i=$((i+1)); echo n=$i; sleep 0.1; done",
    ])
    .unwrap();
    let hooks_log = b.dir.join("hooks.log");
    b.spec["root"]["readonly"] = serde_json::json!(false);
    b.spec["process"]["terminal"] = serde_json::json!(true);
    b.spec["hooks"] = serde_json::json!({"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", format!("cat >/dev/null; echo prestart >> {}", hooks_log.display())]}]});
    cli.place(&mut b.spec, id);
    b.write_spec().unwrap();
    let bundle = b.dir.to_str().unwrap();
    // Sockets on a local fs (the VM's /tmp is a 9p share, which has none).
    let sock = cli.root.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let runner = std::thread::spawn({
        let cli_args = vec![
            "run".to_owned(),
            "-d".into(),
            "--console-socket".into(),
            sock.display().to_string(),
            "--bundle".into(),
            bundle.to_owned(),
            id.to_owned(),
        ];
        let cmd_bin = cli.bin.clone();
        let (root, log) = (cli.root.path().to_owned(), cli.log.clone());
        move || {
            Command::new(cmd_bin)
                .arg("--root")
                .arg(root)
                .arg("--log")
                .arg(log)
                .args(cli_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
        }
    });
    let (before, reader) = collect(recv_master(&listener));
    assert!(
        runner.join().unwrap().success(),
        "run -d: {}",
        cli.log_text()
    );
    assert!(
        wait_for(60, || before.lock().unwrap().len() >= 5),
        "counter on the pty"
    );

    let img = b.dir.join("img");
    ok(
        "dump",
        &cli.run(&["checkpoint", "--image-path", img.to_str().unwrap(), id]),
    );
    reader.join().unwrap();
    let n = *before.lock().unwrap().last().unwrap();
    assert!(cli.state(id).is_none());

    let sock2 = cli.root.path().join("console2.sock");
    let listener2 = std::os::unix::net::UnixListener::bind(&sock2).unwrap();
    let restorer = std::thread::spawn({
        let args = vec![
            "restore".to_owned(),
            "-d".into(),
            "--console-socket".into(),
            sock2.display().to_string(),
            "--image-path".into(),
            img.display().to_string(),
            "--bundle".into(),
            bundle.to_owned(),
            id.to_owned(),
        ];
        let cmd_bin = cli.bin.clone();
        let (root, log) = (cli.root.path().to_owned(), cli.log.clone());
        move || {
            Command::new(cmd_bin)
                .arg("--root")
                .arg(root)
                .arg("--log")
                .arg(log)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
        }
    });
    let (after, _reader2) = collect(recv_master(&listener2));
    assert!(
        restorer.join().unwrap().success(),
        "restore -d --console-socket: {}",
        cli.log_text()
    );
    assert!(
        wait_for(60, || after.lock().unwrap().len() >= 3),
        "counter on the new pty"
    );
    let after = after.lock().unwrap().clone();
    assert_eq!(
        after[0],
        n + 1,
        "the restored counter goes on from {n}: {after:?}"
    );
    assert!(after.windows(2).all(|w| w[1] == w[0] + 1), "{after:?}");
    // prestart ran at create and again at restore (criu's setup-namespaces).
    assert_eq!(
        std::fs::read_to_string(&hooks_log).unwrap(),
        "prestart\nprestart\n"
    );
    ok("delete -f", &cli.run(&["delete", "--force", id]));
}
