//! Locating the runtimes under test.

use std::path::PathBuf;

use crate::hygiene::{default_timeout, run_in_group_with_timeout, wait_timeout};

/// The `runc-rs` binary under test: `$RUNC_RS_BIN`, else the one cargo built
/// beside this test executable (`<target>/<profile>/runc-rs`).
pub fn runc_rs_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("RUNC_RS_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current_exe");
    // <target>/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    profile_dir.join("runc-rs")
}

/// True when running as root (every end-to-end test needs it).
pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// A runtime CLI (runc-compatible) with a private `--root` and `--log`,
/// and a cgroup parent of its own. On drop, every container under the root
/// is force-deleted and the cgroup parent removed.
pub struct Cli {
    pub bin: PathBuf,
    pub root: tempfile::TempDir,
    pub log: PathBuf,
    /// Containers' cgroupsPath go under `/<cgroup_parent>/`.
    pub cgroup_parent: String,
}

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Cli {
    pub fn new(bin: PathBuf) -> Cli {
        assert!(
            bin.exists(),
            "runtime binary {} missing: build it first (cargo build -p runc-rs)",
            bin.display()
        );
        let root = testdata::temp_dir().expect("temp root");
        let log = root.path().join("runtime.log");
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Cli {
            bin,
            cgroup_parent: testdata::host::cgroup_name(&format!("cli{n}")),
            log,
            root,
        }
    }

    pub fn runc_rs() -> Cli {
        Cli::new(runc_rs_bin())
    }

    pub fn command(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(&self.bin);
        c.arg("--root")
            .arg(self.root.path())
            .arg("--log")
            .arg(&self.log)
            .arg("--log-format")
            .arg("json")
            .args(args);
        c.stdin(std::process::Stdio::null());
        c
    }

    /// Runs a subcommand to completion, capturing stdout and stderr. One
    /// that has not finished after [`default_timeout`] is killed and the
    /// test fails naming it (a hung runtime must not hang the suite).
    pub fn run(&self, args: &[&str]) -> std::process::Output {
        run_in_group_with_timeout(&mut self.command(args), default_timeout())
            .unwrap_or_else(|e| panic!("{} {args:?}: {e}", self.bin.display()))
    }

    /// Like `run`, for commands that leave a container process behind
    /// (`run -d`): its stdio must not be our capture pipes, or reading
    /// them would wait for the container to exit. Only stderr is kept,
    /// through a file.
    pub fn run_detached(&self, args: &[&str]) -> std::process::Output {
        let err_path = self.root.path().join(format!(
            "stderr-{}",
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
        ));
        let err = std::fs::File::create(&err_path).expect("stderr file");
        let mut child = self
            .command(args)
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .spawn()
            .expect("spawn runtime");
        let Ok(Some(status)) = wait_timeout(&mut child, default_timeout()) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{} {args:?} did not finish within {:?}; killed",
                self.bin.display(),
                default_timeout()
            )
        };
        let stderr = std::fs::read(&err_path).unwrap_or_default();
        let _ = std::fs::remove_file(&err_path);
        std::process::Output {
            status,
            stdout: vec![],
            stderr,
        }
    }

    /// Gives a bundle's spec a cgroupsPath under this CLI's parent.
    pub fn place(&self, spec: &mut serde_json::Value, id: &str) {
        spec["linux"]["cgroupsPath"] = serde_json::json!(format!("/{}/{}", self.cgroup_parent, id));
    }

    pub fn state(&self, id: &str) -> Option<serde_json::Value> {
        let out = self.run(&["state", id]);
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }

    /// The container's cgroup dirs that exist on the host now.
    pub fn cgroup_dirs(&self, id: &str) -> Vec<PathBuf> {
        testdata::host::cgroup_dirs(&format!("{}/{}", self.cgroup_parent, id))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        if let Ok(rd) = std::fs::read_dir(self.root.path()) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    let id = e.file_name().to_string_lossy().into_owned();
                    let _ = self.run(&["delete", "--force", &id]);
                }
            }
        }
        testdata::host::remove_cgroup_tree(&self.cgroup_parent);
    }
}

/// Waits until `f` holds, up to `secs` seconds.
pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    f()
}

impl Cli {
    /// A busybox bundle running `args`, its cgroup under this CLI's parent.
    pub fn bundle(&self, id: &str, args: &[&str]) -> testdata::Bundle {
        let mut b = testdata::Bundle::with_args(args).expect("bundle");
        self.place(&mut b.spec, id);
        b.write_spec().expect("write spec");
        b
    }
}

/// Asserts a runtime command succeeded, showing its output when it did not.
pub fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// Makes `file` the child's fd 3 (not close-on-exec), as a caller passing
/// `--preserve-fds 1` or LISTEN_FDS=1 would.
pub fn pass_as_fd3(cmd: &mut std::process::Command, file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = file.as_raw_fd();
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(raw, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // dup2 onto itself keeps O_CLOEXEC: clear it explicitly.
            libc::fcntl(3, libc::F_SETFD, 0);
            Ok(())
        });
    }
}
