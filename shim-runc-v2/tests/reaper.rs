//! The reaper as the serving shim runs it: installed, with a thread reaping
//! every child while command waiters (woken by their pidfds) reap their own
//! — whichever gets there first, every status reaches the right place.
//! Its own test binary: installing the reaper is for the whole process.

use std::ffi::OsString;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::sync::Arc;
use std::time::Duration;

use shim_runc_v2::reaper;

fn sh(script: &str) -> reaper::Spawned {
    let args: Vec<OsString> = vec!["-c".into(), script.into()];
    reaper::spawn_fds(Path::new("/bin/sh"), &args, [None, None, None]).expect("spawn sh")
}

#[test]
fn commands_and_other_children_race_the_reaper_thread() {
    let (sink, exits) = channel();
    reaper::install(sink);
    // Stands in for the signal thread: reaps all the time, so it often
    // wins against a waiter and sometimes loses.
    let stop = Arc::new(AtomicBool::new(false));
    let s2 = Arc::clone(&stop);
    let reaping = std::thread::spawn(move || {
        while !s2.load(Ordering::SeqCst) {
            reaper::reap();
            std::thread::sleep(Duration::from_micros(200));
        }
    });

    // Commands: each status goes to its own waiter.
    let waiters: Vec<_> = (0..40)
        .map(|i| {
            let cmd = sh(&format!("exit {}", i % 7));
            std::thread::spawn(move || (i % 7, cmd.wait().expect("wait")))
        })
        .collect();
    for w in waiters {
        let (want, got) = w.join().unwrap();
        assert_eq!(got, want);
    }

    // A deadline that passes leaves the command to be waited for again.
    let mut slow = sh("sleep 0.3; exit 4");
    assert_eq!(slow.wait_timeout(Duration::from_millis(20)).unwrap(), None);
    assert_eq!(slow.wait_timeout(Duration::from_secs(10)).unwrap(), Some(4));

    // A child that is no command (as a container's process): its exit goes
    // to the sink, not to any waiter.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        unsafe { libc::_exit(9) };
    }
    let e = exits
        .recv_timeout(Duration::from_secs(10))
        .expect("exit sent");
    assert_eq!((e.pid, e.status), (pid, 9));

    stop.store(true, Ordering::SeqCst);
    reaping.join().unwrap();
}
