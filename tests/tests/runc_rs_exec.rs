//! `exec`, differentially: every scenario runs under Debian's runc and
//! under runc-rs, and what the exec'd process saw (namespaces compared to
//! init's, cgroup, capabilities, seccomp, uid/gid/groups, env, cwd, rlimits,
//! session, tty) and what the runtime returned must match.
//!
//! Run: `cargo build -p runc-rs && cargo test -p integration-tests --test runc_rs_exec`

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::Duration;

use integration_tests::pair::{exec, last_err, normalise, run_detached, stdout_ok, Pair};
use integration_tests::runtime::{wait_for, Cli};
use serde_json::{json, Value};

/// What the exec'd process reports about itself.
const OBS: &str = r#"
for n in cgroup ipc mnt net pid user uts time; do echo "ns $n $(readlink /proc/self/ns/$n)"; done
grep -E '^(Cap|NoNewPrivs|Seccomp|Uid|Gid|Groups)' /proc/self/status
cat /proc/self/cgroup
echo "cwd $(pwd)"
env | sort
echo "umask $(umask)"
echo "nofile $(ulimit -n) $(ulimit -Hn) nproc $(ulimit -u) $(ulimit -Hu)"
echo "oom $(cat /proc/self/oom_score_adj)"
s=$(cut -d' ' -f6 /proc/self/stat); [ "$s" = "$$" ] && echo "session leader" || echo "session inherited"
mkdir /dev/shm/probe 2>&1 && echo mkdir-ok; rmdir /dev/shm/probe 2>/dev/null
true
"#;

/// OBS's namespace lines, judged from the host against init's namespaces
/// (a process without privilege cannot read /proc/1/ns itself).
fn judge_ns(text: &str, init_pid: i32) -> String {
    text.lines()
        .map(
            |l| match l.strip_prefix("ns ").and_then(|r| r.split_once(' ')) {
                Some((n, link)) => {
                    let init = std::fs::read_link(format!("/proc/{init_pid}/ns/{n}"))
                        .map(|p| p.display().to_string())
                        .unwrap_or_default();
                    if init == link {
                        format!("ns {n} same as init\n")
                    } else {
                        format!("ns {n} differs\n")
                    }
                }
                None => format!("{l}\n"),
            },
        )
        .collect()
}

fn sleeper(cli: &Cli, id: &str, mutate: impl Fn(&mut Value)) -> integration_tests::pair::Running {
    run_detached(cli, id, &["sleep", "100000"], mutate)
}

/// Runs OBS through `exec <flags>` in a container made by `mutate`, under
/// both runtimes, and asserts they saw the same.
fn same_view(name: &str, mutate: fn(&mut Value), flags: &[&str]) {
    let Some(p) = Pair::new() else { return };
    let mut seen = vec![];
    for (rt, cli) in p.both() {
        let c = sleeper(cli, name, mutate);
        let out = exec(cli, flags, &c.id, &["sh", "-c", OBS]);
        seen.push((rt, judge_ns(&normalise(cli, &stdout_ok(cli, &out)), c.pid)));
    }
    assert_eq!(
        seen[0].1, seen[1].1,
        "{name} {flags:?}: runc (left) and runc-rs (right) differ"
    );
    for n in ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"] {
        assert!(
            seen[1].1.contains(&format!("ns {n} same as init")),
            "{}",
            seen[1].1
        );
    }
}

#[test]
fn exec_default_process_like_runc() {
    same_view("e-default", |_| {}, &[]);
}

#[test]
fn exec_user_cwd_env_groups_like_runc() {
    same_view(
        "e-user",
        |_| {},
        &[
            "--user",
            "1000:1000",
            "-g",
            "10",
            "-g",
            "20",
            "--cwd",
            "/tmp",
            "--env",
            "FOO=bar",
            "--env",
            "HOME=/home/x",
        ],
    );
}

#[test]
fn exec_caps_and_no_new_privs_like_runc() {
    same_view(
        "e-caps",
        |s| s["process"]["noNewPrivileges"] = json!(false),
        &[
            "--cap",
            "CAP_SYS_ADMIN",
            "--cap",
            "CAP_NET_RAW",
            "--no-new-privs",
        ],
    );
}

#[test]
fn exec_joins_seccomp_filter_like_runc() {
    same_view(
        "e-seccomp",
        |s| {
            s["process"]["noNewPrivileges"] = json!(false);
            s["linux"]["seccomp"] = json!({
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
            });
        },
        &[],
    );
}

#[test]
fn exec_in_user_namespace_like_runc() {
    same_view(
        "e-userns",
        |s| {
            s["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "user"}));
            s["linux"]["uidMappings"] =
                json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
            s["linux"]["gidMappings"] =
                json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
            s["mounts"]
                .as_array_mut()
                .unwrap()
                .retain(|m| m["type"] != "cgroup");
        },
        &["--user", "0:0"],
    );
}

#[test]
fn exec_in_cgroup_namespace_and_rlimits_like_runc() {
    same_view(
        "e-cgns",
        |s| {
            s["linux"]["namespaces"]
                .as_array_mut()
                .unwrap()
                .push(json!({"type": "cgroup"}));
            // NOFILE soft == hard: runc 1.1 (built with Go 1.19) raises the
            // soft NOFILE limit of its exec'd processes to the hard one,
            // an artefact of the Go runtime, not of the spec.
            s["process"]["rlimits"] = json!([
                {"type": "RLIMIT_NOFILE", "hard": 512, "soft": 512},
                {"type": "RLIMIT_NPROC", "hard": 3000, "soft": 2000}
            ]);
            s["process"]["oomScoreAdj"] = json!(100);
        },
        &[],
    );
}

#[test]
fn exec_process_json_like_runc() {
    let Some(p) = Pair::new() else { return };
    let dir = testdata::temp_dir().unwrap();
    let pj = dir.path().join("process.json");
    // No capabilities or rlimits: the container's apply (runc's fallback).
    std::fs::write(
        &pj,
        json!({"args": ["sh", "-c", OBS], "cwd": "/dev", "env": ["PATH=/bin", "X=1"], "user": {"uid": 65534, "gid": 65534}})
            .to_string(),
    )
    .unwrap();
    let mut seen = vec![];
    for (_, cli) in p.both() {
        let c = sleeper(cli, "e-pjson", |_| {});
        let out = exec(cli, &["--process", pj.to_str().unwrap()], &c.id, &[]);
        seen.push(judge_ns(&normalise(cli, &stdout_ok(cli, &out)), c.pid));
    }
    assert_eq!(seen[0], seen[1]);
    assert!(
        seen[1].contains("cwd /dev") && seen[1].contains("X=1"),
        "{}",
        seen[1]
    );
}

#[test]
fn exec_exit_codes_and_signal_forwarding_like_runc() {
    let Some(p) = Pair::new() else { return };
    for (rt, cli) in p.both() {
        let c = sleeper(cli, "e-codes", |_| {});
        assert_eq!(
            exec(cli, &[], &c.id, &["sh", "-c", "exit 7"]).status.code(),
            Some(7),
            "{rt}"
        );
        assert_eq!(
            exec(cli, &[], &c.id, &["sh", "-c", "kill -9 $$"])
                .status
                .code(),
            Some(137),
            "{rt}"
        );
        assert_eq!(
            exec(cli, &[], &c.id, &["true"]).status.code(),
            Some(0),
            "{rt}"
        );
        // A signal to the runtime reaches the process, whose status it returns.
        let script = "trap 'echo got-term; exit 9' TERM; echo ready; while :; do sleep 0.1; done";
        let mut child = cli
            .command(&["exec", &c.id, "sh", "-c", script])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut buf = [0u8; 6];
        stdout.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ready\n", "{rt}");
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        assert!(rest.contains("got-term"), "{rt}: {rest:?}");
        assert_eq!(status.code(), Some(9), "{rt}");
    }
}

#[test]
fn exec_tty_like_runc() {
    let Some(p) = Pair::new() else { return };
    let mut seen = vec![];
    for (rt, cli) in p.both() {
        let c = sleeper(cli, "e-tty", |_| {});
        let inner = "tty; stty -a 2>/dev/null | tr ' ;' '\\n\\n' | grep -xE -- '-?(onlcr|icanon|echo|opost|isig)'; exit 3";
        let cmd = format!(
            "{} --root {} exec -t {} sh -c \"{inner}\"",
            cli.bin.display(),
            cli.root.path().display(),
            c.id
        );
        let out = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text: String = String::from_utf8_lossy(&out.stdout)
            .chars()
            .filter(|c| *c != '\r' && *c != '\0')
            .collect();
        assert_eq!(out.status.code(), Some(3), "{rt}: {text}");
        seen.push(text.replace("^@", ""));
    }
    // runc clears onlcr on the pty from a goroutine that races the exec'd
    // process (under load the process may see it still set); runc-rs does
    // it before the process starts.
    assert!(seen[1].contains("\n-onlcr\n"), "{}", seen[1]);
    let seen: Vec<String> = seen
        .iter()
        .map(|s| s.replace("\n-onlcr\n", "\n").replace("\nonlcr\n", "\n"))
        .collect();
    assert_eq!(seen[0], seen[1]);
    assert!(seen[1].starts_with("/dev/pts/"), "{}", seen[1]);
}

/// Receives the pty master sent to a console socket.
fn recv_master(listener: &std::os::unix::net::UnixListener) -> OwnedFd {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
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
            return unsafe { OwnedFd::from_raw_fd(fds[0]) };
        }
    }
    panic!("no fd received");
}

#[test]
fn exec_detached_pid_file_console_socket_and_preserved_fds() {
    let Some(p) = Pair::new() else { return };
    for (rt, cli) in p.both() {
        let c = sleeper(cli, "e-detach", |_| {});
        // -d: prints nothing, returns at once, the pid file names a process
        // of the container.
        let pidfile = c.bundle.dir.join("exec.pid");
        let outfile = c.bundle.dir.join("exec.out");
        let status = cli
            .command(&[
                "exec",
                "-d",
                "--pid-file",
                pidfile.to_str().unwrap(),
                &c.id,
                "sleep",
                "1000",
            ])
            .stdout(std::fs::File::create(&outfile).unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "{rt}");
        assert_eq!(
            std::fs::read_to_string(&outfile).unwrap(),
            "",
            "{rt}: -d prints nothing"
        );
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let json = stdout_ok(cli, &cli.run(&["ps", "--format", "json", &c.id]));
        let pids: Vec<i32> = serde_json::from_str(&json).unwrap();
        assert!(
            pids.contains(&pid) && pids.contains(&c.pid),
            "{rt}: {pids:?} has {pid}"
        );

        // -d -t: the pty master goes to the console socket.
        let sock = c.bundle.dir.join("console.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let out = cli.run_detached(&[
            "exec",
            "-d",
            "-t",
            "--console-socket",
            sock.to_str().unwrap(),
            &c.id,
            "sh",
            "-c",
            "echo via-tty; sleep 2",
        ]);
        assert!(
            out.status.success(),
            "{rt}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let master = recv_master(&listener);
        let mut f = std::fs::File::from(master);
        let mut got = vec![0u8; 64];
        let n = f.read(&mut got).unwrap();
        assert!(
            String::from_utf8_lossy(&got[..n]).contains("via-tty"),
            "{rt}"
        );

        // --preserve-fds 1: our fd 3 is the process's fd 3.
        let (r, w) = nix::unistd::pipe().unwrap();
        let wfd = w.as_raw_fd();
        let mut cmd = cli.command(&[
            "exec",
            "--preserve-fds",
            "1",
            &c.id,
            "sh",
            "-c",
            "echo via-fd3 >&3",
        ]);
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(wfd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let status = cmd.stdout(Stdio::null()).status().unwrap();
        drop(w);
        assert!(status.success(), "{rt}");
        let mut text = String::new();
        std::fs::File::from(r).read_to_string(&mut text).unwrap();
        assert_eq!(text, "via-fd3\n", "{rt}");
    }
}

#[test]
fn exec_refusals_like_runc() {
    let Some(p) = Pair::new() else { return };
    let dir = testdata::temp_dir().unwrap();
    let bad_json = dir.path().join("bad.json");
    std::fs::write(&bad_json, "{bad").unwrap();
    let mut msgs: Vec<Vec<String>> = vec![];
    for (rt, cli) in p.both() {
        let c = sleeper(cli, "e-refuse", |_| {});
        let stopped = run_detached(cli, "e-stopped", &["sleep", "1"], |_| {});
        assert!(wait_for(10, || cli
            .state(&stopped.id)
            .is_some_and(|s| s["status"] == "stopped")));
        let cases: Vec<(Vec<&str>, &str, Vec<&str>)> = vec![
            (vec![], "nope", vec!["true"]),
            (vec![], &stopped.id, vec!["true"]),
            (vec![], &c.id, vec![]),
            (vec!["--user", "1:x"], &c.id, vec!["true"]),
            (
                vec!["--console-socket", "/tmp/none.sock"],
                &c.id,
                vec!["true"],
            ),
            (vec!["-d", "-t"], &c.id, vec!["true"]),
            (vec!["-g", "-5"], &c.id, vec!["true"]),
        ];
        let mut these = vec![];
        for (flags, id, cmd) in &cases {
            let out = exec(cli, flags, id, cmd);
            assert_eq!(
                out.status.code(),
                Some(255),
                "{rt} {flags:?} {id}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            these.push(last_err(&out));
        }
        // A malformed process.json: a clear error, the container unchanged.
        let out = exec(cli, &["--process", bad_json.to_str().unwrap()], &c.id, &[]);
        assert_eq!(out.status.code(), Some(255), "{rt}");
        assert!(
            last_err(&out).starts_with("exec failed: "),
            "{rt}: {}",
            last_err(&out)
        );
        assert_eq!(cli.state(&c.id).unwrap()["status"], "running", "{rt}");
        // Paused: refused unless --ignore-paused, which waits for the resume.
        stdout_ok(cli, &cli.run(&["pause", &c.id]));
        these.push(last_err(&exec(cli, &[], &c.id, &["true"])));
        let mut waiting = cli
            .command(&["exec", "--ignore-paused", &c.id, "echo", "resumed"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(800));
        assert!(
            waiting.try_wait().unwrap().is_none(),
            "{rt}: exec into a frozen container finished"
        );
        stdout_ok(cli, &cli.run(&["resume", &c.id]));
        let out = waiting.wait_with_output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "resumed\n", "{rt}");
        msgs.push(these);
    }
    assert_eq!(
        msgs[0], msgs[1],
        "runc (left) and runc-rs (right) error messages"
    );
    assert!(
        msgs[1]
            .iter()
            .any(|m| m == "exec failed: cannot exec in a stopped container"),
        "{:?}",
        msgs[1]
    );
}
