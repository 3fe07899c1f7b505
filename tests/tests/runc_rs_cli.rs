//! runc-rs's command line against the real kernel: lifecycle, state JSON,
//! list, kill, pid file, console socket, hooks, logging, preserved fds.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::process::Stdio;

use integration_tests::runtime::{assert_ok, is_root, pass_as_fd3, wait_for, Cli};
use serde_json::json;

#[test]
fn lifecycle_create_start_kill_delete() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let b = cli.bundle("life", &["sleep", "1000"]);
    let bdir = b.dir.to_str().unwrap();
    assert_ok(&cli.run_detached(&["create", "--bundle", bdir, "life"]));
    let st = cli.state("life").expect("state after create");
    assert_eq!(st["status"], "created");
    assert_eq!(st["id"], "life");
    assert!(st["pid"].as_i64().unwrap() > 0);
    assert_eq!(st["bundle"], json!(bdir));
    assert!(st["created"].as_str().unwrap().ends_with('Z'));
    assert!(
        !cli.cgroup_dirs("life").is_empty(),
        "cgroup exists while the container lives"
    );
    let pid = st["pid"].as_i64().unwrap();
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cgroup.contains(&format!("/{}/life", cli.cgroup_parent)),
        "init placed in its cgroup: {cgroup}"
    );

    // A created container cannot be deleted without the process ending, but
    // start works once and only once.
    assert_ok(&cli.run(&["start", "life"]));
    assert_eq!(cli.state("life").unwrap()["status"], "running");
    let again = cli.run(&["start", "life"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already running"));

    let del = cli.run(&["delete", "life"]);
    assert!(
        !del.status.success(),
        "delete of a running container needs --force"
    );
    assert!(String::from_utf8_lossy(&del.stderr).contains("not stopped"));

    assert_ok(&cli.run(&["kill", "life", "KILL"]));
    assert!(wait_for(10, || cli
        .state("life")
        .map(|s| s["status"] == "stopped")
        .unwrap_or(false)));
    assert_ok(&cli.run(&["delete", "life"]));
    assert!(cli.state("life").is_none());
    assert!(
        cli.cgroup_dirs("life").is_empty(),
        "cgroup removed by delete"
    );
    assert!(!cli.root.path().join("life").exists(), "state dir removed");
    let gone = cli.run(&["state", "life"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("does not exist"));
}

#[test]
fn run_foreground_prints_output_and_returns_exit_code() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let b = cli.bundle(
        "fg",
        &["sh", "-c", "echo out-line; echo err-line >&2; exit 7"],
    );
    let out = cli.run(&["run", "--bundle", b.dir.to_str().unwrap(), "fg"]);
    assert_eq!(out.status.code(), Some(7));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out-line\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err-line"));
    assert!(
        cli.state("fg").is_none(),
        "run deletes the container after it exits"
    );
    assert!(cli.cgroup_dirs("fg").is_empty());
}

#[test]
fn run_foreground_forwards_signals() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let b = cli.bundle(
        "sig",
        &[
            "sh",
            "-c",
            "trap 'echo got-term; exit 9' TERM; echo ready; while true; do sleep 0.1; done",
        ],
    );
    let mut child = cli
        .command(&["run", "--bundle", b.dir.to_str().unwrap(), "sig"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut buf = [0u8; 6];
    stdout.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"ready\n");
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).unwrap();
    assert!(
        rest.contains("got-term"),
        "the container saw the forwarded SIGTERM: {rest:?}"
    );
    assert_eq!(status.code(), Some(9));
}

#[test]
fn detached_run_list_and_kill_all() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let b = cli.bundle("det", &["sh", "-c", "sleep 1000 & sleep 1000"]);
    let pidfile = b.dir.join("pid");
    assert_ok(&cli.run_detached(&[
        "run",
        "-d",
        "--pid-file",
        pidfile.to_str().unwrap(),
        "--bundle",
        b.dir.to_str().unwrap(),
        "det",
    ]));
    let st = cli.state("det").unwrap();
    assert_eq!(st["status"], "running");
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap(),
        st["pid"].to_string()
    );

    let table = String::from_utf8(cli.run(&["list"]).stdout).unwrap();
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("ID")
            && header.contains("PID")
            && header.contains("STATUS")
            && header.contains("OWNER")
    );
    let row = lines.next().unwrap();
    assert!(
        row.starts_with("det ") && row.contains("running") && row.contains("root"),
        "{row}"
    );
    let quiet = String::from_utf8(cli.run(&["list", "-q"]).stdout).unwrap();
    assert_eq!(quiet, "det\n");
    let js: serde_json::Value =
        serde_json::from_slice(&cli.run(&["list", "--format", "json"]).stdout).unwrap();
    assert_eq!(js[0]["id"], "det");
    assert_eq!(js[0]["status"], "running");

    assert_ok(&cli.run(&["kill", "--all", "det", "9"]));
    assert!(wait_for(10, || cli
        .state("det")
        .map(|s| s["status"] == "stopped")
        .unwrap_or(false)));
    assert_ok(&cli.run(&["delete", "det"]));
    assert!(cli.cgroup_dirs("det").is_empty());
}

#[test]
fn delete_force_of_running_and_created_containers() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let b1 = cli.bundle("f1", &["sleep", "1000"]);
    assert_ok(&cli.run_detached(&["run", "-d", "--bundle", b1.dir.to_str().unwrap(), "f1"]));
    let pid = cli.state("f1").unwrap()["pid"].as_i64().unwrap();
    assert_ok(&cli.run(&["delete", "--force", "f1"]));
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap()
                .contains(") Z")
    );
    assert!(cli.cgroup_dirs("f1").is_empty());

    let b2 = cli.bundle("f2", &["true"]);
    assert_ok(&cli.run_detached(&["create", "--bundle", b2.dir.to_str().unwrap(), "f2"]));
    assert_ok(&cli.run(&["delete", "f2"]));
    assert!(cli.state("f2").is_none());
    assert!(cli.cgroup_dirs("f2").is_empty());
    // Deleting what does not exist: an error, unless forced.
    assert!(!cli.run(&["delete", "nope"]).status.success());
    assert_ok(&cli.run(&["delete", "--force", "nope"]));
}

#[test]
fn console_socket_receives_the_pty_master() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let mut b = cli.bundle("tty", &["sh", "-c", "tty; echo tty-ok"]);
    b.spec["process"]["terminal"] = json!(true);
    b.write_spec().unwrap();
    let sock_path = b.dir.join("console.sock");
    let listener = UnixListener::bind(&sock_path).unwrap();
    let accept = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut buf = [0u8; 256];
        let mut iov = [std::io::IoSliceMut::new(&mut buf)];
        let mut space = nix::cmsg_space!([i32; 1]);
        let msg = nix::sys::socket::recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            nix::sys::socket::MsgFlags::empty(),
        )
        .unwrap();
        for c in msg.cmsgs().unwrap() {
            if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
                return unsafe { OwnedFd::from_raw_fd(fds[0]) };
            }
        }
        panic!("no fd received");
    });
    assert_ok(&cli.run_detached(&[
        "create",
        "--console-socket",
        sock_path.to_str().unwrap(),
        "--bundle",
        b.dir.to_str().unwrap(),
        "tty",
    ]));
    let master = accept.join().unwrap();
    assert_ok(&cli.run(&["start", "tty"]));
    let mut f = std::fs::File::from(master);
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    // Read until the slave side closes (EIO) or the marker arrives.
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
        if String::from_utf8_lossy(&out).contains("tty-ok") {
            break;
        }
    }
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("/dev/pts/0"),
        "the process's stdio is the pty: {text:?}"
    );
    assert!(text.contains("tty-ok"));
}

#[test]
fn hooks_run_in_order_with_state_on_stdin() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let mut b = cli.bundle("hooks", &["true"]);
    let log = b.dir.join("hooks.log");
    let hook = |name: &str| json!({"path": "/bin/sh", "args": ["sh", "-c", format!("read s; echo \"{name} $s\" >> {}", log.display())]});
    b.spec["hooks"] = json!({
        "prestart": [hook("prestart")],
        "createRuntime": [hook("createRuntime")],
        "createContainer": [hook("createContainer")],
        "poststart": [hook("poststart")],
        "poststop": [hook("poststop")],
    });
    b.write_spec().unwrap();
    assert_ok(&cli.run(&["run", "--bundle", b.dir.to_str().unwrap(), "hooks"]));
    let text = std::fs::read_to_string(&log).unwrap();
    let order: Vec<&str> = text.lines().map(|l| l.split(' ').next().unwrap()).collect();
    assert_eq!(
        order,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "poststart",
            "poststop"
        ]
    );
    for line in text.lines() {
        let state: serde_json::Value =
            serde_json::from_str(line.split_once(' ').unwrap().1).unwrap();
        assert_eq!(state["id"], "hooks");
        assert_eq!(state["bundle"], json!(b.dir.to_str().unwrap()));
    }
}

#[test]
fn failing_hook_fails_create_and_leaves_nothing() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let mut b = cli.bundle("badhook", &["true"]);
    b.spec["hooks"] = json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "echo boom >&2; exit 3"]}]});
    b.write_spec().unwrap();
    let out = cli.run_detached(&["create", "--bundle", b.dir.to_str().unwrap(), "badhook"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("createRuntime") && err.contains("boom"),
        "{err}"
    );
    assert!(!cli.root.path().join("badhook").exists());
    assert!(cli.cgroup_dirs("badhook").is_empty());
}

#[test]
fn hook_timeout_is_enforced() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let mut b = cli.bundle("slowhook", &["true"]);
    b.spec["hooks"] =
        json!({"prestart": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]});
    b.write_spec().unwrap();
    let out = cli.run_detached(&["create", "--bundle", b.dir.to_str().unwrap(), "slowhook"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
    assert!(!cli.root.path().join("slowhook").exists());
}

#[test]
fn json_log_has_the_error_line() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let out = cli.run(&["start", "missing-container"]);
    assert_eq!(out.status.code(), Some(1));
    let last = cli
        .log_text()
        .lines()
        .last()
        .map(str::to_owned)
        .expect("a log line");
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["level"], "error");
    assert!(v["msg"].as_str().unwrap().contains("does not exist"));
    assert!(v["time"].is_string());
}

#[test]
fn preserve_fds_passes_exactly_the_named_fds() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let b = cli.bundle(
        "fds",
        &[
            "sh",
            "-c",
            "ls /proc/self/fd | sort -n | tr '\\n' ' '; cat <&3",
        ],
    );
    let extra = b.dir.join("extra");
    std::fs::write(&extra, "via-fd-3").unwrap();
    let f = std::fs::File::open(&extra).unwrap();
    let mut cmd = cli.command(&[
        "run",
        "--preserve-fds",
        "1",
        "--bundle",
        b.dir.to_str().unwrap(),
        "fds",
    ]);
    pass_as_fd3(&mut cmd, &f);
    let out = cmd.output().unwrap();
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    // 0-2 stdio, 3 the preserved file, and the fd `ls` opens for the dir.
    assert!(text.starts_with("0 1 2 3 4 "), "{text}");
    assert!(
        !text.starts_with("0 1 2 3 4 5"),
        "no runtime fd leaks: {text}"
    );
    assert!(text.ends_with("via-fd-3"));
}

#[test]
fn no_pivot_root_runs() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let b = cli.bundle("nopivot", &["sh", "-c", "echo ok-$(hostname)"]);
    let out = cli.run(&[
        "run",
        "--no-pivot",
        "--bundle",
        b.dir.to_str().unwrap(),
        "nopivot",
    ]);
    assert_ok(&out);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok-runc\n");
}

#[test]
fn spec_and_features() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let dir = testdata::temp_dir().unwrap();
    assert_ok(&cli.run(&["spec", "--bundle", dir.path().to_str().unwrap()]));
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(spec["process"]["args"], json!(["sh"]));
    assert_eq!(spec["root"]["path"], "rootfs");
    let again = cli.run(&["spec", "--bundle", dir.path().to_str().unwrap()]);
    assert!(
        !again.status.success(),
        "spec refuses to overwrite config.json"
    );
    let dir2 = testdata::temp_dir().unwrap();
    assert_ok(&cli.run(&[
        "spec",
        "--rootless",
        "--bundle",
        dir2.path().to_str().unwrap(),
    ]));
    let rl: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir2.path().join("config.json")).unwrap()).unwrap();
    assert!(rl["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "user"));
    assert!(rl["linux"]["uidMappings"].is_array());

    let f: serde_json::Value = serde_json::from_slice(&cli.run(&["features"]).stdout).unwrap();
    assert_eq!(f["ociVersionMin"], "1.0.0");
    let ns = f["linux"]["namespaces"].as_array().unwrap();
    assert!(ns.contains(&json!("user")) && ns.contains(&json!("cgroup")));
    assert!(f["linux"]["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("CAP_SYS_ADMIN")));
    assert_eq!(f["linux"]["seccomp"]["enabled"], true);
    assert!(f["hooks"]
        .as_array()
        .unwrap()
        .contains(&json!("createRuntime")));
}

#[test]
fn systemd_cgroup_is_refused_clearly() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let b = cli.bundle("sd", &["true"]);
    let out = std::process::Command::new(&cli.bin)
        .args([
            "--root",
            cli.root.path().to_str().unwrap(),
            "--systemd-cgroup",
            "run",
            "--bundle",
            b.dir.to_str().unwrap(),
            "sd",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("systemd"));
    assert!(!cli.root.path().join("sd").exists());
}

#[test]
fn crash_during_create_is_cleaned_by_delete_force() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let mut b = cli.bundle("crash", &["true"]);
    // The createRuntime hook kills the runtime process mid-create.
    b.spec["hooks"] =
        json!({"createRuntime": [{"path": "/bin/sh", "args": ["sh", "-c", "kill -9 $PPID"]}]});
    b.write_spec().unwrap();
    let out = cli.run_detached(&["create", "--bundle", b.dir.to_str().unwrap(), "crash"]);
    assert!(!out.status.success());
    assert!(
        cli.root.path().join("crash").exists(),
        "a crash leaves the state dir"
    );
    assert_ok(&cli.run(&["delete", "--force", "crash"]));
    assert!(!cli.root.path().join("crash").exists());
    assert!(
        wait_for(5, || cli.cgroup_dirs("crash").is_empty()),
        "cgroup removed: {:?}",
        cli.cgroup_dirs("crash")
    );
}
