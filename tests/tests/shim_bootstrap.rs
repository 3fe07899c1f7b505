//! `containerd-shim-runc-v2-rs` started the way each containerd starts
//! shims, `-info`, runtime options, and error codes.
//!
//! Only containerd 1.6 is installed here, so the 1.7, 2.0–2.2 and 2.3 forms
//! of the `start` action are driven by the test itself: the flags,
//! environment and stdin those versions give (read from their sources), a
//! `-publish-binary` whose Go build info says which containerd it is, then
//! a ttrpc client calling Connect and State on the `containerd.task.v3.Task`
//! service at the address the shim printed.
//!
//! Needs root and the built binaries. Run:
//! `cargo test -p integration-tests --test shim_bootstrap`

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use containerd_shim_protos::api::{ConnectRequest, ShutdownRequest, StateRequest};
use containerd_shim_protos::bootstrap_api::{BootstrapParams, BootstrapResult, Extension};
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::oci::Options;
use containerd_shim_protos::types::introspection::RuntimeInfo;
use integration_tests::containerd::{
    describe, pids_matching, remove_shim_socket_dirs, runtime_under_test, shim_socket_lock,
};
use integration_tests::shim_rs::{
    ctx, fake_go_binary, ppid, runc_options, runc_rs, runtime_config, rust_shim_env, shim_bin,
    status_code, task_client, wait_for_file_containing, wait_until, RUNC, RUNTIME,
};
use ttrpc::Code;

const LONG: Duration = Duration::from_secs(20);

/// Kills (by pid) the shims started for `namespace` and removes `sockets`.
struct ShimGuard {
    namespace: String,
    sockets: Vec<PathBuf>,
}

impl Drop for ShimGuard {
    fn drop(&mut self) {
        let ns = self.namespace.clone();
        for pid in pids_matching(|a| a.windows(2).any(|w| w[0] == "-namespace" && w[1] == ns)) {
            eprintln!("cleanup: killing leftover shim {pid}");
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for s in &self.sockets {
            let _ = fs::remove_file(s);
        }
    }
}

/// How the test plays one containerd version.
struct Caller<'a> {
    name: &'a str,
    env: Vec<(&'a str, String)>,
    stdin: Vec<u8>,
    publish_binary: PathBuf,
}

/// Run `start` as `caller`, check the reply's form with `parse` (which
/// returns the socket path), then talk to the shim over ttrpc (v3 names)
/// and shut it down.
fn start_as(caller: Caller<'_>, ns: &str, parse: impl Fn(&[u8]) -> PathBuf) {
    eprintln!("--- as {}", caller.name);
    let bundle = testdata::temp_dir().unwrap();
    fs::write(bundle.path().join("config.json"), "{}").unwrap();
    let mut guard = ShimGuard {
        namespace: ns.to_owned(),
        sockets: Vec::new(),
    };
    let mut cmd = Command::new(shim_bin());
    cmd.args([
        "-namespace",
        ns,
        "-address",
        "/nonexistent/containerd.sock",
        "-publish-binary",
    ])
    .arg(&caller.publish_binary)
    .args(["-id", "boot", "start"])
    .current_dir(bundle.path())
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .envs(caller.env.iter().map(|(k, v)| (k, v)))
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn shim start");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&caller.stdin)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}: {}", caller.name, describe(&out));
    assert!(
        out.stderr.is_empty(),
        "{}: start wrote to stderr: {}",
        caller.name,
        describe(&out)
    );
    let socket = parse(&out.stdout);
    guard.sockets.push(socket.clone());
    let client = task_client(&socket);
    let r = client
        .connect(
            ctx(),
            &ConnectRequest {
                id: "boot".into(),
                ..Default::default()
            },
        )
        .expect("Connect");
    assert!(r.shim_pid > 0 && r.task_pid == 0, "{r:?}");
    // The server wrote the address file before it began to serve.
    let addr_file = fs::read_to_string(bundle.path().join("address")).unwrap();
    assert_eq!(addr_file, format!("unix://{}", socket.display()));
    let (c, _) = status_code(client.state(
        ctx(),
        &StateRequest {
            id: "boot".into(),
            ..Default::default()
        },
    ));
    assert_eq!(c, Code::NOT_FOUND);
    client
        .shutdown(ctx(), &ShutdownRequest::default())
        .expect("Shutdown");
    let shim = format!("/proc/{}", r.shim_pid);
    wait_until("the shim to exit", LONG, || {
        fs::read_to_string(format!("{shim}/stat")).map_or(true, |s| s.contains(") Z "))
    });
    wait_until("the socket to go", LONG, || !socket.exists());
}

#[test]
fn start_speaks_each_containerds_protocol() {
    if runtime_under_test().is_none() {
        return;
    }
    let _lock = shim_socket_lock();
    let tmp = testdata::temp_dir().unwrap();
    let ns = |v: &str| format!("shimtest-{}-{v}", std::process::id());
    let ttrpc = (
        "TTRPC_ADDRESS",
        "/nonexistent/containerd.sock.ttrpc".to_owned(),
    );
    let options = runc_options(&runc_rs(), &tmp.path().join("root"))
        .write_to_bytes()
        .unwrap();
    let v1 = tmp.path().join("containerd-1.7");
    fake_go_binary(&v1, "github.com/containerd/containerd/cmd/containerd");
    let v2 = tmp.path().join("containerd-2.1");
    fake_go_binary(&v2, "github.com/containerd/containerd/v2/cmd/containerd");
    let bare = |out: &[u8]| {
        let s = String::from_utf8(out.to_vec()).expect("utf-8 address");
        assert!(
            s.starts_with("unix:///run/containerd/s/") && !s.contains('{'),
            "{s:?}"
        );
        PathBuf::from(s.trim_start_matches("unix://"))
    };

    // 1.6: TTRPC_ADDRESS, options on stdin; reads the bare address.
    let c16 = Caller {
        name: "containerd 1.6",
        env: vec![ttrpc.clone()],
        stdin: options.clone(),
        publish_binary: "/usr/bin/containerd".into(),
    };
    start_as(c16, &ns("16"), bare);

    // 1.7 adds MAX_SHIM_VERSION, GRPC_ADDRESS, NAMESPACE; still the bare
    // address (1.7 refuses a version 3 reply).
    let legacy_env = |n: &str| {
        vec![
            ttrpc.clone(),
            ("MAX_SHIM_VERSION", "2".to_owned()),
            ("GRPC_ADDRESS", "/nonexistent/containerd.sock".to_owned()),
            ("NAMESPACE", n.to_owned()),
            ("GOMAXPROCS", "2".to_owned()),
        ]
    };
    let c17 = Caller {
        name: "containerd 1.7",
        env: legacy_env(&ns("17")),
        stdin: options.clone(),
        publish_binary: v1,
    };
    start_as(c17, &ns("17"), bare);

    // 2.0–2.2: the same environment; JSON of task API version 3.
    let c21 = Caller {
        name: "containerd 2.1",
        env: legacy_env(&ns("21")),
        stdin: options.clone(),
        publish_binary: v2.clone(),
    };
    start_as(c21, &ns("21"), |out| {
        let j: serde_json::Value = serde_json::from_slice(out).expect("JSON reply");
        assert_eq!(j["version"], 3, "{j}");
        assert_eq!(j["protocol"], "ttrpc", "{j}");
        PathBuf::from(j["address"].as_str().unwrap().trim_start_matches("unix://"))
    });

    // 2.3: BootstrapParams on stdin (the options as an extension, a socket
    // dir of its own), BootstrapResult on stdout.
    let sock_dir = tmp.path().join("sockets");
    let mut p = BootstrapParams::new();
    p.instance_id = "boot".into();
    p.namespace = ns("23");
    p.containerd_version = "v2.3.0".into();
    p.containerd_ttrpc_address = ttrpc.1.clone();
    p.containerd_grpc_address = "/nonexistent/containerd.sock".into();
    p.containerd_binary = v2.to_string_lossy().into_owned();
    p.socket_dir = Some(sock_dir.to_string_lossy().into_owned());
    p.extensions.push(Extension {
        value: MessageField::some(runc_options(&runc_rs(), &tmp.path().join("root"))),
        ..Default::default()
    });
    let c23 = Caller {
        name: "containerd 2.3",
        env: legacy_env(&ns("23")),
        stdin: p.write_to_bytes().unwrap(),
        publish_binary: v2,
    };
    start_as(c23, &ns("23"), |out| {
        let r = BootstrapResult::parse_from_bytes(out).expect("BootstrapResult protobuf");
        assert_eq!((r.version, r.protocol.as_str()), (3, "ttrpc"), "{r:?}");
        let path = PathBuf::from(r.address.trim_start_matches("unix://"));
        assert!(
            path.starts_with(&sock_dir),
            "socket {path:?} not in {sock_dir:?}"
        );
        path
    });
    remove_shim_socket_dirs();
}

#[test]
fn info_reports_runtime_features() {
    if runtime_under_test().is_none() {
        return;
    }
    let tmp = testdata::temp_dir().unwrap();
    let options = runc_options(&runc_rs(), &tmp.path().join("root"));
    let mut child = Command::new(shim_bin())
        .arg("-info")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&options.write_to_bytes().unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    let info = RuntimeInfo::parse_from_bytes(&out.stdout).expect("RuntimeInfo protobuf");
    assert_eq!(info.name, RUNTIME);
    assert!(!info.version.version.is_empty());
    assert_eq!(info.options.type_url, "containerd.runc.v1.Options");
    let o = Options::parse_from_bytes(&info.options.value).unwrap();
    assert_eq!(o.binary_name, runc_rs().to_string_lossy());
    assert_eq!(
        info.features.type_url,
        "types.containerd.io/opencontainers/runtime-spec/1/features/Features"
    );
    let f: serde_json::Value = serde_json::from_slice(&info.features.value).expect("features JSON");
    assert!(f["ociVersionMin"].is_string(), "{f}");
}

/// Options from ctr's `--runtime-config-path` (CRI's runtime options: a
/// TOML file) and, when a request has none, from the shim config file.
#[test]
fn runtime_options_config_path_and_shim_config_file() {
    let tmp = testdata::temp_dir().unwrap();
    let shim_config = tmp.path().join("runc-rs-shim.toml");
    let shim_root = tmp.path().join("shim-root");
    fs::write(
        &shim_config,
        format!(
            "BinaryName = \"{RUNC}\"\nRoot = \"{}\"\n",
            shim_root.display()
        ),
    )
    .unwrap();
    let cfg_env = shim_config.to_string_lossy().into_owned();
    let Some((c, _)) = rust_shim_env(&[("RUNC_RS_SHIM_CONFIG", &cfg_env)]) else {
        return;
    };

    // No options in the request: the shim config file's runtime (runc).
    let out = c
        .run(&["-d"], "from-file", &["sleep", "300"])
        .expect("ctr run");
    assert!(out.status.success(), "{}", describe(&out));
    let st = Command::new(RUNC)
        .arg("--root")
        .arg(shim_root.join(c.namespace()))
        .args(["state", "from-file"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&st.stdout).contains("\"running\""),
        "{}",
        describe(&st)
    );

    // A config path: runc-rs, the shim in a cgroup of its own, the stdio
    // pipes owned by 1234:1234.
    let shim_cg = make_cgroup(&c, "shims");
    let extra = format!("ShimCgroup = \"{shim_cg}\"\nIoUid = 1234\nIoGid = 1234\n");
    let cfg = runtime_config(&c, "opts", &runc_rs(), &extra);
    let log = c.log_file("from-path");
    let flags = [
        "-d",
        "--runtime-config-path",
        cfg.to_str().unwrap(),
        "--log-uri",
    ];
    let log_uri = format!("file://{}", log.display());
    let mut f: Vec<&str> = flags.to_vec();
    f.push(&log_uri);
    let script = "stat -L -c owner=%u:%g /proc/self/fd/1; sleep 300";
    let out = c
        .run(&f, "from-path", &["sh", "-c", script])
        .expect("ctr run");
    assert!(out.status.success(), "{}", describe(&out));
    wait_for_file_containing(&log, "owner=1234:1234", LONG);
    let (pid, _) = c.task_status("from-path").expect("listed");
    let shim = ppid(pid);
    let cgroups = fs::read_to_string(format!("/proc/{shim}/cgroup")).unwrap();
    // The v1 memory hierarchy's line, or the cgroup2 one on a pure v2 host.
    let line = cgroups
        .lines()
        .find(|l| l.contains(":memory:"))
        .or_else(|| cgroups.lines().find(|l| l.starts_with("0::")))
        .unwrap_or_default();
    assert!(
        line.ends_with(&shim_cg),
        "shim not in {shim_cg}:\n{cgroups}"
    );
    for id in ["from-file", "from-path"] {
        let _ = c.ctr(&["task", "kill", "--signal", "SIGKILL", id]);
        assert!(c.wait_task_status(id, "STOPPED", LONG));
        c.ctr_ok(&["task", "rm", id]);
        c.ctr_ok(&["container", "rm", id]);
    }
    integration_tests::shim_rs::assert_clean(&c, &["from-file", "from-path"]);
}

/// Create `<parent>/<name>` in every hierarchy (cpuset.cpus/mems copied
/// down, or the v1 cpuset refuses tasks); the harness's cgroup parent
/// removes it. Returns the cgroup path.
fn make_cgroup(c: &integration_tests::containerd::Containerd, name: &str) -> String {
    for d in c.cgroups().dirs() {
        let leaf = d.join(name);
        fs::create_dir_all(&leaf).unwrap();
        for level in [d.clone(), leaf] {
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let parent = level.parent().unwrap().join(f);
                if let Ok(v) = fs::read_to_string(&parent) {
                    if fs::read_to_string(level.join(f))
                        .map(|s| s.trim().is_empty())
                        .unwrap_or(false)
                    {
                        let _ = fs::write(level.join(f), v.trim());
                    }
                }
            }
        }
    }
    c.cgroups().child(name)
}
