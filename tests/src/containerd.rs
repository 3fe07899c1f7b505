//! A private containerd for end-to-end tests, plus the host hygiene helpers
//! (timeouts, cgroup parents, leftover mounts and processes) that the
//! containerd and podman harnesses share.
//!
//! Why a private daemon: the tests must not depend on, or disturb, a
//! containerd the machine may run. [`Containerd::start`] runs Debian's
//! containerd 1.6 on a fresh temp dir (root, state, temp, sockets) with a
//! config written here (every plugin that would write outside that dir
//! disabled; CRI too, unless [`Containerd::start_cri`]), and [`Drop`] takes everything down again, also when the
//! test panicked: tasks, containers, the daemon, leftover shims, container
//! processes, mounts, cgroups and the dir.
//!
//! The runtime under test is containerd's Go shim (`io.containerd.runc.v2`)
//! driving the binary passed to [`Containerd::start`], through
//! `ctr run --runc-binary` (the shim's `BinaryName` option). Every container
//! gets `--cgroup <parent>/<id>` under a cgroup parent owned by the harness,
//! `--runc-root` and `--fifo-dir` inside the temp dir, so nothing lands in
//! `/run/containerd/runc` or `/run/containerd/fifo`.
//!
//! One thing containerd 1.6 does not let us move: its shims listen on
//! `/run/containerd/s/<hash>`. The harness removes the sockets of its shims,
//! and the directories if this test process created them and they are empty.

use std::fs;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

pub use crate::containerd_config::CriRuntime;
use crate::containerd_config::{config_toml, CriConfig};

// The hygiene helpers were first defined here; their paths stay valid.
pub use crate::hygiene::*;
use crate::hygiene::{CLEANUP_TIMEOUT, STARTUP_TIMEOUT};

// ---------------------------------------------------------------------------
// containerd
// ---------------------------------------------------------------------------

/// Where containerd 1.6 shims put their sockets (`runtime/v2/shim`,
/// `socketRoot` = `defaults.DefaultStateDir`): not configurable.
const SHIM_SOCKET_ROOT: &str = "/run/containerd";

/// Whether [`SHIM_SOCKET_ROOT`] existed before the first harness of this
/// process started (if not, the harness removes it again once empty).
fn shim_root_preexisted() -> bool {
    static PRE: OnceLock<bool> = OnceLock::new();
    *PRE.get_or_init(|| Path::new(SHIM_SOCKET_ROOT).exists())
}

/// One private containerd at a time per test process: keeps the 2-core
/// machine responsive and the shared shim socket dir cleanup race-free.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// For tests that start shims without a [`Containerd`] (the bootstrap
/// protocol tests): the lock every harness holds, so that no harness
/// removes the shared socket directory under them.
pub fn shim_socket_lock() -> MutexGuard<'static, ()> {
    shim_root_preexisted();
    serial()
}

/// Remove `/run/containerd/s` and `/run/containerd` if this process created
/// them and they are empty (call with [`shim_socket_lock`] held).
pub fn remove_shim_socket_dirs() {
    if !shim_root_preexisted() {
        let _ = fs::remove_dir(Path::new(SHIM_SOCKET_ROOT).join("s"));
        let _ = fs::remove_dir(SHIM_SOCKET_ROOT);
    }
}

/// A containerd daemon private to one test. See the module docs.
pub struct Containerd {
    runtime: PathBuf,
    /// `ctr run --runtime` (`io.containerd.runc.v2` unless set).
    runtime_name: String,
    /// Whether `ctr run` gets `--runc-binary` / `--runc-root` (ctr 1.6
    /// accepts them only with the `io.containerd.runc.v2` runtime name).
    runc_options: bool,
    namespace: String,
    cgroups: CgroupParent,
    socket: PathBuf,
    child: Option<Child>,
    /// containerd's `$PATH` and extra environment, to start it again
    /// ([`Containerd::start_daemon`]).
    path: std::ffi::OsString,
    env: Vec<(String, String)>,
    image: Option<String>,
    /// Whether the CRI plugin is on (namespace `k8s.io`, shared with any
    /// other containerd: nothing of it outside our dir is removed).
    cri: bool,
    // Dropped last, in this order: the dir, then the lock.
    dir: Option<TempDir>,
    _serial: MutexGuard<'static, ()>,
}

impl Containerd {
    /// Start containerd on a fresh temp dir, with `runtime` as the
    /// runc-compatible binary of the containers [`Containerd::run`] starts.
    /// Returns once containerd answers on its socket.
    pub fn start(runtime: &Path) -> io::Result<Containerd> {
        Containerd::start_with(runtime, &[])
    }

    /// Like [`Containerd::start`], with `<dir>/bin` first in containerd's
    /// `$PATH` holding a symlink `name -> target` for each of `links`: how a
    /// shim binary (`containerd-shim-<x>-<y>` for runtime `io.containerd.x.y`)
    /// and the runtime it looks up are put where containerd finds them.
    pub fn start_with(runtime: &Path, links: &[(&str, &Path)]) -> io::Result<Containerd> {
        Containerd::start_with_env(runtime, links, &[])
    }

    /// Like [`Containerd::start_with`], with `env` added to containerd's
    /// environment (which its shims inherit).
    pub fn start_with_env(
        runtime: &Path,
        links: &[(&str, &Path)],
        env: &[(&str, &str)],
    ) -> io::Result<Containerd> {
        Containerd::launch(runtime, links, env, None)
    }

    /// A containerd with its CRI plugin on, as the kubelet uses it, serving
    /// the `runtimes` handlers (`{dir}` in an option value is the harness's
    /// dir); `links` as for [`Containerd::start_with`]. The helpers' namespace
    /// is CRI's `k8s.io`; the busybox image is imported, and the sandbox
    /// image: busybox running `sleep`, as `pause` would.
    pub fn start_cri(
        runtime: &Path,
        links: &[(&str, &Path)],
        runtimes: &[CriRuntime],
    ) -> io::Result<Containerd> {
        let sandbox_image = unique_reference("pause");
        let cri = CriConfig {
            sandbox_image: &sandbox_image,
            runtimes,
        };
        let mut c = Containerd::launch(runtime, links, &[], Some(&cri))?;
        c.import_archive(&sandbox_image, &["sleep", "2147483647"])?;
        c.import_busybox()?;
        Ok(c)
    }

    fn launch(
        runtime: &Path,
        links: &[(&str, &Path)],
        env: &[(&str, &str)],
        cri: Option<&CriConfig>,
    ) -> io::Result<Containerd> {
        let guard = serial();
        shim_root_preexisted();
        let dir = testdata::temp_dir()?;
        let d = dir.path().to_path_buf();
        for sub in ["root", "state", "tmp", "runc", "fifo", "logs", "bin"] {
            fs::create_dir_all(d.join(sub))?;
        }
        for (name, target) in links {
            std::os::unix::fs::symlink(target, d.join("bin").join(name))?;
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let path = std::env::join_paths(
            std::iter::once(d.join("bin")).chain(std::env::split_paths(&path)),
        )
        .map_err(io::Error::other)?;
        let socket = d.join("containerd.sock");
        let cgroups = CgroupParent::new();
        // Namespace = cgroup parent name: ctr's default cgroupsPath is
        // /<namespace>/<id>, so even a container run without --cgroup
        // lands under our parent.
        let namespace = match cri {
            Some(_) => "k8s.io".to_owned(),
            None => cgroups.name.clone(),
        };
        fs::write(d.join("config.toml"), config_toml(&d, &socket, cri))?;
        let mut c = Containerd {
            runtime: runtime.to_path_buf(),
            runtime_name: "io.containerd.runc.v2".to_owned(),
            runc_options: true,
            namespace,
            cgroups,
            socket,
            child: None,
            path,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            image: None,
            cri: cri.is_some(),
            dir: Some(dir),
            _serial: guard,
        };
        c.child = Some(c.spawn_daemon()?);
        c.wait_ready()?;
        Ok(c)
    }

    /// Run containerd on this harness's config; its log is appended to.
    fn spawn_daemon(&self) -> io::Result<Child> {
        let d = self.dir();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("containerd.log"))?;
        Command::new("containerd")
            .env("PATH", &self.path)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("spawning containerd: {e}")))
    }

    /// Stop containerd (SIGTERM, as a service manager does) and wait for
    /// it; its shims and their containers go on running.
    pub fn stop_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(10));
        }
    }

    /// Start containerd again on the same root, state and sockets (after
    /// [`Containerd::stop_daemon`]); returns once it answers.
    pub fn start_daemon(&mut self) -> io::Result<()> {
        assert!(self.child.is_none(), "containerd is still running");
        self.child = Some(self.spawn_daemon()?);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(st) = self.child.as_mut().expect("child").try_wait()? {
                return Err(io::Error::other(format!(
                    "containerd exited during startup ({st}); log:\n{}",
                    self.log()
                )));
            }
            if self.socket.exists() {
                if let Ok(out) = self.ctr_timeout(&["version"], Duration::from_secs(5)) {
                    if out.status.success() {
                        return Ok(());
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "containerd not ready after {STARTUP_TIMEOUT:?}; log:\n{}",
                        self.log()
                    ),
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The harness's temp dir (root, state, sockets, logs).
    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }

    /// containerd's gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The containerd namespace the helpers use.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The cgroup parent of this harness's containers.
    pub fn cgroups(&self) -> &CgroupParent {
        &self.cgroups
    }

    /// The runtime binary the containers run with.
    pub fn runtime(&self) -> &Path {
        &self.runtime
    }

    /// Make [`Containerd::run`] use `ctr run --runtime <name>`, with or
    /// without the runc options (`--runc-binary <runtime>`, `--runc-root`).
    /// Without them the shim picks its default runtime binary and its default
    /// state root `/run/containerd/runc/<namespace>` (removed on drop).
    pub fn set_runtime_name(&mut self, name: &str, runc_options: bool) {
        self.runtime_name = name.to_owned();
        self.runc_options = runc_options;
    }

    /// The image imported by [`Containerd::import_busybox`].
    pub fn image(&self) -> Option<&str> {
        self.image.as_deref()
    }

    /// containerd's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir().join("containerd.log")).unwrap_or_default()
    }

    /// A file for a detached container's output (`ctr run --log-uri file://...`).
    pub fn log_file(&self, id: &str) -> PathBuf {
        self.dir().join("logs").join(format!("{id}.log"))
    }

    /// `ctr --address <ours> --namespace <ours> <args>` as argv.
    pub fn ctr_argv(&self, args: &[&str]) -> Vec<String> {
        let mut v = vec![
            "ctr".to_owned(),
            "--address".to_owned(),
            self.socket.to_string_lossy().into_owned(),
            "--namespace".to_owned(),
            self.namespace.clone(),
            "--connect-timeout".to_owned(),
            "10s".to_owned(),
        ];
        v.extend(args.iter().map(|s| s.to_string()));
        v
    }

    /// Run `ctr <args>` against this containerd, killed after [`default_timeout`].
    pub fn ctr(&self, args: &[&str]) -> io::Result<Output> {
        self.ctr_timeout(args, default_timeout())
    }

    /// Run `ctr <args>` against this containerd, killed after `timeout`.
    pub fn ctr_timeout(&self, args: &[&str], timeout: Duration) -> io::Result<Output> {
        let argv = self.ctr_argv(args);
        run_with_timeout(Command::new(&argv[0]).args(&argv[1..]), timeout)
    }

    /// Like [`Containerd::ctr`] but panics unless ctr exits 0; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self
            .ctr(args)
            .unwrap_or_else(|e| panic!("ctr {args:?}: {e}"));
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}",
            describe(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Build the busybox OCI archive (testdata) and `ctr images import` it;
    /// returns the image reference, also kept for [`Containerd::run`].
    pub fn import_busybox(&mut self) -> io::Result<String> {
        let reference = unique_reference("busybox");
        self.import_archive(&reference, &["sh"])?;
        self.image = Some(reference.clone());
        Ok(reference)
    }

    /// Build the busybox OCI archive with `cmd` as its command, named
    /// `reference`, and import it.
    fn import_archive(&self, reference: &str, cmd: &[&str]) -> io::Result<()> {
        let archive = self.dir().join("image.oci.tar");
        testdata::build_image_archive_with_cmd(&archive, reference, cmd)?;
        let archive_s = archive.to_string_lossy().into_owned();
        let out = self.ctr(&["images", "import", &archive_s])?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "ctr images import: {}",
                describe(&out)
            )));
        }
        let listed = self.ctr_ok(&["images", "ls", "-q"]);
        if !listed.lines().any(|l| l.trim() == reference) {
            return Err(io::Error::other(format!(
                "imported image {reference} not listed by ctr images ls: {listed}"
            )));
        }
        let _ = fs::remove_file(&archive);
        Ok(())
    }

    /// argv of `ctr run <flags> <harness flags> <image> <id> <cmd...>`: the
    /// harness flags select the runtime under test (`--runc-binary`), keep
    /// runc state and FIFOs in the temp dir and the cgroup under our parent.
    pub fn run_argv(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Vec<String> {
        let image = self.image.clone().expect("import_busybox() first");
        let d = self.dir();
        let mut args: Vec<String> = vec!["run".into()];
        args.extend(flags.iter().map(|s| s.to_string()));
        args.extend(["--runtime".into(), self.runtime_name.clone()]);
        if self.runc_options {
            args.extend([
                "--runc-binary".into(),
                self.runtime.to_string_lossy().into_owned(),
                "--runc-root".into(),
                d.join("runc").to_string_lossy().into_owned(),
            ]);
        }
        args.extend([
            "--fifo-dir".into(),
            d.join("fifo").to_string_lossy().into_owned(),
            "--cgroup".into(),
            self.cgroups.child(id),
            image,
            id.to_owned(),
        ]);
        args.extend(cmd.iter().map(|s| s.to_string()));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        self.ctr_argv(&refs)
    }

    /// `ctr run <flags> ... <id> <cmd...>` (see [`Containerd::run_argv`]).
    pub fn run(&self, flags: &[&str], id: &str, cmd: &[&str]) -> io::Result<Output> {
        let argv = self.run_argv(flags, id, cmd);
        run_with_timeout(Command::new(&argv[0]).args(&argv[1..]), default_timeout())
    }

    /// `ctr run -t --rm ... <id> <cmd...>` on a pseudo-terminal: ctr -t needs
    /// its stdin to be a tty, so it runs under util-linux
    /// `script -qec "<ctr ...>" /dev/null`, whose exit code is ctr's.
    /// stdout is the terminal's output (CRLF line ends).
    pub fn run_tty(&self, id: &str, cmd: &[&str]) -> io::Result<Output> {
        let argv = self.run_argv(&["-t", "--rm"], id, cmd);
        let line: Vec<String> = argv.iter().map(|a| shell_quote(a)).collect();
        run_with_timeout(
            Command::new("script").args(["-q", "-e", "-c", &line.join(" "), "/dev/null"]),
            default_timeout(),
        )
    }

    /// (pid, status) of task `id` per `ctr task ls`, `None` if not listed.
    pub fn task_status(&self, id: &str) -> Option<(u32, String)> {
        let out = self.ctr(&["task", "ls"]).ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.len() >= 3 && f[0] == id).then(|| (f[1].parse().unwrap_or(0), f[2].to_owned()))
            })
    }

    /// Poll `ctr task ls` until task `id` has `status`; false on timeout.
    pub fn wait_task_status(&self, id: &str, status: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.task_status(id).is_some_and(|(_, s)| s == status) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Container ids per `ctr containers ls -q`.
    pub fn containers(&self) -> Vec<String> {
        self.ctr(&["containers", "ls", "-q"])
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Tear everything down (what Drop does); idempotent.
    fn shutdown(&mut self) {
        let Some(dir) = self.dir.as_ref().map(|d| d.path().to_path_buf()) else {
            return;
        };
        let daemon_alive = self
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)));
        if daemon_alive {
            // Kill and delete every task and container of our namespace.
            let tasks = self
                .ctr_timeout(&["task", "ls", "-q"], CLEANUP_TIMEOUT)
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default();
            for id in tasks.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = self.ctr_timeout(
                    &["task", "kill", "--all", "--signal", "SIGKILL", id],
                    CLEANUP_TIMEOUT,
                );
                let _ = self.wait_task_status(id, "STOPPED", Duration::from_secs(5));
                let _ = self.ctr_timeout(&["task", "rm", "--force", id], CLEANUP_TIMEOUT);
            }
            let containers = self.containers();
            for id in &containers {
                let _ = self.ctr_timeout(&["containers", "rm", id], CLEANUP_TIMEOUT);
            }
        }
        // Shim sockets live outside our dir: note them before the state goes.
        let shim_sockets = shim_sockets(&dir.join("state"), SHIM_SOCKET_ROOT);
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Duration::from_secs(10));
        }
        // Shims outlive containerd by design; ours name our socket.
        let sock = self.socket.to_string_lossy().into_owned();
        let shims = pids_matching(|a| {
            a[0].contains("containerd-shim")
                && a.windows(2).any(|w| w[0] == "-address" && w[1] == sock)
        });
        for pid in shims {
            eprintln!("cleanup: killing leftover shim {pid}");
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        reap_processes_mentioning(&dir, Duration::from_secs(2));
        self.cgroups.cleanup();
        unmount_under(&dir);
        for s in shim_sockets {
            let _ = fs::remove_file(s);
        }
        // The shims' default runtime root for our (unique) namespace, used
        // when ctr sent no runc options.
        let default_root = Path::new(SHIM_SOCKET_ROOT).join("runc");
        if !self.cri {
            let _ = fs::remove_dir_all(default_root.join(&self.namespace));
        }
        if !shim_root_preexisted() {
            let _ = fs::remove_dir(&default_root);
            let _ = fs::remove_dir(Path::new(SHIM_SOCKET_ROOT).join("s"));
            let _ = fs::remove_dir(SHIM_SOCKET_ROOT);
        }
        if thread::panicking() {
            let log = self.log();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            eprintln!(
                "--- containerd log (last {} lines) ---\n{}",
                tail.len(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if let Some(d) = self.dir.take() {
            if let Err(e) = fs::remove_dir_all(d.path()) {
                eprintln!("cleanup: removing {}: {e}", d.path().display());
            }
            let _ = d.close();
        }
    }
}

/// An image reference no other harness of any test process uses.
fn unique_reference(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "localhost/runc-rs-e2e/{name}:{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A private containerd whose containers run under its Go shim driving
/// the runtime under test, the busybox image imported; `None` when not root.
pub fn go_shim() -> Option<Containerd> {
    let runtime = runtime_under_test()?;
    require_tools(&["containerd", "ctr", "containerd-shim-runc-v2", "script"]);
    let mut c =
        Containerd::start(&runtime).unwrap_or_else(|e| panic!("start a private containerd: {e}"));
    c.import_busybox()
        .unwrap_or_else(|e| panic!("import the busybox image archive: {e}"));
    Some(c)
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.shutdown();
    }
}
