//! Manager::stats on a container that really uses CPU, memory, processes and (v1 host) disk:
//! the numbers show it, in the shape of containerd's metrics protos.

mod common;

use cgroups::stats::{v1, v2};
use cgroups::Stats;
use common::{python3, resources, TestCg};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MB: u64 = 1 << 20;

/// Starts the workload: a process that touches 64 MiB, spins for 1.5 s under a 20% CPU quota
/// (so it gets throttled), then sleeps; plus two sleeps. Returns whether memory is expected.
fn workload(t: &mut TestCg) -> bool {
    let has_python = match python3() {
        Some(py) => {
            let code = "import time\nb = b'x' * (64 << 20)\nt = time.time()\n\
                        while time.time() - t < 1.5: pass\ntime.sleep(600)";
            t.spawn_in(Command::new(py).args(["-c", code]));
            true
        }
        None => {
            t.spawn_in(Command::new("sh").args([
                "-c",
                "t=0; while [ $t -lt 300000 ]; do t=$((t+1)); done; sleep 600",
            ]));
            false
        }
    };
    for _ in 0..2 {
        t.spawn_in(Command::new("sleep").arg("600"));
    }
    has_python
}

/// Polls stats until `done` holds (the VM is slow), returning the last reading.
fn stats_until(t: &TestCg, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
    let start = Instant::now();
    loop {
        let s = t.mgr.stats().expect("stats");
        if done(&s) {
            return s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{what} never showed: {s:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn stats_show_cpu_memory_pids_and_throttling() {
    let mut t = TestCg::created("stats");
    t.mgr
        .apply(&resources(&format!(
            r#"{{"memory": {{"limit": {}}}, "pids": {{"limit": 42}},
                "cpu": {{"quota": 20000, "period": 100000}}}}"#,
            256 * MB
        )))
        .unwrap();
    let mem = workload(&mut t);
    // anonymous memory (v1 rss, v2 anon) of the 64 MiB buffer
    let want_mem = if mem { 60 * MB } else { 0 };
    let s = match &t.mgr.stats().unwrap() {
        Stats::V1(_) => stats_until(&t, "v1 usage", |s| {
            let Stats::V1(m) = s else { return false };
            let mu = m.memory.as_ref().map_or(0, |m| m.rss);
            let cpu = m.cpu.as_ref();
            let thr = cpu.and_then(|c| c.throttling.as_ref());
            let total = cpu.and_then(|c| c.usage.as_ref()).map_or(0, |u| u.total);
            mu >= want_mem && thr.is_some_and(|t| t.throttled_periods > 0) && total > 100_000_000
        }),
        Stats::V2(_) => stats_until(&t, "v2 usage", |s| {
            let Stats::V2(m) = s else { return false };
            let mu = m.memory.as_ref().map_or(0, |m| m.anon);
            let cpu = m.cpu.as_ref();
            mu >= want_mem && cpu.is_some_and(|c| c.nr_throttled > 0 && c.usage_usec > 100_000)
        }),
    };
    assert_eq!(matches!(s, Stats::V2(_)), t.v2());
    let json = serde_json::to_value(&s).unwrap();
    match &s {
        Stats::V1(m) => check_v1(&t, m, want_mem),
        Stats::V2(m) => check_v2(m, want_mem),
    }
    // serde names are the proto field names
    let keys = if t.v2() {
        vec![
            "/V2/memory/usage_limit",
            "/V2/cpu/nr_throttled",
            "/V2/memory_events/oom_kill",
        ]
    } else {
        vec![
            "/V1/memory/pg_pg_in",
            "/V1/cpu/throttling/throttled_periods",
            "/V1/memory/usage/failcnt",
        ]
    };
    for k in keys {
        assert!(json.pointer(k).is_some(), "{k} missing in {json}");
    }
    eprintln!("{}", serde_json::to_string_pretty(&json).unwrap());

    t.mgr.kill_all(libc::SIGKILL).unwrap();
    t.wait_empty(Duration::from_secs(10));
    t.mgr.delete().unwrap();
    let e = t.mgr.stats().unwrap_err();
    assert_eq!(e.field(), Some("stats"), "{e}");
}

fn check_v1(t: &TestCg, m: &v1::Metrics, want_mem: u64) {
    let pids = m.pids.as_ref().unwrap();
    assert_eq!((pids.current, pids.limit), (3, 42));
    let mem = m.memory.as_ref().unwrap();
    let usage = mem.usage.as_ref().unwrap();
    assert_eq!(usage.limit, 256 * MB);
    assert!(
        usage.usage >= want_mem && usage.max >= usage.usage,
        "{usage:?}"
    );
    assert!(
        mem.rss >= want_mem && usage.usage >= mem.rss,
        "rss {}",
        mem.rss
    );
    assert_eq!(mem.hierarchical_memory_limit, 256 * MB);
    assert!(mem.pg_fault > 0 && mem.total_pg_fault >= mem.pg_fault);
    assert_eq!(m.memory_oom_control.as_ref().unwrap().oom_kill, 0);
    let cpu = m.cpu.as_ref().unwrap();
    let u = cpu.usage.as_ref().unwrap();
    assert!(u.total > 100_000_000, "cpu total {} ns", u.total);
    assert!(u.user + u.kernel > 0, "{u:?}");
    let cpus = std::thread::available_parallelism().unwrap().get();
    assert!(u.per_cpu.len() >= cpus, "{:?}", u.per_cpu);
    let sum: u64 = u.per_cpu.iter().sum();
    assert!(
        sum.abs_diff(u.total) * 20 <= u.total,
        "per-cpu {sum} vs total {}",
        u.total
    );
    assert!(cpu.throttling.as_ref().unwrap().throttled_time > 0);
    // no v1 hugetlb hierarchy and no hugetlb in the cgroup2 dir here -> nothing
    let has_hugetlb = t.mgr.paths().contains_key("hugetlb")
        || t.mgr.paths().get("unified").is_some_and(|u| {
            std::fs::read_dir(u)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("hugetlb."))
        });
    assert_eq!(m.hugetlb.is_empty(), !has_hugetlb, "{:?}", m.hugetlb);
    assert!(m.blkio.is_some());
}

fn check_v2(m: &v2::Metrics, want_mem: u64) {
    let pids = m.pids.as_ref().unwrap();
    assert_eq!((pids.current, pids.limit), (3, 42));
    let mem = m.memory.as_ref().unwrap();
    assert_eq!(mem.usage_limit, 256 * MB);
    assert_eq!(mem.swap_limit, u64::MAX, "unset swap limit is max");
    assert!(mem.anon >= want_mem && mem.usage >= mem.anon, "{mem:?}");
    assert!(mem.pgfault > 0 && mem.file_mapped > 0);
    assert!(mem.psi.as_ref().is_some_and(|p| p.some.is_some()));
    let cpu = m.cpu.as_ref().unwrap();
    assert!(
        cpu.usage_usec > 100_000 && cpu.user_usec + cpu.system_usec > 0,
        "{cpu:?}"
    );
    assert!(
        cpu.nr_periods >= cpu.nr_throttled && cpu.throttled_usec > 0,
        "{cpu:?}"
    );
    let ev = m.memory_events.as_ref().unwrap();
    assert_eq!(ev.oom_kill, 0);
    assert!(m.io.is_some());
    // every host page size is listed, unlimited
    assert!(
        !m.hugetlb.is_empty()
            && m.hugetlb
                .iter()
                .all(|h| h.max == u64::MAX && h.current == 0)
    );
}

/// v1 host: direct writes by the container show up in blkio under their device.
///
/// Since Linux 6.9 the kernel sets up blk-throttle on a queue only once a throttle rule names
/// it, and v1's `blkio.throttle.io_*` counters are kept only there: a device nobody throttles
/// shows nothing, as it would under runc. So the test writes to a loop device of its own and
/// gives the container a rule for it that limits nothing, as a container with a blockIO
/// throttle has; the host's disks are not touched.
#[test]
fn v1_blkio_counts_the_containers_writes() {
    let mut t = TestCg::created("statsio");
    if t.v2() {
        eprintln!("cgroup v2 guest: its root is not a block device; io.stat is covered above");
        return;
    }
    let dev = LoopDevice::new(8 * MB);
    let (major, minor) = dev.number();
    t.mgr
        .apply(&resources(&format!(
            r#"{{"blockIO": {{"throttleWriteBpsDevice":
                [{{"major": {major}, "minor": {minor}, "rate": {}}}]}}}}"#,
            u64::MAX / 2
        )))
        .expect("apply a throttle rule that limits nothing");
    let mut dd = Command::new("dd");
    dd.args([
        "if=/dev/zero",
        &format!("of={}", dev.path),
        "bs=1M",
        "count=4",
        "oflag=direct",
    ])
    .stderr(Stdio::null());
    let out = t.run_in(&mut dd);
    assert!(out.status.success());
    let Stats::V1(m) = t.mgr.stats().unwrap() else {
        panic!("v1 host")
    };
    let blkio = m.blkio.unwrap();
    let written: u64 = blkio
        .io_service_bytes_recursive
        .iter()
        .filter(|e| e.op == "Write" && (e.major, e.minor) == (major, minor))
        .map(|e| e.value)
        .sum();
    assert!(written >= 4 * MB, "{blkio:#?}");
    let e = blkio
        .io_service_bytes_recursive
        .iter()
        .find(|e| e.op == "Write" && e.value > 0)
        .unwrap();
    assert_eq!(e.device, dev.path, "{e:?}");
    assert!(blkio
        .io_serviced_recursive
        .iter()
        .any(|e| e.op == "Write" && e.value >= 4));
}

/// A loop device over a sparse file, detached and removed on drop.
struct LoopDevice {
    path: String,
    file: std::path::PathBuf,
}

impl LoopDevice {
    fn new(size: u64) -> LoopDevice {
        let file = std::env::temp_dir().join(format!("cgroups-statsio-{}.img", std::process::id()));
        std::fs::File::create(&file)
            .and_then(|f| f.set_len(size))
            .expect("backing file");
        let out = Command::new("losetup")
            .args(["--find", "--show"])
            .arg(&file)
            .output()
            .expect("losetup");
        if !out.status.success() {
            let _ = std::fs::remove_file(&file);
            panic!("losetup: {}", String::from_utf8_lossy(&out.stderr));
        }
        let path = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        LoopDevice { path, file }
    }

    fn number(&self) -> (u64, u64) {
        use std::os::unix::fs::MetadataExt;
        let rdev = std::fs::metadata(&self.path).expect("loop device").rdev();
        (libc::major(rdev).into(), libc::minor(rdev).into())
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.path]).status();
        let _ = std::fs::remove_file(&self.file);
    }
}
