//! Shared test harness: every test gets its own parent cgroup `/cgroups-test-<pid>-<n>`
//! (absolute, so never below the test runner's own cgroup), a container cgroup below it, and a
//! guard that on drop kills what it spawned and removes the whole parent tree.
#![allow(dead_code)]

use cgroups::{detect_mode, CgroupMode, FreezerState, Manager};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

struct StderrLogger;
impl log::Log for StderrLogger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Debug
    }
    fn log(&self, r: &log::Record) {
        eprintln!("[{}] {}", r.level(), r.args());
    }
    fn flush(&self) {}
}

pub fn init_log() {
    // Captured per test by libtest; shown for failing tests.
    let _ = log::set_logger(&StderrLogger).map(|()| log::set_max_level(log::LevelFilter::Debug));
}

pub struct TestCg {
    pub mode: CgroupMode,
    /// `/cgroups-test-<pid>-<n>`: removed (with everything below) on drop.
    pub parent: Manager,
    /// `/cgroups-test-<pid>-<n>/<name>`: the container cgroup under test.
    pub mgr: Manager,
    children: Vec<Child>,
}

impl TestCg {
    /// Builds the managers (nothing created yet).
    pub fn new(name: &str) -> TestCg {
        init_log();
        let parent_path = format!(
            "/cgroups-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let parent = Manager::new(Some(&parent_path), "unused").expect("parent manager");
        let mgr = Manager::new(Some(&format!("{parent_path}/{name}")), "unused").expect("manager");
        TestCg {
            mode: detect_mode(),
            parent,
            mgr,
            children: Vec::new(),
        }
    }

    /// Builds and creates the container cgroup.
    pub fn created(name: &str) -> TestCg {
        let t = TestCg::new(name);
        t.mgr.create().expect("create");
        t
    }

    pub fn v2(&self) -> bool {
        self.mode == CgroupMode::Unified
    }

    /// The directory holding `controller`'s files (the cgroup2 dir on pure v2).
    pub fn dir(&self, controller: &str) -> PathBuf {
        let paths = self.mgr.paths();
        let key = if self.v2() { "unified" } else { controller };
        paths
            .get(key)
            .unwrap_or_else(|| panic!("no {key} in {paths:?}"))
            .clone()
    }

    pub fn read(&self, controller: &str, file: &str) -> String {
        read_file(&self.dir(controller).join(file))
    }

    /// Spawns `cmd` outside the cgroup (the caller moves it with add_pid). Killed on drop.
    pub fn spawn(&mut self, cmd: &mut Command) -> i32 {
        let child = cmd.stdin(Stdio::null()).spawn().expect("spawn");
        let pid = child.id() as i32;
        self.children.push(child);
        pid
    }

    /// Spawns `cmd` so that it joins every hierarchy of the container cgroup before exec
    /// (pre_exec writes "0" -- "myself" -- to each cgroup.procs with raw syscalls only).
    pub fn spawn_in(&mut self, cmd: &mut Command) -> i32 {
        let mgr = self.mgr.clone();
        self.spawn_in_mgr(&mgr, cmd)
    }

    /// spawn_in for another cgroup (e.g. a sub-cgroup of the container).
    pub fn spawn_in_mgr(&mut self, mgr: &Manager, cmd: &mut Command) -> i32 {
        let mut files: Vec<CString> = Vec::new();
        for dir in mgr.paths().values() {
            let f = CString::new(dir.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
            if !files.contains(&f) {
                files.push(f);
            }
        }
        unsafe {
            cmd.pre_exec(move || {
                for f in &files {
                    let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let n = libc::write(fd, b"0".as_ptr().cast(), 1);
                    let err = std::io::Error::last_os_error();
                    libc::close(fd);
                    if n != 1 {
                        return Err(err);
                    }
                }
                Ok(())
            });
        }
        self.spawn(cmd)
    }

    /// spawn_in with piped output, waits for it to exit.
    pub fn run_in(&mut self, cmd: &mut Command) -> Output {
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let pid = self.spawn_in(cmd);
        let idx = self
            .children
            .iter()
            .position(|c| c.id() as i32 == pid)
            .unwrap();
        self.children.remove(idx).wait_with_output().expect("wait")
    }

    /// Waits for a spawned child to exit (with a deadline; panics after it).
    pub fn wait(&mut self, pid: i32, timeout: Duration) -> ExitStatus {
        let idx = self
            .children
            .iter()
            .position(|c| c.id() as i32 == pid)
            .expect("not our child");
        let mut child = self.children.remove(idx);
        let start = Instant::now();
        loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                return st;
            }
            if start.elapsed() > timeout {
                self.children.push(child); // killed and reaped by the guard
                panic!("pid {pid} still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for a child spawned with a piped stdout and returns what it printed.
    pub fn wait_stdout(&mut self, pid: i32, timeout: Duration) -> String {
        use std::io::Read;
        let idx = self
            .children
            .iter()
            .position(|c| c.id() as i32 == pid)
            .expect("not our child");
        let mut out = self.children[idx].stdout.take().expect("stdout not piped");
        self.wait(pid, timeout);
        let mut s = String::new();
        out.read_to_string(&mut s).expect("read stdout");
        s
    }

    /// Polls until the container cgroup lists no process.
    pub fn wait_empty(&self, timeout: Duration) {
        let start = Instant::now();
        while !self.mgr.pids().unwrap_or_default().is_empty() {
            assert!(
                start.elapsed() < timeout,
                "cgroup still has {:?}",
                self.mgr.pids()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for TestCg {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A test may have left the container frozen; v1 needs the child itself thawed.
        if self.mgr.freezer_state().ok() != Some(FreezerState::Thawed) {
            let _ = self.mgr.thaw();
        }
        if self.parent.exists() {
            // Grandchildren (e.g. background sleeps of a shell) that we do not hold.
            let _ = self.parent.kill_all(libc::SIGKILL);
            let start = Instant::now();
            while !self.parent.pids().unwrap_or_default().is_empty()
                && start.elapsed() < Duration::from_secs(5)
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            if let Err(e) = self.parent.delete() {
                eprintln!("cleanup of {}: {e}", self.parent.cgroups_path());
            }
        }
    }
}

pub fn read_file(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim_end()
        .to_string()
}

pub fn resources(json: &str) -> oci_spec::runtime::LinuxResources {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("bad test json: {e}\n{json}"))
}

pub fn signal_of(st: ExitStatus) -> Option<i32> {
    st.signal()
}

/// major:minor of a block device to throttle: a loop device if any (loaded on demand in the
/// cgroup2 VM, which has no disks), else the first disk.
pub fn block_device() -> Option<(u32, u32)> {
    let scan = || -> Vec<(String, u32, u32)> {
        let mut v: Vec<(String, u32, u32)> = std::fs::read_dir("/sys/block")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let dev = std::fs::read_to_string(e.path().join("dev")).ok()?;
                let (a, b) = dev.trim().split_once(':')?;
                Some((name, a.parse().ok()?, b.parse().ok()?))
            })
            .collect();
        v.sort_by_key(|(n, _, _)| (!n.starts_with("loop"), n.clone()));
        v
    };
    let mut devs = scan();
    if devs.is_empty() && detect_mode() == CgroupMode::Unified {
        // Only reached in the throwaway cgroup2 VM (the host has block devices).
        let _ = Command::new("modprobe").arg("loop").status();
        devs = scan();
    }
    devs.first().map(|(_, a, b)| (*a, *b))
}

/// utime (clock ticks) of a process, from /proc/<pid>/stat.
pub fn utime(pid: i32) -> u64 {
    let stat = read_file(Path::new(&format!("/proc/{pid}/stat")));
    let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
    after_comm.split(' ').nth(11).unwrap().parse().unwrap()
}

/// The python3 to grow memory with, if there is one.
pub fn python3() -> Option<PathBuf> {
    ["/usr/bin/python3", "/usr/local/bin/python3"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .or_else(|| {
            let out = Command::new("sh")
                .args(["-c", "command -v python3"])
                .output()
                .ok()?;
            let p = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (!p.is_empty()).then(|| PathBuf::from(p))
        })
}

/// The block-I/O weight file of this kernel, if it has one (v1 without
/// BFQ has none: a weight is then refused as unsupported).
pub fn io_weight_file(t: &TestCg) -> Option<&'static str> {
    let (ctrl, files) = if t.v2() {
        ("io", ["io.bfq.weight", "io.weight"])
    } else {
        ("blkio", ["blkio.bfq.weight", "blkio.weight"])
    };
    files.into_iter().find(|f| t.dir(ctrl).join(f).exists())
}

/// A resource set touching every controller the host has (the rt budget is given to the
/// test's parent first): what full_resource_set_reads_back checks and the bench applies.
/// Returns the JSON and the throttled block device.
pub fn full_resources_json(t: &TestCg) -> (String, Option<(u32, u32)>) {
    const MB: i64 = 1 << 20;
    let has_rt = !t.v2() && t.dir("cpu").join("cpu.rt_runtime_us").exists();
    if has_rt {
        // Real-time budget has to come from the parent (ours, created by the test).
        std::fs::write(t.parent.paths()["cpu"].join("cpu.rt_runtime_us"), "10000").unwrap();
    }
    let rt = if has_rt {
        r#", "realtimePeriod": 1000000, "realtimeRuntime": 5000"#
    } else {
        ""
    };
    let dev = block_device();
    let throttle = dev.map_or(String::new(), |(a, b)| {
        format!(
            r#", "throttleReadBpsDevice": [{{"major": {a}, "minor": {b}, "rate": 1048576}}],
                "throttleWriteBpsDevice": [{{"major": {a}, "minor": {b}, "rate": 2097152}}],
                "throttleReadIOPSDevice": [{{"major": {a}, "minor": {b}, "rate": 100}}],
                "throttleWriteIOPSDevice": [{{"major": {a}, "minor": {b}, "rate": 200}}]"#
        )
    });
    // The weight only where the kernel has the file; the throttles follow it.
    let block_io = match io_weight_file(t) {
        Some(_) => format!(r#""weight": 500{throttle}"#),
        None => throttle.trim_start_matches(", ").to_owned(),
    };
    let unified = match t.mode {
        CgroupMode::Unified => r#", "unified": {"memory.high": "805306368"}"#,
        CgroupMode::Hybrid => r#", "unified": {"cgroup.max.descendants": "7"}"#,
        CgroupMode::Legacy => "",
    };
    let json = format!(
        r#"{{
        "cpu": {{"shares": 512, "quota": 50000, "period": 100000, "burst": 10000, "idle": 0,
                 "cpus": "0", "mems": "0"{rt}}},
        "memory": {{"limit": {l}, "reservation": {r}, "swap": {s}, "swappiness": 30,
                    "disableOOMKiller": true, "kernel": {l}, "kernelTCP": {k}}},
        "pids": {{"limit": 42}},
        "blockIO": {{{block_io}}},
        "devices": [{{"allow": false, "access": "rwm"}},
                    {{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}},
                    {{"allow": true, "type": "c", "major": 1, "minor": 5, "access": "r"}}]
        {unified}
        }}"#,
        l = 256 * MB,
        r = 128 * MB,
        s = 512 * MB,
        k = 32 * MB,
    );
    (json, dev)
}
