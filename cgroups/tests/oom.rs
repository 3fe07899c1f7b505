//! OOM events: a process over the memory limit is killed by the kernel, the watcher reports
//! exactly that kill, and removing the cgroup ends the stream (v1 eventfd on the host, v2
//! inotify in the cgroup2 VM).

mod common;

use cgroups::{OomEvent, OomPoll, OomWatcher};
use common::{python3, resources, signal_of, TestCg};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::mpsc::{channel, RecvTimeoutError};
use std::time::{Duration, Instant};

const MB: i64 = 1 << 20;

/// A cgroup with a 50 MiB limit and no swap, so that going over it means an OOM kill.
fn limited(name: &str) -> TestCg {
    let t = TestCg::created(name);
    t.mgr
        .apply(&resources(&format!(
            r#"{{"memory": {{"limit": {}, "swap": {}}}}}"#,
            50 * MB,
            50 * MB
        )))
        .unwrap();
    t
}

/// Runs a memory hog in the container and checks the kernel killed it.
fn oom_kill_one(t: &mut TestCg) {
    let mut cmd = match python3() {
        Some(py) => {
            let mut c = Command::new(py);
            c.args(["-c", "b = bytearray(200 << 20); print('survived')"]);
            c
        }
        None => {
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
        "{:?}",
        out.status
    );
}

fn remove(t: &TestCg) {
    t.wait_empty(Duration::from_secs(10));
    t.mgr.delete().unwrap();
}

#[test]
fn each_oom_kill_is_one_event_and_removal_ends_the_stream() {
    let mut t = limited("oomwatch");
    let watcher = t.mgr.oom_events().unwrap();
    let (tx, rx) = channel();
    let reader = std::thread::spawn(move || {
        for ev in watcher {
            tx.send(Some(ev.expect("watcher error"))).unwrap();
        }
        tx.send(None).unwrap();
    });
    for n in 1..=2 {
        oom_kill_one(&mut t);
        let ev = rx.recv_timeout(Duration::from_secs(30)).expect("no event");
        assert_eq!(
            ev,
            Some(OomEvent {
                killed: true,
                count: n
            }),
            "kill {n}"
        );
    }
    // Nothing more: not a second event per kill, and not the end because the cgroup is empty
    // (longer than the v1 grace period, after which a kill-less event would show).
    match rx.recv_timeout(Duration::from_millis(1500)) {
        Err(RecvTimeoutError::Timeout) => {}
        other => panic!("unexpected {other:?}"),
    }
    remove(&t);
    let end = rx.recv_timeout(Duration::from_secs(10));
    assert_eq!(
        end,
        Ok(None),
        "the stream did not end when the cgroup was removed"
    );
    reader.join().unwrap();
}

/// Waits until `fd` is readable or `ms` pass; true if readable.
fn readable(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd we own.
    unsafe { libc::poll(&mut p, 1, ms) == 1 }
}

/// The event-loop way: poll the fd, then try_next, honouring retry_after.
fn next_polled(w: &mut OomWatcher, deadline: Duration) -> OomPoll {
    let start = Instant::now();
    loop {
        match w.try_next().unwrap() {
            OomPoll::Pending => {}
            other => return other,
        }
        assert!(start.elapsed() < deadline, "nothing within {deadline:?}");
        let ms = w.retry_after().map_or(500, |d| d.as_millis() as i32);
        readable(w.as_raw_fd(), ms);
    }
}

#[test]
fn the_fd_wakes_an_event_loop_for_kills_and_for_removal() {
    let mut t = limited("oompoll");
    let mut w = t.mgr.oom_events().unwrap();
    assert_eq!(w.try_next().unwrap(), OomPoll::Pending);
    assert!(!readable(w.as_raw_fd(), 0), "readable before any OOM");
    oom_kill_one(&mut t);
    assert!(
        readable(w.as_raw_fd(), 10_000),
        "fd not readable after an OOM kill"
    );
    let ev = next_polled(&mut w, Duration::from_secs(10));
    assert_eq!(
        ev,
        OomPoll::Event(OomEvent {
            killed: true,
            count: 1
        })
    );
    remove(&t);
    assert!(
        readable(w.as_raw_fd(), 10_000),
        "fd not readable after removal"
    );
    assert_eq!(next_polled(&mut w, Duration::from_secs(10)), OomPoll::Ended);
    assert_eq!(w.next().map(|r| r.unwrap()), None);
}

#[test]
fn a_cgroup_without_memory_accounting_is_refused() {
    let t = TestCg::new("oomnone");
    // not created: there is no memory.oom_control / memory.events to watch
    let e = t.mgr.oom_events().unwrap_err();
    assert_eq!(e.field(), Some("oom events"), "{e}");
}

/// v1 with the OOM killer disabled: the process is not killed but stuck at the limit; that
/// OOM is reported once, as `killed: false`. (cgroup v2 has no way to disable the OOM killer.)
#[test]
fn v1_oom_without_a_kill_is_reported_once() {
    let mut t = limited("oomstuck");
    if t.v2() {
        eprintln!("cgroup v2: memory.oom_control does not exist; nothing to test");
        return;
    }
    t.mgr
        .apply(&resources(r#"{"memory": {"disableOOMKiller": true}}"#))
        .unwrap();
    let mut w = t.mgr.oom_events().unwrap();
    let pid = match python3() {
        Some(py) => t.spawn_in(Command::new(py).args(["-c", "b = bytearray(200 << 20)"])),
        None => t.spawn_in(Command::new("sh").args([
            "-c",
            "x=aaaaaaaaaaaaaaaa; while [ ${#x} -lt 300000000 ]; do x=$x$x; done",
        ])),
    };
    let ev = next_polled(&mut w, Duration::from_secs(30));
    assert_eq!(
        ev,
        OomPoll::Event(OomEvent {
            killed: false,
            count: 0
        })
    );
    assert!(t
        .read("memory", "memory.oom_control")
        .contains("under_oom 1"));
    // still stuck, but the episode was reported already
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(w.try_next().unwrap(), OomPoll::Pending);
    // a stuck task still dies from SIGKILL
    t.mgr.kill_all(libc::SIGKILL).unwrap();
    assert_eq!(
        signal_of(t.wait(pid, Duration::from_secs(10))),
        Some(libc::SIGKILL)
    );
    remove(&t);
    assert_eq!(next_polled(&mut w, Duration::from_secs(10)), OomPoll::Ended);
}
