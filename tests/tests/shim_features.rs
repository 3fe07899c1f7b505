//! containerd 1.6 driving `containerd-shim-runc-v2-rs` through the task
//! API beyond the basic lifecycle: Stats (`ctr task metrics`), OOM events,
//! pause / resume, Update, exec with a terminal and ResizePty, CloseIO,
//! `binary://` logging, host-pid-namespace containers and the order of
//! exit events.
//!
//! Tests that need runtime commands runc-rs does not implement yet (exec,
//! pause, update) run with runc as the runtime binary, selected through
//! `ctr run --runtime-config-path` (CRI's runtime options, a TOML file),
//! and with runc-rs too as soon as `runc-rs <cmd> --help` succeeds.
//!
//! Needs root and the binaries `cargo build --workspace --bins` makes.
//! Run: `cargo test -p integration-tests --test shim_features`

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use containerd_shim_protos::api::UpdateTaskRequest;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::MessageField;
use integration_tests::containerd::{
    describe, exit_code, pids_matching, run_with_timeout, shell_quote, Containerd,
};
use integration_tests::shim_rs::{
    assert_clean, ctx, runc_rs, runtime_config, runtimes_supporting, rust_shim, shim_socket,
    task_client, wait_for_file_containing, wait_until, CtrEvents,
};

const LONG: Duration = Duration::from_secs(20);

/// Stop, delete and forget container `id`.
fn remove(c: &Containerd, id: &str) {
    let _ = c.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
    assert!(c.wait_task_status(id, "STOPPED", LONG), "{id} not STOPPED");
    c.ctr_ok(&["task", "rm", id]);
    c.ctr_ok(&["container", "rm", id]);
}

/// A file of the container's cgroup (v1 memory hierarchy or cgroup2).
fn cgroup_file(c: &Containerd, id: &str, v1: &str, v2: &str) -> Option<String> {
    c.cgroups().dirs().into_iter().find_map(|d| {
        let dir = d.join(id);
        fs::read_to_string(dir.join(v1))
            .or_else(|_| fs::read_to_string(dir.join(v2)))
            .ok()
            .map(|s| s.trim().to_owned())
    })
}

#[test]
fn metrics_report_memory_and_pids_and_oom_is_an_event() {
    let Some((c, _)) = rust_shim() else { return };
    let events = CtrEvents::start(&c);
    let id = "oom";
    let limit = 32 << 20;
    let script = "echo started; sleep 2; dd if=/dev/zero of=/dev/null bs=96M count=1; echo after-dd; sleep 300";
    let log = c.log_file(id);
    let out = c
        .run(
            &[
                "-d",
                "--memory-limit",
                &limit.to_string(),
                "--log-uri",
                &format!("file://{}", log.display()),
            ],
            id,
            &["sh", "-c", script],
        )
        .unwrap_or_else(|e| panic!("ctr run: {e}"));
    assert!(out.status.success(), "{}", describe(&out));
    wait_for_file_containing(&log, "started", LONG);

    // Stats: the table ctr prints, and the numbers behind it, in the
    // shape of the host's cgroup version (v1 on hybrid hosts).
    let table = c.ctr_ok(&["task", "metrics", id]);
    assert!(
        table.contains("pids.current"),
        "no pids.current in:\n{table}"
    );
    let metrics = || -> serde_json::Value {
        let text = c.ctr_ok(&["task", "metrics", "--format", "json", id]);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("metrics JSON {e}: {text}"))
    };
    let json = metrics();
    let v2 = json["memory"]["usage"].is_u64();
    let (usage, mem_limit, cpu) = if v2 {
        (
            &json["memory"]["usage"],
            &json["memory"]["usage_limit"],
            &json["cpu"]["usage_usec"],
        )
    } else {
        assert!(table.contains("memory.usage_in_bytes"), "{table}");
        (
            &json["memory"]["usage"]["usage"],
            &json["memory"]["usage"]["limit"],
            &json["cpu"]["usage"]["total"],
        )
    };
    assert!(usage.as_u64().unwrap_or(0) > 0, "memory usage: {json}");
    assert_eq!(mem_limit.as_u64(), Some(limit), "{json}");
    assert!(cpu.as_u64().unwrap_or(0) > 0, "cpu: {json}");
    assert!(
        json["pids"]["current"].as_u64().unwrap_or(0) >= 1,
        "pids: {json}"
    );

    // dd needs 96 MiB under a 32 MiB limit: the kernel kills it, the shim
    // publishes /tasks/oom, the container goes on.
    let e = events.wait_for("/tasks/oom", id, LONG);
    assert_eq!(e["container_id"], id);
    wait_for_file_containing(&log, "after-dd", LONG);
    let json = metrics();
    let kills = if v2 {
        &json["memory_events"]["oom_kill"]
    } else {
        &json["memory_oom_control"]["oom_kill"]
    };
    assert!(
        kills.as_u64().unwrap_or(0) >= 1,
        "oom_kill not counted: {json}"
    );
    assert_eq!(c.task_status(id).map(|t| t.1).as_deref(), Some("RUNNING"));
    remove(&c, id);
    assert!(c
        .ctr(&["task", "metrics", id])
        .map(|o| !o.status.success())
        .unwrap_or(true));
    assert_clean(&c, &[id]);
}

/// `ctr run` flags selecting `runtime` (runc-rs is the shim's default).
fn runtime_flags(c: &Containerd, runtime: &Path) -> Vec<String> {
    if runtime == runc_rs() {
        return Vec::new();
    }
    let cfg = runtime_config(c, "runtime", runtime, "");
    vec![
        "--runtime-config-path".into(),
        cfg.to_string_lossy().into_owned(),
    ]
}

fn run_detached(c: &Containerd, flags: &[String], id: &str, cmd: &[&str]) {
    let mut f: Vec<&str> = vec!["-d"];
    f.extend(flags.iter().map(String::as_str));
    let out = c
        .run(&f, id, cmd)
        .unwrap_or_else(|e| panic!("ctr run -d: {e}"));
    assert!(out.status.success(), "{}", describe(&out));
}

/// `sh -c <line>` (for pipes and `script`), killed after the default timeout.
fn shell(line: &str) -> std::process::Output {
    run_with_timeout(
        Command::new("sh").args(["-c", line]),
        Duration::from_secs(60),
    )
    .unwrap_or_else(|e| panic!("{line}: {e}"))
}

fn ctr_line(c: &Containerd, args: &[&str]) -> String {
    let argv = c.ctr_argv(args);
    argv.iter()
        .map(|a| shell_quote(a))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Pause/resume events, Update through the runtime, exec -t with its
/// window size, CloseIO, and exits in order, with `runtime`.
fn task_operations(runtime: &Path) {
    eprintln!("--- with {}", runtime.display());
    let Some((c, _)) = rust_shim() else { return };
    let flags = runtime_flags(&c, runtime);
    let events = CtrEvents::start(&c);
    let id = "ops";
    run_detached(&c, &flags, id, &["sh", "-c", "while :; do sleep 1; done"]);

    c.ctr_ok(&["task", "pause", id]);
    assert_eq!(c.task_status(id).map(|t| t.1).as_deref(), Some("PAUSED"));
    events.wait_for("/tasks/paused", id, LONG);
    c.ctr_ok(&["task", "resume", id]);
    assert_eq!(c.task_status(id).map(|t| t.1).as_deref(), Some("RUNNING"));
    events.wait_for("/tasks/resumed", id, LONG);

    // Update (ctr 1.6 has no `task update`): the task API straight to the
    // shim's socket, as containerd would send it.
    let socket = shim_socket(&c, id).expect("shim socket");
    let mut any = Any::new();
    any.type_url = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into();
    any.value = br#"{"memory":{"limit":67108864},"pids":{"limit":77}}"#.to_vec();
    let req = UpdateTaskRequest {
        id: id.into(),
        resources: MessageField::some(any),
        ..Default::default()
    };
    task_client(&socket).update(ctx(), &req).expect("Update");
    let limit = cgroup_file(&c, id, "memory.limit_in_bytes", "memory.max");
    assert_eq!(limit.as_deref(), Some("67108864"));
    assert_eq!(
        cgroup_file(&c, id, "pids.max", "pids.max").as_deref(),
        Some("77")
    );

    // exec -t: ctr sends the terminal's size (ResizePty) once started.
    let fifo = c.dir().join("fifo").to_string_lossy().into_owned();
    let exec = ctr_line(
        &c,
        &[
            "task",
            "exec",
            "-t",
            "--fifo-dir",
            &fifo,
            "--exec-id",
            "tty1",
            id,
            "sh",
            "-c",
            "sleep 1; stty size; exit 6",
        ],
    );
    let line = format!("stty rows 33 cols 111; {exec}");
    let out = run_with_timeout(
        Command::new("script").args(["-q", "-e", "-c", &line, "/dev/null"]),
        Duration::from_secs(60),
    )
    .expect("script");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("33 111"),
        "{}",
        describe(&out)
    );
    assert_eq!(exit_code(&out.status), 6, "{}", describe(&out));

    // CloseIO: ctr closes the exec's stdin at EOF of its own; cat ends.
    let exec = ctr_line(
        &c,
        &[
            "task",
            "exec",
            "--fifo-dir",
            &fifo,
            "--exec-id",
            "in1",
            id,
            "sh",
            "-c",
            "cat; echo cat-done",
        ],
    );
    let out = shell(&format!("printf 'hello-stdin\\n' | {exec}"));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello-stdin\ncat-done\n",
        "{}",
        describe(&out)
    );

    // An exec still running when the init is killed: its TaskExit comes
    // first, then the init's.
    c.ctr_ok(&[
        "task",
        "exec",
        "-d",
        "--fifo-dir",
        &fifo,
        "--exec-id",
        "long",
        id,
        "sleep",
        "300",
    ]);
    events.wait_for("/tasks/exec-started", id, LONG);
    c.ctr_ok(&["task", "kill", "--signal", "SIGKILL", id]);
    assert!(c.wait_task_status(id, "STOPPED", LONG));
    let exits: Vec<String> = events
        .of("/tasks/exit", id)
        .iter()
        .map(|e| e["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let pos = |x: &str| exits.iter().position(|e| e == x);
    assert!(
        pos("long").is_some() && pos(id).is_some(),
        "exits: {exits:?}"
    );
    assert!(
        pos("long") < pos(id),
        "init's exit before its exec's: {exits:?}"
    );
    c.ctr_ok(&["task", "rm", id]);
    c.ctr_ok(&["container", "rm", id]);

    // TaskDelete for the init only, never for an exec.
    wait_until("TaskDelete", LONG, || {
        !events.of("/tasks/delete", id).is_empty()
    });
    let deletes = events.of("/tasks/delete", id);
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(
        deletes[0]["id"].as_str().unwrap_or("") != "long",
        "{deletes:?}"
    );
    for exec in ["tty1", "in1", "long"] {
        let added = events.of("/tasks/exec-added", id);
        assert!(
            added.iter().any(|e| e["exec_id"] == exec),
            "no exec-added for {exec}"
        );
    }
    assert_clean(&c, &[id]);
}

#[test]
fn pause_resume_update_exec_tty_closeio_exit_order() {
    for runtime in runtimes_supporting(&["exec", "pause", "resume", "update"]) {
        task_operations(&runtime);
    }
}

/// A logging driver as containerd documents them: stdout on fd 3, stderr
/// on fd 4, a ready pipe on fd 5, `CONTAINER_ID` / `CONTAINER_NAMESPACE`.
fn logging_binary(dir: &Path) -> PathBuf {
    let p = dir.join("logger.sh");
    fs::write(
        &p,
        "#!/bin/sh\n# args: file <path>\nlog=\"$2\"\n\
         echo \"id=$CONTAINER_ID ns=$CONTAINER_NAMESPACE args=$*\" >> \"$log\"\n\
         { while IFS= read -r l; do echo \"out: $l\"; done <&3 >> \"$log\"; } 5>&- &\n\
         { while IFS= read -r l; do echo \"err: $l\"; done <&4 >> \"$log\"; } 5>&- &\n\
         exec 5>&-\ntrap 'exit 0' TERM\nwait\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
    p
}

#[test]
fn binary_logging_uri() {
    let Some((c, _)) = rust_shim() else { return };
    let logger = logging_binary(c.dir());
    let log = c.dir().join("logs/binary.log");
    let uri = format!("binary://{}?file={}", logger.display(), log.display());
    let id = "binlog";
    let out = c
        .run(
            &["-d", "--log-uri", &uri],
            id,
            &["sh", "-c", "echo to-out; echo to-err >&2; sleep 300"],
        )
        .unwrap_or_else(|e| panic!("ctr run: {e}"));
    assert!(out.status.success(), "{}", describe(&out));
    wait_for_file_containing(&log, "out: to-out", LONG);
    wait_for_file_containing(&log, "err: to-err", LONG);
    let text = fs::read_to_string(&log).unwrap();
    let header = format!("id={id} ns={} args=file {}", c.namespace(), log.display());
    assert!(text.contains(&header), "{text}");
    let needle = logger.to_string_lossy().into_owned();
    let loggers = || pids_matching(|a| a.iter().any(|x| x.contains(&needle)));
    assert!(!loggers().is_empty(), "logging binary not running");
    remove(&c, id);
    wait_until("the logging binary to exit", LONG, || loggers().is_empty());
    assert_clean(&c, &[id]);
}

/// Without a pid namespace of its own, a container's processes outlive its
/// init unless the shim kills them (`runc kill --all`) when the init exits.
/// (The host's pid namespace is joined through this test's own pid: pid 1
/// of this machine refuses to be opened, EACCES.)
#[test]
fn host_pid_namespace_processes_die_with_init() {
    let Some((c, _)) = rust_shim() else { return };
    let events = CtrEvents::start(&c);
    let id = "hostpid";
    let log = c.log_file(id);
    let log_uri = format!("file://{}", log.display());
    let host_pid = format!("pid:/proc/{}/ns/pid", std::process::id());
    let flags = ["-d", "--with-ns", &host_pid, "--log-uri", &log_uri];
    let out = c
        .run(
            &flags,
            id,
            &["sh", "-c", "sleep 1000 & echo bg=$!; sleep 2"],
        )
        .unwrap_or_else(|e| panic!("ctr run: {e}"));
    assert!(out.status.success(), "{}", describe(&out));
    wait_for_file_containing(&log, "bg=", LONG);
    let text = fs::read_to_string(&log).unwrap();
    let bg: i32 = text
        .split("bg=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {text:?}"));
    assert!(
        Path::new(&format!("/proc/{bg}")).exists(),
        "background sleep {bg} not running"
    );
    events.wait_for("/tasks/exit", id, LONG);
    wait_until("the init's orphan to be killed", LONG, || {
        !Path::new(&format!("/proc/{bg}")).exists()
    });
    c.ctr_ok(&["task", "rm", id]);
    c.ctr_ok(&["container", "rm", id]);
    assert_clean(&c, &[id]);
}
