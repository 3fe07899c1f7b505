//! Host hygiene for the end-to-end tests, shared by the containerd and
//! podman harnesses: commands with a deadline, the runtime under test, and
//! finding (then removing) the processes, mounts and cgroups a test made.

use std::collections::HashSet;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::runtime::{is_root, runc_rs_bin};

/// Deadline of one `ctr` / `podman` call unless the caller gives another:
/// `$E2E_TIMEOUT` seconds, 60 by default.
pub fn default_timeout() -> Duration {
    let secs = std::env::var("E2E_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    Duration::from_secs(secs.filter(|&s| s > 0).unwrap_or(60))
}
/// Deadline of the calls made while cleaning up.
pub(crate) const CLEANUP_TIMEOUT: Duration = Duration::from_secs(15);
/// How long containerd may take to answer on its socket.
pub(crate) const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------
// The runtime under test
// ---------------------------------------------------------------------------

/// The runtime binary the end-to-end tests drive, or `None` (skip) when not
/// running as root.
///
/// `$E2E_RUNTIME` (a path, or a name looked up in `$PATH`) selects another
/// runc-compatible runtime, e.g. `E2E_RUNTIME=/usr/sbin/runc` to validate
/// the tests themselves; otherwise it is [`runc_rs_bin`] (`$RUNC_RS_BIN` or
/// the `runc-rs` cargo built). A missing binary is a test failure with a
/// message saying how to build it, never a silent pass.
pub fn runtime_under_test() -> Option<PathBuf> {
    if !is_root() {
        eprintln!("skipping: end-to-end tests need root");
        return None;
    }
    let (path, origin) = match std::env::var_os("E2E_RUNTIME").filter(|v| !v.is_empty()) {
        Some(v) => {
            let p = PathBuf::from(&v);
            let p = if p.components().count() == 1 {
                testdata::which(&v.to_string_lossy()).unwrap_or(p)
            } else {
                p
            };
            (p, "$E2E_RUNTIME")
        }
        None if std::env::var_os("RUNC_RS_BIN").is_some() => (runc_rs_bin(), "$RUNC_RS_BIN"),
        None => (runc_rs_bin(), "the runc-rs binary cargo builds"),
    };
    let ok = fs::metadata(&path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    assert!(
        ok,
        "runtime under test {} ({origin}) does not exist or is not executable: build it first \
         (`cargo build -p runc-rs`, same CARGO_TARGET_DIR and profile as the tests), point \
         RUNC_RS_BIN at it, or set E2E_RUNTIME=/usr/sbin/runc to check the tests against runc",
        path.display()
    );
    Some(std::path::absolute(&path).unwrap_or(path))
}

/// Panic with a clear message unless every tool in `names` is in `$PATH`.
pub fn require_tools(names: &[&str]) {
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| testdata::which(n).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "end-to-end test needs {missing:?} in $PATH; install them first"
    );
}

// ---------------------------------------------------------------------------
// Commands with a deadline
// ---------------------------------------------------------------------------

/// Run `cmd` (stdin `/dev/null`, stdout and stderr captured) and wait at most
/// `timeout`. An overrunning command is killed with its whole process group
/// (it runs in a group of its own) and an error of kind `TimedOut` carrying
/// what it printed so far is returned.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> io::Result<Output> {
    run_limited(cmd.process_group(0), timeout, true)
}

/// Like [`run_with_timeout`], the command left in our process group (a
/// runtime under test whose signal handling a test observes): an
/// overrunning command alone is killed.
pub fn run_in_group_with_timeout(cmd: &mut Command, timeout: Duration) -> io::Result<Output> {
    run_limited(cmd, timeout, false)
}

fn run_limited(cmd: &mut Command, timeout: Duration, own_group: bool) -> io::Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("spawning {:?}: {e}", cmd.get_program())))?;
    let out = capture(child.stdout.take());
    let err = capture(child.stderr.take());
    let status = match wait_timeout(&mut child, timeout)? {
        Some(s) => s,
        None => {
            if own_group {
                // Our child leads its own process group: kill the group by id.
                let pid = child.id() as libc::pid_t;
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (out.finish(), err.finish());
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "{cmd:?} did not finish within {timeout:?}; killed.\nstdout: {}\nstderr: {}",
                    String::from_utf8_lossy(&o),
                    String::from_utf8_lossy(&e)
                ),
            ));
        }
    };
    Ok(Output {
        status,
        stdout: out.finish(),
        stderr: err.finish(),
    })
}

/// A pipe drained by a thread into a shared buffer.
struct Captured {
    buf: Arc<Mutex<Vec<u8>>>,
    done: Option<thread::JoinHandle<()>>,
}

fn capture<R: Read + Send + 'static>(pipe: Option<R>) -> Captured {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let done = pipe.map(|mut pipe| {
        let buf = Arc::clone(&buf);
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => buf
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        })
    });
    Captured { buf, done }
}

impl Captured {
    /// What was read. Waits up to 5 s for EOF: a daemon the command started
    /// may hold the pipe open forever, and then we take what we have.
    fn finish(mut self) -> Vec<u8> {
        if let Some(h) = self.done.take() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !h.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
        let buf = self.buf.lock().unwrap_or_else(|e| e.into_inner());
        buf.clone()
    }
}

/// Exit code of `status`, or 128+signal when killed by a signal.
pub fn exit_code(status: &ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// `out` as a readable block for assertion messages.
pub fn describe(out: &Output) -> String {
    format!(
        "exit {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        exit_code(&out.status),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Quote `s` for a POSIX shell.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-=:,+@%".contains(&b))
    {
        return s.to_owned();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

// ---------------------------------------------------------------------------
// Processes, mounts and cgroups this test made
// ---------------------------------------------------------------------------

/// Pids (other than ours) whose command line satisfies `pred` (given the
/// NUL-separated arguments).
pub fn pids_matching(pred: impl Fn(&[&str]) -> bool) -> Vec<libc::pid_t> {
    let me = std::process::id() as libc::pid_t;
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter(|&pid| pid != me)
        .filter(|&pid| {
            let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let raw = String::from_utf8_lossy(&raw);
            let args: Vec<&str> = raw.split('\0').filter(|a| !a.is_empty()).collect();
            !args.is_empty() && pred(&args)
        })
        .collect()
}

/// Processes whose command line mentions `dir` (conmon, `podman container
/// cleanup`, a shim ...): started on a test's behalf, so it may end them.
/// Waits up to `grace` for them to leave, then SIGKILLs the rest by pid.
pub fn reap_processes_mentioning(dir: &Path, grace: Duration) {
    let needle = dir.to_string_lossy().into_owned();
    let find = || pids_matching(|args| args.iter().any(|a| a.contains(&needle)));
    let deadline = Instant::now() + grace;
    while !find().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    for pid in find() {
        eprintln!("cleanup: killing leftover process {pid} that uses {needle}");
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Decode the octal escapes (`\040`) of a /proc/self/mountinfo field.
fn unescape_mountinfo(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// (mount point, root within its fs, fs type) of every mount we can see.
pub(crate) fn mounts() -> Vec<(PathBuf, String, String)> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    info.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let fstype = post.split(' ').next()?;
            Some((
                PathBuf::from(unescape_mountinfo(f.get(4)?)),
                unescape_mountinfo(f.get(3)?),
                fstype.to_owned(),
            ))
        })
        .collect()
}

/// Lazily unmount everything mounted at or below `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    for _pass in 0..3 {
        let mut targets: Vec<PathBuf> = mounts()
            .into_iter()
            .map(|m| m.0)
            .filter(|m| m.starts_with(dir))
            .collect();
        if targets.is_empty() {
            return;
        }
        targets.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        targets.dedup();
        for t in targets {
            let Ok(c) = CString::new(t.as_os_str().as_bytes()) else {
                continue;
            };
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINVAL) && e.raw_os_error() != Some(libc::ENOENT)
                {
                    eprintln!("cleanup: umount {}: {e}", t.display());
                }
            }
        }
    }
}

/// A cgroup parent (`/runc-rs-e2e-<pid>-<n>`) for one test's containers.
///
/// The runtime creates it (in every hierarchy it uses); on drop every
/// process still in it is killed and its whole subtree is removed from every
/// cgroup v1 and v2 hierarchy. Nothing outside it is touched.
#[derive(Debug)]
pub struct CgroupParent {
    pub(crate) name: String,
}

impl CgroupParent {
    /// A fresh, unused name (nothing is created yet).
    pub fn new() -> CgroupParent {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::SeqCst);
        CgroupParent {
            name: format!("runc-rs-e2e-{}-{n}", std::process::id()),
        }
    }

    /// `/<name>`: what `--cgroup-parent` takes.
    pub fn path(&self) -> String {
        format!("/{}", self.name)
    }

    /// `/<name>/<id>`: a container's cgroupsPath under this parent.
    pub fn child(&self, id: &str) -> String {
        format!("/{}/{id}", self.name)
    }

    /// The directory of this parent in every mounted hierarchy, existing or not.
    pub fn dirs(&self) -> Vec<PathBuf> {
        let mut seen = HashSet::new();
        mounts()
            .into_iter()
            .filter(|(_, root, t)| (t == "cgroup" || t == "cgroup2") && root == "/")
            .map(|(mp, _, _)| mp.join(&self.name))
            .filter(|d| seen.insert(d.clone()))
            .collect()
    }

    /// Pids in this parent's subtree, in any hierarchy.
    pub fn pids(&self) -> Vec<libc::pid_t> {
        let mut pids = HashSet::new();
        for d in self.dirs() {
            for dir in subtree(&d) {
                if let Ok(s) = fs::read_to_string(dir.join("cgroup.procs")) {
                    pids.extend(
                        s.lines()
                            .filter_map(|l| l.trim().parse::<libc::pid_t>().ok()),
                    );
                }
            }
        }
        pids.into_iter().collect()
    }

    /// Kill what is left in the subtree and remove it (best effort, logged).
    pub fn cleanup(&self) {
        // Frozen tasks would not die: thaw first (v1 freezer, v2 cgroup.freeze).
        for d in self.dirs() {
            for dir in subtree(&d) {
                let _ = fs::write(dir.join("freezer.state"), "THAWED");
                let _ = fs::write(dir.join("cgroup.freeze"), "0");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let pids = self.pids();
            if pids.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in pids {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            thread::sleep(Duration::from_millis(50));
        }
        for d in self.dirs() {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let mut dirs = subtree(&d);
                dirs.reverse(); // children first
                let mut last_err = None;
                for dir in dirs {
                    if let Err(e) = fs::remove_dir(&dir) {
                        if e.kind() != io::ErrorKind::NotFound {
                            last_err = Some((dir, e));
                        }
                    }
                }
                match last_err {
                    None => break,
                    Some((dir, e)) if Instant::now() >= deadline => {
                        eprintln!("cleanup: cannot remove cgroup {}: {e}", dir.display());
                        break;
                    }
                    Some(_) => thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }
}

impl Default for CgroupParent {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for CgroupParent {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// `dir` and every directory below it, parents before children (empty when
/// `dir` does not exist).
fn subtree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if dir.is_dir() {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                    }
                }
            }
            out.push(d);
        }
        out.sort_by_key(|p| p.components().count());
    }
    out
}

/// Wait for `child` to exit, at most `timeout`; `None` if it has not. Polls
/// from 1 ms up to 20 ms apart: most commands end within a few.
pub(crate) fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Whether the host mounts cgroup v2 alone at `/sys/fs/cgroup`.
pub fn pure_cgroup_v2_host() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// SIGTERM `child` (our own process, by pid), SIGKILL after `grace`, reap it.
pub fn stop_child(child: &mut Child, grace: Duration) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    if !matches!(wait_timeout(child, grace), Ok(None)) {
        return;
    }
    eprintln!(
        "cleanup: pid {} ignored SIGTERM for {grace:?}; SIGKILL",
        child.id()
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Socket paths, in `socket_root`, of the shims under containerd's `state`
/// (each v2 bundle has an `address` file: `unix:///run/containerd/s/<hash>`).
pub(crate) fn shim_sockets(state: &Path, socket_root: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(nss) = fs::read_dir(state.join("io.containerd.runtime.v2.task")) else {
        return out;
    };
    for ns in nss.flatten() {
        let Ok(bundles) = fs::read_dir(ns.path()) else {
            continue;
        };
        for b in bundles.flatten() {
            if let Ok(addr) = fs::read_to_string(b.path().join("address")) {
                let p = addr.trim().trim_start_matches("unix://");
                if p.starts_with(socket_root) {
                    out.push(PathBuf::from(p));
                }
            }
        }
    }
    out
}
