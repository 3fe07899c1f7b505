//! Device rules on real processes: v1 (devices.allow/deny, only the difference written) and
//! pure v2 (eBPF program attached to the cgroup, replaced on update).

mod common;

use cgroups::{CgroupMode, Manager};
use common::{read_file, resources, TestCg};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

/// `[deny all, allow c M:m rwm ...]` as OCI JSON.
fn allow_only(devs: &[(u32, u32)]) -> String {
    let mut rules = vec![r#"{"allow": false, "access": "rwm"}"#.to_string()];
    for (a, b) in devs {
        rules.push(format!(
            r#"{{"allow": true, "type": "c", "major": {a}, "minor": {b}, "access": "rwm"}}"#
        ));
    }
    format!(r#"{{"devices": [{}]}}"#, rules.join(","))
}

fn can_open(t: &mut TestCg, mgr: Option<&Manager>, dev: &str) -> (bool, String) {
    let mut cmd = Command::new("head");
    cmd.args(["-c", "1", dev])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let out = match mgr {
        Some(m) => {
            let pid = t.spawn_in_mgr(m, &mut cmd);
            let st = t.wait(pid, Duration::from_secs(30));
            (st.success(), String::new())
        }
        None => {
            let o = t.run_in(&mut cmd);
            (
                o.status.success(),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        }
    };
    out
}

#[test]
fn denied_device_cannot_be_opened_until_an_update_allows_it() {
    let mut t = TestCg::created("devices");
    // 1:3 /dev/null, 1:5 /dev/zero, 1:9 /dev/urandom
    t.mgr
        .apply(&resources(&allow_only(&[(1, 5), (1, 9)])))
        .unwrap();
    let (ok, err) = can_open(&mut t, None, "/dev/null");
    assert!(!ok, "/dev/null was readable");
    assert!(err.contains("Operation not permitted"), "{err}");
    let (ok, err) = can_open(&mut t, None, "/dev/zero");
    assert!(ok, "/dev/zero: {err}");

    // update: now allowed (on v2 this also shows the old program is gone: while attached it
    // would still refuse 1:3)
    t.mgr
        .apply(&resources(&allow_only(&[(1, 5), (1, 9), (1, 3)])))
        .unwrap();
    let (ok, err) = can_open(&mut t, None, "/dev/null");
    assert!(ok, "/dev/null after the update: {err}");

    // allow-by-default with one denied device
    t.mgr
        .apply(&resources(
            r#"{"devices": [{"allow": true, "access": "rwm"},
                {"allow": false, "type": "c", "major": 1, "minor": 3, "access": "rw"}]}"#,
        ))
        .unwrap();
    assert!(
        !can_open(&mut t, None, "/dev/null").0,
        "/dev/null readable again"
    );
    assert!(can_open(&mut t, None, "/dev/zero").0);
    if !t.v2() {
        assert_eq!(t.read("devices", "devices.list"), "a *:* rwm");
    }
}

/// Re-applying device rules (same ones, or with an unrelated change) while the container keeps
/// opening /dev/null -- also from a sub-cgroup -- never makes an open fail. The old way (write
/// "a" to devices.deny, then the allow rules) fails here twice on v1: the running shells see
/// EPERM between the two writes, and with a sub-cgroup the kernel refuses the "a" (EINVAL).
#[test]
fn reapplying_rules_never_denies_a_running_container() {
    let mut t = TestCg::created("devreapply");
    let base = [(1, 3), (1, 5), (1, 9), (5, 0)];
    let with_extra = [(1, 3), (1, 5), (1, 9), (5, 0), (1, 7)];
    t.mgr.apply(&resources(&allow_only(&base))).unwrap();

    let inner = Manager::new(Some(&format!("{}/inner", t.mgr.cgroups_path())), "x").unwrap();
    inner.create().unwrap();
    let stop = PathBuf::from(format!("/tmp/cgroups-devloop-{}", std::process::id()));
    let _ = std::fs::remove_file(&stop);
    let script = format!(
        "ok=0; fail=0; while [ ! -e {} ]; do \
           if true </dev/null; then ok=$((ok+1)); else fail=$((fail+1)); fi; done; \
         echo \"$ok $fail\"",
        stop.display()
    );
    let looper = |t: &mut TestCg, m: Option<&Manager>| {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", &script])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        match m {
            Some(m) => t.spawn_in_mgr(m, &mut cmd),
            None => t.spawn_in(&mut cmd),
        }
    };
    let mut loopers = vec![looper(&mut t, Some(&inner))];
    if !t.v2() {
        // v1 lets the container's own cgroup hold processes next to a sub-cgroup.
        loopers.push(looper(&mut t, None));
    }
    std::thread::sleep(Duration::from_millis(200));
    for i in 0..60 {
        let rules = if i % 2 == 0 {
            &with_extra[..]
        } else {
            &base[..]
        };
        t.mgr
            .apply(&resources(&allow_only(rules)))
            .unwrap_or_else(|e| panic!("re-apply {i}: {e}"));
    }
    std::fs::write(&stop, "").unwrap();
    for pid in loopers {
        let out = t.wait_stdout(pid, Duration::from_secs(60));
        let n: Vec<u64> = out.split_whitespace().map(|v| v.parse().unwrap()).collect();
        let [ok, fail] = n[..] else {
            panic!("looper printed {out:?}")
        };
        eprintln!("looper {pid}: {ok} opens, {fail} failures");
        assert_eq!(fail, 0, "an open of /dev/null failed during re-apply");
        assert!(ok > 100, "the loop hardly ran ({ok})");
    }
    let _ = std::fs::remove_file(&stop);
    if !t.v2() {
        let inner_list = read_file(&inner.paths()["devices"].join("devices.list"));
        assert!(
            inner_list.contains("c 1:3 rwm"),
            "sub-cgroup lost /dev/null: {inner_list}"
        );
        assert!(t.read("devices", "devices.list").contains("c 1:5 rwm"));
    }
    // control: the same loop does see a denial, so the zero above means something
    t.mgr.apply(&resources(&allow_only(&[(1, 5)]))).unwrap();
    assert!(
        !can_open(&mut t, Some(&inner), "/dev/null").0,
        "/dev/null still open"
    );
    assert!(can_open(&mut t, Some(&inner), "/dev/zero").0);
    if t.mode == CgroupMode::Unified {
        // each update replaced ours: one program on the container, none on the sub-cgroup
        assert_eq!(attached_device_programs(&t.dir("devices")), 1);
        assert_eq!(attached_device_programs(&inner.paths()["unified"]), 0);
    }
}

/// How many BPF_CGROUP_DEVICE programs are attached directly to `dir` (bpf(BPF_PROG_QUERY)).
fn attached_device_programs(dir: &std::path::Path) -> u32 {
    #[repr(C)]
    struct Query {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        pad: u32,
    }
    let f = std::fs::File::open(dir).unwrap();
    let mut ids = [0u32; 16];
    let mut q = Query {
        target_fd: std::os::fd::AsRawFd::as_raw_fd(&f) as u32,
        attach_type: 6, // BPF_CGROUP_DEVICE
        query_flags: 0,
        attach_flags: 0,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        pad: 0,
    };
    // SAFETY: BPF_PROG_QUERY (16) with a live attr of its size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            16,
            &mut q as *mut Query,
            std::mem::size_of::<Query>(),
        )
    };
    assert!(
        r == 0,
        "BPF_PROG_QUERY: {}",
        std::io::Error::last_os_error()
    );
    q.prog_cnt
}
