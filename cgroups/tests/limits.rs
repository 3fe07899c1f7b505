//! The limits are enforced on real processes: memory (OOM kill), pids (fork refused). Devices:
//! tests/devices.rs.

mod common;

use common::{python3, resources, signal_of, TestCg};
use std::process::Command;
use std::time::Duration;

const MB: i64 = 1 << 20;

#[test]
fn process_over_memory_limit_is_oom_killed() {
    let mut t = TestCg::created("oom");
    // swap == limit: no swap at all (v2: memory.swap.max 0), so the kernel has to kill.
    t.mgr
        .apply(&resources(&format!(
            r#"{{"memory": {{"limit": {}, "swap": {}}}}}"#,
            50 * MB,
            50 * MB
        )))
        .unwrap();
    let mut cmd = match python3() {
        Some(py) => {
            let mut c = Command::new(py);
            c.args(["-c", "b = bytearray(200 << 20); print('survived')"]);
            c
        }
        None => {
            // doubling a shell string until it is far above the limit
            let mut c = Command::new("sh");
            c.args([
                "-c",
                "x=aaaaaaaaaaaaaaaa; while [ ${#x} -lt 300000000 ]; do x=$x$x; done; echo survived",
            ]);
            c
        }
    };
    let out = t.run_in(&mut cmd);
    assert_eq!(
        signal_of(out.status),
        Some(libc::SIGKILL),
        "status {:?}, stdout {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout)
    );
    let (file, key) = if t.v2() {
        ("memory.events", "oom_kill")
    } else {
        ("memory.oom_control", "oom_kill")
    };
    let content = t.read("memory", file);
    let kills: u64 = content
        .lines()
        .find_map(|l| {
            l.split_once(' ')
                .filter(|(k, _)| *k == key)
                .map(|(_, v)| v.trim().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("{file}: {content}"));
    assert!(kills >= 1, "{file}: {content}");
}

#[test]
fn pids_max_stops_fork() {
    let mut t = TestCg::created("pids");
    t.mgr
        .apply(&resources(r#"{"pids": {"limit": 3}}"#))
        .unwrap();
    assert_eq!(t.read("pids", "pids.max"), "3");
    let out = t.run_in(Command::new("sh").args([
        "-c",
        "for i in 1 2 3 4 5; do sleep 30 </dev/null >/dev/null 2>&1 & done; echo done",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("sh under pids.max=3: {:?} {stderr}", out.status);
    assert!(
        !out.status.success() || stderr.to_lowercase().contains("fork"),
        "fork was not refused: {:?} {stderr}",
        out.status
    );
    let events = t.read("pids", "pids.events");
    let max_hits: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("max ").map(|v| v.parse().unwrap()))
        .unwrap();
    assert!(max_hits >= 1, "pids.events: {events}");
    // the sleeps that did start are still in the cgroup; the guard kills them
    t.mgr.kill_all(libc::SIGKILL).unwrap();
    t.wait_empty(Duration::from_secs(10));
}

#[test]
fn pids_limit_zero_or_negative_is_max() {
    let t = TestCg::created("pidsmax");
    for limit in [7, 0, 8, -1] {
        t.mgr
            .apply(&resources(&format!(r#"{{"pids": {{"limit": {limit}}}}}"#)))
            .unwrap();
        let want = if limit > 0 {
            limit.to_string()
        } else {
            "max".into()
        };
        assert_eq!(t.read("pids", "pids.max"), want);
    }
}
