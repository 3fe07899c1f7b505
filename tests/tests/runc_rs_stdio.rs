//! Foreground stdio, differentially (Debian's runc vs runc-rs): `run` and
//! `exec` without -d give the process pipes of their own, owned by the
//! container's root, and copy them to and from the runtime's stdio (all of
//! the output before the exit is reported; EOF on stdin closes the
//! process's); with -d the runtime's stdio passes as is; with a terminal and
//! no console socket the runtime allocates the pty and relays it to its own
//! terminal, or fails without one.
//!
//! Run: `cargo build -p runc-rs && cargo test -p integration-tests --test runc_rs_stdio`

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Output, Stdio};

use integration_tests::pair::{exec, last_err, run_detached, stdout_ok, Pair, Running};
use integration_tests::runtime::{wait_for, Cli};
use serde_json::{json, Value};

/// What the process's stdio is, as it sees it: the kind of each fd, the
/// owner of each (a pipe given to the container's root reads "0 0" inside
/// a user namespace; one left to the host's root, "65534 65534"), and
/// whether it can reopen its stdout by path.
const STDIO_VIEW: &str = r#"
for f in 0 1 2; do echo "fd$f $(readlink /proc/self/fd/$f | cut -d: -f1) $(stat -L -c '%u %g %a' /proc/self/fd/$f)"; done
echo reopened >/proc/self/fd/1 || echo reopen-failed
"#;

fn userns(s: &mut Value) {
    s["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "user"}));
    s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    s["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": 200000, "size": 65536}]);
    s["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| m["type"] != "cgroup");
}

fn sleeper(cli: &Cli, id: &str, mutate: impl Fn(&mut Value)) -> Running {
    run_detached(cli, id, &["sleep", "100000"], mutate)
}

/// `run` in the foreground of a bundle running `args` (after `mutate`).
fn run_fg(
    cli: &Cli,
    id: &str,
    args: &[&str],
    mutate: impl Fn(&mut Value),
    stdin: Option<&[u8]>,
) -> Output {
    let mut b = testdata::Bundle::with_args(args).expect("bundle");
    cli.place(&mut b.spec, id);
    mutate(&mut b.spec);
    b.write_spec().expect("write spec");
    let mut cmd = cli.command(&["run", "--bundle", b.dir.to_str().unwrap(), id]);
    let out = with_stdin(&mut cmd, stdin);
    assert!(
        cli.state(id).is_none(),
        "{}: run left {id} behind",
        cli.bin.display()
    );
    out
}

/// Runs `cmd` to completion with `stdin` written to it (then closed), or
/// with no stdin at all.
fn with_stdin(cmd: &mut std::process::Command, stdin: Option<&[u8]>) -> Output {
    let Some(data) = stdin else {
        return cmd.output().expect("spawn runtime");
    };
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn runtime");
    let mut w = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = w.write_all(&data);
    });
    let out = child.wait_with_output().expect("wait runtime");
    writer.join().unwrap();
    out
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn exec_foreground_stdio_is_pipes_of_the_container_root_like_runc() {
    let Some(p) = Pair::new() else { return };
    let mut seen = vec![];
    for (_, cli) in p.both() {
        let plain = sleeper(cli, "s-plain", |_| {});
        let user = sleeper(cli, "s-userns", userns);
        for c in [&plain, &user] {
            seen.push(stdout_ok(
                cli,
                &exec(cli, &[], &c.id, &["sh", "-c", STDIO_VIEW]),
            ));
        }
    }
    assert_eq!(seen[..2], seen[2..], "runc (left) and runc-rs (right)");
    assert!(
        seen[3].starts_with("fd0 pipe 0 0 600\nfd1 pipe 0 0 600\nfd2 pipe 0 0 600\nreopened"),
        "{}",
        seen[3]
    );
}

#[test]
fn run_foreground_stdio_is_pipes_of_the_container_root_like_runc() {
    let Some(p) = Pair::new() else { return };
    let script = format!("{STDIO_VIEW}\ncat; exit 5");
    let mut seen = vec![];
    for (rt, cli) in p.both() {
        let out = run_fg(
            cli,
            "s-run",
            &["sh", "-c", &script],
            userns,
            Some(b"from-stdin\n"),
        );
        assert_eq!(
            out.status.code(),
            Some(5),
            "{rt}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        seen.push(text(&out));
    }
    assert_eq!(seen[0], seen[1], "runc (left) and runc-rs (right)");
    assert!(
        seen[1].starts_with("fd0 pipe 0 0 600\n") && seen[1].ends_with("reopened\nfrom-stdin\n"),
        "{}",
        seen[1]
    );
}

/// 1 MiB through stdout, and stderr, all there when the exit is reported.
#[test]
fn foreground_output_is_complete_before_the_exit_like_runc() {
    let Some(p) = Pair::new() else { return };
    let script = "yes 0123456789abcdef | head -c 1048576; echo err-line >&2; exit 4";
    let want: Vec<u8> = b"0123456789abcdef\n"
        .iter()
        .copied()
        .cycle()
        .take(1 << 20)
        .collect();
    for (rt, cli) in p.both() {
        let c = sleeper(cli, "s-big", |_| {});
        let outs = [
            exec(cli, &[], &c.id, &["sh", "-c", script]),
            run_fg(cli, "s-bigrun", &["sh", "-c", script], |_| {}, None),
        ];
        for (what, out) in ["exec", "run"].iter().zip(outs) {
            assert_eq!(out.status.code(), Some(4), "{rt} {what}");
            assert!(
                out.stdout == want,
                "{rt} {what}: {} bytes of stdout, not the 1 MiB written",
                out.stdout.len()
            );
            assert!(
                String::from_utf8_lossy(&out.stderr).contains("err-line"),
                "{rt} {what}"
            );
        }
    }
}

/// Our stdin reaches the process; its EOF ends the process's stdin; a
/// stdin left open does not keep the runtime once the process exited.
#[test]
fn foreground_stdin_is_copied_and_closed_like_runc() {
    let Some(p) = Pair::new() else { return };
    let input = b"hello\nworld\n".repeat(10_000);
    for (rt, cli) in p.both() {
        let c = sleeper(cli, "s-in", |_| {});
        let out = with_stdin(&mut cli.command(&["exec", &c.id, "cat"]), Some(&input));
        assert_eq!(
            out.status.code(),
            Some(0),
            "{rt}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == input,
            "{rt}: {} bytes back of {}",
            out.stdout.len(),
            input.len()
        );
        let out = with_stdin(
            &mut cli.command(&["exec", &c.id, "sh", "-c", "wc -c; exit 3"]),
            Some(b"12345"),
        );
        assert_eq!(
            (out.status.code(), text(&out).trim()),
            (Some(3), "5"),
            "{rt}"
        );

        let mut open = cli.command(&["exec", &c.id, "sh", "-c", "echo done; exit 6"]);
        let mut child = open
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let mut status = None;
        assert!(
            wait_for(10, || {
                status = child.try_wait().unwrap();
                status.is_some()
            }),
            "{rt}: hangs on an open stdin"
        );
        drop(stdin);
        assert_eq!(status.unwrap().code(), Some(6), "{rt}");
    }
}

/// With -d the process gets the runtime's own stdio, not pipes.
#[test]
fn detached_stdio_is_passed_as_is_like_runc() {
    let Some(p) = Pair::new() else { return };
    for (rt, cli) in p.both() {
        let c = sleeper(cli, "s-det", |_| {});
        let file = c.bundle.dir.join("out");
        let status = cli
            .command(&[
                "exec",
                "-d",
                &c.id,
                "sh",
                "-c",
                "exec 3>&1; readlink /proc/self/fd/3 >&2; echo x",
            ])
            .stdout(std::fs::File::create(&file).unwrap())
            .stderr(std::fs::File::create(c.bundle.dir.join("err")).unwrap())
            .status()
            .unwrap();
        assert!(status.success(), "{rt}");
        assert!(
            wait_for(10, || std::fs::read_to_string(&file).unwrap_or_default()
                == "x\n"),
            "{rt}"
        );
        let link = std::fs::read_to_string(c.bundle.dir.join("err")).unwrap();
        assert!(
            !link.starts_with("pipe:") && link.trim_end().ends_with("/out"),
            "{rt}: {link:?}"
        );
    }
}

/// `script` runs the runtime on a pty of its own; what reaches it, with the
/// runtime's exit code.
fn under_script(cli: &Cli, args: &str) -> (Option<i32>, String) {
    let cmd = format!(
        "{} --root {} {args}",
        cli.bin.display(),
        cli.root.path().display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout)
        .replace("^@", "")
        .replace('\0', "");
    (out.status.code(), text)
}

/// `run` with process.terminal and no console socket: the runtime's pty,
/// relayed to its terminal (its line discipline as runc leaves it: output
/// processing on, so "\r\n" reaches the caller).
#[test]
fn run_terminal_without_console_socket_like_runc() {
    let Some(p) = Pair::new() else { return };
    let inner = "tty; stty -a 2>/dev/null | tr ' ;' '\\n\\n' | grep -xE -- '-?(onlcr|icanon|echo|opost|isig)'; echo out; exit 3";
    let mut seen = vec![];
    for (rt, cli) in p.both() {
        let mut b = cli.bundle("s-tty", &["sh", "-c", inner]);
        b.spec["process"]["terminal"] = json!(true);
        b.write_spec().unwrap();
        let (code, text) = under_script(cli, &format!("run --bundle {} s-tty", b.dir.display()));
        assert_eq!(code, Some(3), "{rt}: {text}");
        assert!(
            cli.state("s-tty").is_none() && cli.cgroup_dirs("s-tty").is_empty(),
            "{rt}: left behind"
        );
        seen.push(text);
    }
    // runc clears onlcr on the pty from a goroutine that races the process
    // (under load the process may see it set, and write "\r\n" that our
    // terminal turns into "\r\r\n"); runc-rs does it before the start.
    assert!(seen[1].contains("\r\n-onlcr\r\n"), "{:?}", seen[1]);
    let seen: Vec<String> = seen
        .iter()
        .map(|s| {
            s.replace("\r\r\n", "\r\n")
                .replace("\n-onlcr\r\n", "\n")
                .replace("\nonlcr\r\n", "\n")
        })
        .collect();
    assert_eq!(seen[0], seen[1], "runc (left) and runc-rs (right)");
    assert!(
        seen[1].starts_with("/dev/pts/0\r\n") && seen[1].ends_with("out\r\n"),
        "{:?}",
        seen[1]
    );
}

/// The terminal refusals of `run`: no terminal of ours to relay to, -d
/// without a console socket, a console socket without -d.
#[test]
fn run_terminal_refusals_like_runc() {
    let Some(p) = Pair::new() else { return };
    let mut msgs = vec![];
    for (rt, cli) in p.both() {
        let mut b = cli.bundle("s-ttyno", &["true"]);
        b.spec["process"]["terminal"] = json!(true);
        b.write_spec().unwrap();
        let bundle = b.dir.to_str().unwrap();
        let mut cmd = cli.command(&["run", "--bundle", bundle, "s-ttyno"]);
        // No controlling terminal either (the tests may run from one).
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{rt}");
        let msg = last_err(&out).to_lowercase();
        assert!(
            msg.contains("open /dev/tty: no such device or address"),
            "{rt}: {msg}"
        );
        let detached = cli.run_detached(&["run", "-d", "--bundle", bundle, "s-ttyno"]);
        let sock = b.dir.join("none.sock");
        b.spec["process"]["terminal"] = json!(false);
        b.write_spec().unwrap();
        let socket = cli.run(&[
            "run",
            "--console-socket",
            sock.to_str().unwrap(),
            "--bundle",
            bundle,
            "s-ttyno",
        ]);
        for out in [&detached, &socket] {
            assert_eq!(out.status.code(), Some(1), "{rt}");
            // Past the command's own prefix, which differs.
            let msg = last_err(out);
            msgs.push(msg.rsplit(": ").next().unwrap_or_default().to_owned());
        }
        assert!(
            cli.state("s-ttyno").is_none() && cli.cgroup_dirs("s-ttyno").is_empty(),
            "{rt}: left behind"
        );
    }
    assert_eq!(msgs[..2], msgs[2..], "runc (left) and runc-rs (right)");
    assert_eq!(
        msgs[2],
        "cannot allocate tty if runc will detach without setting console socket"
    );
}
