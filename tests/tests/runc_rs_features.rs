//! Spec features that the differential suite cannot compare by output
//! alone: seccomp user notification, socket activation fds, time
//! namespaces, joining namespaces by path.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

use integration_tests::runtime::{assert_ok, is_root, pass_as_fd3, Cli};
use serde_json::json;

/// Receives one message with an fd over SCM_RIGHTS.
fn recv_with_fd(conn: &std::os::unix::net::UnixStream) -> (String, OwnedFd) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([i32; 4]);
    let msg = nix::sys::socket::recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        nix::sys::socket::MsgFlags::empty(),
    )
    .unwrap();
    let mut fd = None;
    for c in msg.cmsgs().unwrap() {
        if let nix::sys::socket::ControlMessageOwned::ScmRights(fds) = c {
            fd = Some(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        }
    }
    let n = msg.bytes;
    (
        String::from_utf8_lossy(&buf[..n]).into_owned(),
        fd.expect("an fd"),
    )
}

#[test]
fn seccomp_notify_sends_the_listener_fd_and_state() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let mut b = cli.bundle("notify", &["sh", "-c", "mkdir /tmp/x 2>&1; echo rc=$?"]);
    let sock = b.dir.join("seccomp.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    b.spec["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "listenerMetadata": "meta-from-spec",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    b.write_spec().unwrap();
    let agent = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let (text, fd) = recv_with_fd(&conn);
        // Closing the listener fd makes every notified syscall fail (ENOSYS).
        drop(fd);
        text
    });
    let out_path = b.dir.join("out");
    let out_file = std::fs::File::create(&out_path).unwrap();
    let status = cli
        .command(&["run", "--bundle", b.dir.to_str().unwrap(), "notify"])
        .stdout(out_file)
        .status()
        .unwrap();
    assert!(status.success());
    let text = agent.join().unwrap();
    let msg: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(msg["fds"], json!(["seccompFd"]));
    assert_eq!(msg["metadata"], "meta-from-spec");
    assert_eq!(msg["state"]["id"], "notify");
    assert!(msg["pid"].as_i64().unwrap() > 0);
    let output = std::fs::read_to_string(&out_path).unwrap();
    assert!(
        output.contains("rc=1"),
        "mkdir was intercepted and failed once the agent closed its fd: {output}"
    );
    assert!(!b.rootfs().join("tmp/x").exists());
}

#[test]
fn listen_fds_pass_through_with_listen_pid_1() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let b = cli.bundle(
        "listen",
        &[
            "sh",
            "-c",
            "echo LISTEN_FDS=$LISTEN_FDS LISTEN_PID=$LISTEN_PID; cat <&3",
        ],
    );
    let extra = b.dir.join("sockfile");
    std::fs::write(&extra, "socket-activated").unwrap();
    let f = std::fs::File::open(&extra).unwrap();
    let mut cmd = cli.command(&["run", "--bundle", b.dir.to_str().unwrap(), "listen"]);
    cmd.env("LISTEN_FDS", "1");
    pass_as_fd3(&mut cmd, &f);
    let out = cmd.output().unwrap();
    assert_ok(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "LISTEN_FDS=1 LISTEN_PID=1\nsocket-activated"
    );
}

#[test]
fn time_namespace_offsets_apply() {
    if !is_root() || !std::path::Path::new("/proc/self/ns/time").exists() {
        return;
    }
    let cli = Cli::runc_rs();
    let mut b = cli.bundle("timens", &["cat", "/proc/uptime"]);
    b.spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "time"}));
    b.spec["linux"]["timeOffsets"] = json!({"boottime": {"secs": 86400 * 365, "nanosecs": 0}});
    b.write_spec().unwrap();
    let out = cli.run(&["run", "--bundle", b.dir.to_str().unwrap(), "timens"]);
    assert_ok(&out);
    let container_uptime: f64 = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let host_uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let diff = container_uptime - host_uptime;
    assert!(
        (diff - 86400.0 * 365.0).abs() < 60.0,
        "boottime offset seen in the container: {diff}"
    );
}

#[test]
fn joins_another_containers_namespaces_by_path() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let mut host = cli.bundle("nshost", &["sleep", "1000"]);
    host.spec["hostname"] = json!("shared-uts");
    host.write_spec().unwrap();
    assert_ok(&cli.run_detached(&[
        "run",
        "-d",
        "--bundle",
        host.dir.to_str().unwrap(),
        "nshost",
    ]));
    let pid = cli.state("nshost").unwrap()["pid"].as_i64().unwrap();
    let mut guest = cli.bundle(
        "nsguest",
        &[
            "sh",
            "-c",
            "hostname; for n in net uts ipc; do readlink /proc/self/ns/$n; done",
        ],
    );
    let ns = guest.spec["linux"]["namespaces"].as_array_mut().unwrap();
    for n in ns.iter_mut() {
        let t = n["type"].as_str().unwrap().to_owned();
        let file = match t.as_str() {
            "network" => "net",
            "uts" => "uts",
            "ipc" => "ipc",
            _ => continue,
        };
        n["path"] = json!(format!("/proc/{pid}/ns/{file}"));
    }
    guest.spec.as_object_mut().unwrap().remove("hostname");
    guest.write_spec().unwrap();
    let out = cli.run(&["run", "--bundle", guest.dir.to_str().unwrap(), "nsguest"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("shared-uts"));
    for (line, file) in lines.zip(["net", "uts", "ipc"]) {
        let host_ns = std::fs::read_link(format!("/proc/{pid}/ns/{file}")).unwrap();
        assert_eq!(line, host_ns.to_str().unwrap(), "joined {file}");
    }
    assert_ok(&cli.run(&["delete", "--force", "nshost"]));
}

#[test]
fn user_namespace_maps_ids() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let mut b = cli.bundle(
        "userns",
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map /proc/self/gid_map; id -u; touch /tmp/f && stat -c %u /tmp/f",
        ],
    );
    b.spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    b.spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.spec["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.spec["root"]["readonly"] = json!(false);
    b.write_spec().unwrap();
    // The rootfs must be usable by the mapped root.
    std::process::Command::new("chown")
        .args(["-R", "100000:100000", b.rootfs().to_str().unwrap()])
        .status()
        .unwrap();
    let out = cli.run(&["run", "--bundle", b.dir.to_str().unwrap(), "userns"]);
    assert_ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(&words[..3], ["0", "100000", "65536"]);
    assert_eq!(&words[3..6], ["0", "100000", "65536"]);
    assert_eq!(words[6], "0", "root inside");
    assert_eq!(
        words[7], "0",
        "files created by container root show as 0 inside"
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(b.rootfs().join("tmp/f")).unwrap().uid(),
        100000,
        "and as 100000 on the host"
    );
}
