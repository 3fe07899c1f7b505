//! Placement, listing, freeze/thaw, kill_all, delete, serialization -- on whatever cgroup
//! mode the host has (hybrid on the dev VM, pure v2 in the cgroup2 VM).

mod common;

use cgroups::{CgroupMode, FreezerState, Manager};
use common::{read_file, signal_of, utime, TestCg};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::thread::sleep;
use std::time::Duration;

#[test]
fn mode_matches_mounts() {
    let mode = cgroups::detect_mode();
    let m = TestCg::new("mode");
    let paths = m.mgr.paths();
    match mode {
        CgroupMode::Unified => assert_eq!(paths.keys().collect::<Vec<_>>(), vec!["unified"]),
        CgroupMode::Hybrid => {
            assert_eq!(
                paths["unified"],
                PathBuf::from(format!("/sys/fs/cgroup/unified{}", m.mgr.cgroups_path()))
            );
            assert!(
                paths.contains_key("memory") && paths.contains_key("freezer"),
                "{paths:?}"
            );
        }
        CgroupMode::Legacy => assert!(!paths.contains_key("unified")),
    }
    eprintln!("mode {mode:?}: {paths:#?}");
}

#[test]
fn create_add_pid_and_delete() {
    let mut t = TestCg::created("place");
    assert!(t.mgr.exists());
    let pid = t.spawn(Command::new("sleep").arg("100"));
    t.mgr.add_pid(pid).unwrap();
    let dirs: BTreeSet<PathBuf> = t.mgr.paths().into_values().collect();
    for d in &dirs {
        let procs = read_file(&d.join("cgroup.procs"));
        assert!(
            procs.lines().any(|l| l == pid.to_string()),
            "{pid} not in {}: {procs:?}",
            d.display()
        );
    }
    // v1 cpuset: the new directories got cpus/mems from their parent
    if let Some(cs) = t.mgr.paths().get("cpuset").filter(|_| !t.v2()) {
        assert!(!read_file(&cs.join("cpuset.cpus")).is_empty());
        assert!(!read_file(&cs.join("cpuset.mems")).is_empty());
    }
    assert_eq!(t.mgr.pids().unwrap(), vec![pid]);

    // a sub-cgroup made by "the container" is removed too, deepest first
    for d in &dirs {
        std::fs::create_dir(d.join("nested")).unwrap();
    }
    t.mgr.kill_all(libc::SIGKILL).unwrap();
    assert_eq!(
        signal_of(t.wait(pid, Duration::from_secs(10))),
        Some(libc::SIGKILL)
    );
    t.wait_empty(Duration::from_secs(5));

    t.mgr.delete().unwrap();
    for d in &dirs {
        assert!(!d.exists(), "{} still exists", d.display());
        assert!(
            d.parent().unwrap().is_dir(),
            "parent of {} was removed",
            d.display()
        );
    }
    assert!(!t.mgr.exists());
    t.mgr.delete().expect("deleting again is fine");
}

#[test]
fn delete_refuses_busy_cgroup_with_error_naming_dir() {
    let mut t = TestCg::created("busy");
    let pid = t.spawn(Command::new("sleep").arg("100"));
    t.mgr.add_pid(pid).unwrap();
    let err = t.mgr.delete().unwrap_err();
    assert!(matches!(err, cgroups::Error::Remove { .. }), "{err}");
    assert!(t.mgr.exists());
}

#[test]
fn manager_survives_serialization() {
    let mut t = TestCg::created("serde");
    let json = serde_json::to_string(&t.mgr).unwrap();
    let back: Manager = serde_json::from_str(&json).unwrap();
    assert_eq!(back, t.mgr);
    assert_eq!(back.paths(), t.mgr.paths());
    let pid = t.spawn(Command::new("sleep").arg("100"));
    t.mgr.add_pid(pid).unwrap();
    // a "later runtime process" kills and deletes from the stored state
    back.kill_all(libc::SIGKILL).unwrap();
    t.wait(pid, Duration::from_secs(10));
    t.wait_empty(Duration::from_secs(5));
    back.delete().unwrap();
    assert!(!t.mgr.exists());
}

#[test]
fn relative_and_default_paths() {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let m = Manager::new(Some("rel-test/x"), "unused").unwrap();
    assert_eq!(m.cgroups_path(), "rel-test/x");
    for (ctrl, dir) in m.paths() {
        // the caller's own cgroup in that hierarchy, from /proc/self/cgroup
        let own_path = own
            .lines()
            .find_map(|l| {
                let mut p = l.splitn(3, ':');
                let (_, c, path) = (p.next()?, p.next()?, p.next()?);
                let hit = if ctrl == "unified" {
                    c.is_empty()
                } else if ctrl == "systemd" {
                    c == "name=systemd"
                } else {
                    c.split(',').any(|x| x == ctrl)
                };
                hit.then(|| path.to_string())
            })
            .unwrap();
        assert!(
            dir.ends_with(
                format!("{}/rel-test/x", own_path.trim_start_matches('/')).trim_start_matches('/')
            ),
            "{ctrl}: {}",
            dir.display()
        );
    }
    let d = Manager::new(None, "ctr-default").unwrap();
    assert_eq!(d.cgroups_path(), "/ctr-default");
    assert_eq!(
        Manager::new(Some(""), "ctr-default")
            .unwrap()
            .cgroups_path(),
        "/ctr-default"
    );
    for bad in ["/", "../escape", "a/../../b"] {
        let e = Manager::new(Some(bad), "x").unwrap_err();
        assert_eq!(e.field(), Some("linux.cgroupsPath"), "{bad}: {e}");
    }
}

#[test]
fn freeze_stops_and_thaw_resumes() {
    let mut t = TestCg::created("freeze");
    let pid = t.spawn(Command::new("sh").args(["-c", "while :; do :; done"]));
    t.mgr.add_pid(pid).unwrap();
    assert_eq!(t.mgr.freezer_state().unwrap(), FreezerState::Thawed);

    t.mgr.freeze().unwrap();
    assert_eq!(t.mgr.freezer_state().unwrap(), FreezerState::Frozen);
    if t.mgr.paths().contains_key("freezer") {
        assert_eq!(t.read("freezer", "freezer.state"), "FROZEN");
    } else {
        assert_eq!(
            read_file(&t.mgr.paths()["unified"].join("cgroup.freeze")),
            "1"
        );
        assert!(read_file(&t.mgr.paths()["unified"].join("cgroup.events")).contains("frozen 1"));
    }
    let a = utime(pid);
    sleep(Duration::from_millis(400));
    assert_eq!(utime(pid), a, "a frozen busy loop kept running");

    t.mgr.thaw().unwrap();
    assert_eq!(t.mgr.freezer_state().unwrap(), FreezerState::Thawed);
    let b = utime(pid);
    sleep(Duration::from_millis(400));
    assert!(utime(pid) > b, "thawed busy loop does not run");
}

#[test]
fn kill_all_signals_every_process() {
    for (sig, frozen_first) in [
        (libc::SIGTERM, false),
        (libc::SIGKILL, false),
        (libc::SIGKILL, true),
    ] {
        let mut t = TestCg::created("kill");
        let pids: Vec<i32> = (0..3)
            .map(|_| t.spawn(Command::new("sleep").arg("100")))
            .collect();
        for p in &pids {
            t.mgr.add_pid(*p).unwrap();
        }
        if frozen_first {
            t.mgr.freeze().unwrap();
        }
        t.mgr.kill_all(sig).unwrap();
        for p in pids {
            assert_eq!(
                signal_of(t.wait(p, Duration::from_secs(10))),
                Some(sig),
                "signal {sig}, frozen {frozen_first}"
            );
        }
        t.wait_empty(Duration::from_secs(5));
        assert!(t.mgr.pids().unwrap().is_empty());
    }
}

#[test]
fn kill_all_reaches_processes_in_sub_cgroups() {
    let mut t = TestCg::created("killnested");
    // On cgroup v2 a cgroup with enabled controllers cannot hold processes itself, so both
    // processes go into sub-cgroups of the container (the usual nested layout).
    let sub = |n: &str| {
        let m = Manager::new(Some(&format!("{}/{n}", t.mgr.cgroups_path())), "x").unwrap();
        m.create().unwrap();
        m
    };
    let (sa, sb) = (sub("inner-a"), sub("inner-b"));
    let a = t.spawn(Command::new("sleep").arg("100"));
    let b = t.spawn(Command::new("sleep").arg("100"));
    sa.add_pid(a).unwrap();
    sb.add_pid(b).unwrap();
    let mut listed = t.mgr.pids().unwrap();
    listed.sort();
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(listed, want, "pids() is recursive");
    t.mgr.kill_all(libc::SIGTERM).unwrap();
    assert_eq!(
        signal_of(t.wait(a, Duration::from_secs(10))),
        Some(libc::SIGTERM)
    );
    assert_eq!(
        signal_of(t.wait(b, Duration::from_secs(10))),
        Some(libc::SIGTERM)
    );
}

/// v1 hosts: the container gets a directory in the named `name=systemd` hierarchy (what a
/// runtime binds into the container), the pid joins it, apply() never writes there, delete()
/// removes it. Pure v2 has no such hierarchy and no "systemd" entry.
#[test]
fn named_systemd_hierarchy_is_joined_but_never_written() {
    let mut t = TestCg::created("systemd");
    let paths = t.mgr.paths();
    assert!(!paths.keys().any(|k| k.starts_with("name=")), "{paths:?}");
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(" - cgroup ") && l.split(',').any(|o| o == "name=systemd"));
    if t.v2() || !mounted {
        assert!(!paths.contains_key("systemd"), "{paths:?}");
        eprintln!(
            "no name=systemd hierarchy here ({:?}); checked it is not listed",
            t.mode
        );
        return;
    }
    let dir = paths["systemd"].clone();
    assert_eq!(
        dir,
        PathBuf::from(format!("/sys/fs/cgroup/systemd{}", t.mgr.cgroups_path()))
    );
    assert!(dir.is_dir());
    let snapshot = |d: &std::path::Path| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().unwrap().is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != "cgroup.procs" && n != "tasks")
            .map(|n| {
                (
                    n.clone(),
                    std::fs::read_to_string(d.join(&n)).unwrap_or_default(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&dir);

    let pid = t.spawn(Command::new("sleep").arg("100"));
    t.mgr.add_pid(pid).unwrap();
    let own = read_file(&PathBuf::from(format!("/proc/{pid}/cgroup")));
    let want = format!(":name=systemd:{}", t.mgr.cgroups_path());
    assert!(own.lines().any(|l| l.ends_with(&want)), "{own}");
    assert!(read_file(&dir.join("cgroup.procs")).contains(&pid.to_string()));

    let (json, _) = common::full_resources_json(&t);
    t.mgr.apply(&common::resources(&json)).unwrap();
    assert_eq!(
        snapshot(&dir),
        before,
        "apply() wrote into the name=systemd directory"
    );

    t.mgr.kill_all(libc::SIGKILL).unwrap();
    t.wait(pid, Duration::from_secs(10));
    t.wait_empty(Duration::from_secs(5));
    t.mgr.delete().unwrap();
    assert!(!dir.exists());
}

/// A process that places itself (the runtime's fast path) ends up in every
/// hierarchy, exactly like one placed with add_pid.
#[test]
fn enter_self_joins_every_hierarchy() {
    let t = TestCg::created("self");
    // Two pipes: child → parent ("placed"), parent → child ("looked").
    let (placed_r, placed_w) = nix::unistd::pipe().unwrap();
    let (looked_r, looked_w) = nix::unistd::pipe().unwrap();
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let ok = t.mgr.enter_self(false).is_ok();
            let _ = nix::unistd::write(&placed_w, if ok { b"y" } else { b"n" });
            let mut b = [0u8; 1];
            let _ = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&looked_r), &mut b);
            unsafe { libc::_exit(0) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            let mut b = [0u8; 1];
            nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&placed_r), &mut b).unwrap();
            assert_eq!(&b, b"y", "enter_self succeeded");
            let cg = std::fs::read_to_string(format!("/proc/{child}/cgroup")).unwrap();
            let path = t.mgr.cgroups_path().to_owned();
            for line in cg.lines() {
                // Every hierarchy the manager knows lists the container's path.
                let (_, rest) = line.split_once(':').unwrap();
                let (ctrls, p) = rest.split_once(':').unwrap();
                let known = t.mgr.paths().keys().any(|k| {
                    ctrls
                        .split(',')
                        .any(|c| c == k || (k == "systemd" && c == "name=systemd"))
                        || (k == "unified" && ctrls.is_empty())
                });
                if known {
                    assert!(p.ends_with(&path), "{line} lists {path}");
                }
            }
            assert!(t.mgr.pids().unwrap().contains(&child.as_raw()));
            nix::unistd::write(&looked_w, b"x").unwrap();
            nix::sys::wait::waitpid(child, None).unwrap();
        }
    }
}
