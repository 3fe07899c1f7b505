//! Helpers of the Rust shim's end-to-end tests (`tests/tests/shim_*.rs`):
//! a private containerd whose `$PATH` holds the shim, what a test checks
//! once its containers are gone, `ctr events` in the background, a ttrpc
//! client of the shim's task service, a shim server run by the test itself,
//! and which runtimes support which commands.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options;
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;

use crate::containerd::{pids_matching, require_tools, runtime_under_test, stop_child, Containerd};
use crate::runtime::runc_rs_bin;

pub const RUNTIME: &str = "io.containerd.runc.v2-rs";
pub const SHIM_NAME: &str = "containerd-shim-runc-v2-rs";
pub const RUNC: &str = "/usr/sbin/runc";

/// The shim under test: `$SHIM_RS_BIN`, else the one cargo built beside
/// this test executable.
pub fn shim_bin() -> PathBuf {
    let p = match std::env::var_os("SHIM_RS_BIN") {
        Some(p) => PathBuf::from(p),
        None => {
            let exe = std::env::current_exe().expect("current_exe");
            exe.parent()
                .and_then(|d| d.parent())
                .expect("target profile dir")
                .join(SHIM_NAME)
        }
    };
    assert!(
        p.is_file(),
        "shim binary {} missing: build it first (`cargo build -p shim-runc-v2`) or set SHIM_RS_BIN",
        p.display()
    );
    std::path::absolute(&p).unwrap_or(p)
}

/// runc-rs, absolute.
pub fn runc_rs() -> PathBuf {
    let p = std::path::absolute(runc_rs_bin()).expect("runc-rs path");
    assert!(
        p.is_file(),
        "{} missing: cargo build -p runc-rs",
        p.display()
    );
    p
}

/// A private containerd whose PATH holds the shim as `shim_as` and runc-rs
/// (`runtime`: what `--runc-binary` names), `env` added to containerd's
/// environment, the busybox image imported; `None` when not root.
pub fn containerd_with(
    shim_as: &str,
    runtime: Option<&Path>,
    env: &[(&str, &str)],
) -> Option<(Containerd, PathBuf)> {
    runtime_under_test()?;
    require_tools(&["containerd", "ctr", "script"]);
    let shim = shim_bin();
    let runc_rs = runc_rs();
    let runtime = runtime
        .map(Path::to_path_buf)
        .unwrap_or_else(|| runc_rs.clone());
    let links: [(&str, &Path); 2] = [(shim_as, &shim), ("runc-rs", &runc_rs)];
    let mut c = Containerd::start_with_env(&runtime, &links, env)
        .unwrap_or_else(|e| panic!("start a private containerd: {e}"));
    c.import_busybox()
        .unwrap_or_else(|e| panic!("import the busybox image archive: {e}"));
    Some((c, shim))
}

/// containerd selecting the shim by `io.containerd.runc.v2-rs`; the runtime
/// binary is the shim's choice (runc-rs unless options say otherwise).
pub fn rust_shim() -> Option<(Containerd, PathBuf)> {
    rust_shim_env(&[])
}

/// [`rust_shim`] with `env` in containerd's (and so the shim's) environment.
pub fn rust_shim_env(env: &[(&str, &str)]) -> Option<(Containerd, PathBuf)> {
    let (mut c, shim) = containerd_with(SHIM_NAME, None, env)?;
    c.set_runtime_name(RUNTIME, false);
    Some((c, shim))
}

/// The Rust shim standing in for `containerd-shim-runc-v2`, with ctr's runc
/// options selecting `runtime` as the runtime binary.
pub fn drop_in_shim(runtime: &Path) -> Option<(Containerd, PathBuf)> {
    containerd_with("containerd-shim-runc-v2", Some(runtime), &[])
}

/// Write a runtime options file (`ctr run --runtime-config-path`) naming
/// `binary`, with the state root inside the harness dir, plus `extra` TOML.
pub fn runtime_config(c: &Containerd, name: &str, binary: &Path, extra: &str) -> PathBuf {
    let p = c.dir().join(format!("{name}.toml"));
    let text = format!(
        "# ctr run --runtime-config-path\nBinaryName = \"{}\"\nRoot = \"{}\"\n{extra}",
        binary.display(),
        c.dir().join("runc").display()
    );
    fs::write(&p, text).expect("write runtime config");
    p
}

/// Whether `runtime <cmd> --help` succeeds: runc-rs grows commands over
/// time, and the tests that need one run for it once it has it.
pub fn supports(runtime: &Path, cmd: &str) -> bool {
    Command::new(runtime)
        .args([cmd, "--help"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The runtimes a test needing `cmds` runs with: runc always, runc-rs once
/// it implements all of them (said on stderr when it is skipped).
pub fn runtimes_supporting(cmds: &[&str]) -> Vec<PathBuf> {
    let runc = PathBuf::from(RUNC);
    assert!(runc.is_file(), "runc not installed (scripts/setup.sh)");
    let mut out = vec![runc];
    let rs = runc_rs();
    let missing: Vec<&str> = cmds.iter().copied().filter(|c| !supports(&rs, c)).collect();
    if missing.is_empty() {
        out.push(rs);
    } else {
        eprintln!("runc-rs lacks {missing:?}: running with runc only");
    }
    out
}

/// Pids of shims serving this containerd.
pub fn shims(c: &Containerd) -> Vec<i32> {
    let sock = c.socket().to_string_lossy().into_owned();
    pids_matching(|a| {
        a[0].contains("containerd-shim") && a.windows(2).any(|w| w[0] == "-address" && w[1] == sock)
    })
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

pub fn mountpoints_under(dir: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let d = dir.to_string_lossy().into_owned();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_owned))
        .filter(|m| m.starts_with(&d))
        .collect()
}

/// What every test checks once its containers are gone: the shim exited,
/// nothing is mounted under the daemon's dir, no container cgroup is left.
pub fn assert_clean(c: &Containerd, ids: &[&str]) {
    wait_until("the shims to exit", Duration::from_secs(10), || {
        shims(c).is_empty()
    });
    let m = mountpoints_under(c.dir());
    assert!(
        m.is_empty(),
        "mounts left under {}: {m:?}",
        c.dir().display()
    );
    for id in ids {
        for d in c.cgroups().dirs() {
            let cg = d.join(id);
            assert!(
                !cg.exists(),
                "cgroup {} left at {}",
                c.cgroups().child(id),
                cg.display()
            );
        }
    }
}

/// The shim's socket of task `id` (from its bundle's address file).
pub fn shim_socket(c: &Containerd, id: &str) -> Option<PathBuf> {
    let f = c
        .dir()
        .join("state/io.containerd.runtime.v2.task")
        .join(c.namespace())
        .join(id)
        .join("address");
    let a = fs::read_to_string(f).ok()?;
    Some(PathBuf::from(a.trim().trim_start_matches("unix://")))
}

/// The parent pid of `pid` (its shim, for a container's init).
pub fn ppid(pid: u32) -> i32 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    stat.rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("ppid")
}

pub fn status_kib(pid: i32, field: &str) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

pub fn wait_for_file_containing(path: &Path, needle: &str, timeout: Duration) {
    wait_until(
        &format!("{needle:?} in {}", path.display()),
        timeout,
        || {
            fs::read_to_string(path)
                .unwrap_or_default()
                .contains(needle)
        },
    );
}

/// `ctr events` running in the background; its lines are collected.
pub struct CtrEvents {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl CtrEvents {
    /// Subscribe (and give ctr a moment to be subscribed).
    pub fn start(c: &Containerd) -> CtrEvents {
        let argv = c.ctr_argv(&["events"]);
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ctr events");
        let out = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l2 = Arc::clone(&lines);
        thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l2.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        thread::sleep(Duration::from_millis(500));
        CtrEvents { child, lines }
    }

    /// (topic, event JSON) of every event so far, in order.
    pub fn events(&self) -> Vec<(String, serde_json::Value)> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone();
        lines
            .iter()
            .filter_map(|l| {
                let at = l.find(" /")?;
                let rest = &l[at + 1..];
                let (topic, json) = rest.split_once(' ').unwrap_or((rest, "{}"));
                Some((
                    topic.to_owned(),
                    serde_json::from_str(json).unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// The events of `topic` about container `id`.
    pub fn of(&self, topic: &str, id: &str) -> Vec<serde_json::Value> {
        self.events()
            .into_iter()
            .filter(|(t, e)| t == topic && e["container_id"] == id)
            .map(|(_, e)| e)
            .collect()
    }

    /// Wait until an event of `topic` about `id` arrived.
    pub fn wait_for(&self, topic: &str, id: &str, timeout: Duration) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.of(topic, id).into_iter().next() {
                return e;
            }
            assert!(
                Instant::now() < deadline,
                "no {topic} event for {id} within {timeout:?}; events: {:?}",
                self.events()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for CtrEvents {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(2));
    }
}

/// A ttrpc client of the task service at `socket` (v3 service names).
pub fn task_client(socket: &Path) -> TaskClient {
    let addr = format!("unix://{}", socket.display());
    let c = ttrpc::Client::connect(&addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    TaskClient::new(c)
}

/// runc's Options (`containerd.runc.v1.Options`) naming `binary` and `root`.
pub fn runc_options(binary: &Path, root: &Path) -> Any {
    let mut o = Options::new();
    o.binary_name = binary.to_string_lossy().into_owned();
    o.root = root.to_string_lossy().into_owned();
    let mut a = Any::new();
    a.type_url = "containerd.runc.v1.Options".into();
    a.value = o.write_to_bytes().unwrap();
    a
}

/// The ttrpc status code and message of a failed call.
pub fn status_code<T: std::fmt::Debug>(r: ttrpc::Result<T>) -> (ttrpc::Code, String) {
    match r {
        Err(ttrpc::Error::RpcStatus(s)) => (s.code(), s.message().to_owned()),
        other => panic!("expected an RPC error status, got {other:?}"),
    }
}

/// A ttrpc call context with a 20 s deadline.
pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(20_000_000_000)
}

/// A shim server started by the test itself (`-socket`, no containerd):
/// for requests ctr cannot express. Killed (by pid) on drop.
pub struct ServedShim {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub namespace: String,
}

impl ServedShim {
    pub fn start(namespace: &str) -> ServedShim {
        let dir = testdata::temp_dir().expect("temp dir");
        let socket = dir.path().join("shim.sock");
        let child = Command::new(shim_bin())
            .args([
                "-namespace",
                namespace,
                "-id",
                "served",
                "-address",
                "/nonexistent/c.sock",
            ])
            .arg("-socket")
            .arg(&socket)
            .arg("-debug")
            .current_dir(dir.path())
            .env_remove("TTRPC_ADDRESS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn shim server");
        wait_until("the shim socket", Duration::from_secs(10), || {
            socket.exists()
        });
        ServedShim {
            child,
            dir,
            socket,
            namespace: namespace.to_owned(),
        }
    }

    pub fn client(&self) -> TaskClient {
        task_client(&self.socket)
    }

    /// Whether the server still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for ServedShim {
    fn drop(&mut self) {
        stop_child(&mut self.child, Duration::from_secs(5));
    }
}

/// A minimal ELF file whose `.go.buildinfo` names `main_path` as the main
/// package: what the shim reads of `-publish-binary` to tell containerd
/// 2.x (`github.com/containerd/containerd/v2/cmd/containerd`) from 1.x.
pub fn fake_go_binary(path: &Path, main_path: &str) {
    fn varint(out: &mut Vec<u8>, mut v: usize) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    let marker = [
        0x30u8, 0x77, 0xaf, 0x0c, 0x92, 0x74, 0x08, 0x02, 0x41, 0xe1, 0xc1, 0x07, 0xe6, 0xd6, 0x18,
        0xe6,
    ];
    let mut modinfo = marker.to_vec();
    modinfo.extend_from_slice(format!("path\t{main_path}\nbuild\t-compiler=gc\n").as_bytes());
    modinfo.extend_from_slice(&marker);
    let mut info = b"\xff Go buildinf:\x08\x02".to_vec();
    info.resize(32, 0);
    varint(&mut info, 9);
    info.extend_from_slice(b"go1.22.12");
    varint(&mut info, modinfo.len());
    info.extend_from_slice(&modinfo);
    let names = b"\0.shstrtab\0.go.buildinfo\0".to_vec();
    let names_off = 64usize;
    let info_off = (names_off + names.len()).next_multiple_of(16);
    let sh_off = (info_off + info.len()).next_multiple_of(8);
    let mut f = vec![0u8; sh_off + 3 * 64];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // 64-bit
    f[5] = 1; // little-endian
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    f[20..24].copy_from_slice(&1u32.to_le_bytes());
    f[40..48].copy_from_slice(&(sh_off as u64).to_le_bytes());
    f[52..54].copy_from_slice(&64u16.to_le_bytes());
    f[58..60].copy_from_slice(&64u16.to_le_bytes());
    f[60..62].copy_from_slice(&3u16.to_le_bytes());
    f[62..64].copy_from_slice(&1u16.to_le_bytes());
    f[names_off..names_off + names.len()].copy_from_slice(&names);
    f[info_off..info_off + info.len()].copy_from_slice(&info);
    let mut section = |i: usize, name: u32, kind: u32, off: usize, size: usize| {
        let s = sh_off + i * 64;
        f[s..s + 4].copy_from_slice(&name.to_le_bytes());
        f[s + 4..s + 8].copy_from_slice(&kind.to_le_bytes());
        f[s + 24..s + 32].copy_from_slice(&(off as u64).to_le_bytes());
        f[s + 32..s + 40].copy_from_slice(&(size as u64).to_le_bytes());
    };
    section(1, 1, 3, names_off, names.len());
    section(2, 11, 1, info_off, info.len());
    fs::write(path, f).expect("write fake containerd binary");
}
