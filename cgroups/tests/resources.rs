//! apply(): every field read back from the cgroup files (v1 names on hybrid/legacy, cgroup2
//! names on pure v2), the ordering cases, and bad input rejected before anything is written.

mod common;

use cgroups::{CgroupMode, Error};
use common::{full_resources_json, read_file, resources, TestCg};

const MB: i64 = 1 << 20;

fn assert_file(t: &TestCg, controller: &str, file: &str, want: &str) {
    assert_eq!(t.read(controller, file), want, "{controller}/{file}");
}

#[test]
fn full_resource_set_reads_back() {
    let t = TestCg::created("full");
    let v2 = t.v2();
    let has_rt = !v2 && t.dir("cpu").join("cpu.rt_runtime_us").exists();
    let (json, dev) = full_resources_json(&t);
    t.mgr.apply(&resources(&json)).expect("apply");

    assert_file(&t, "cpuset", "cpuset.cpus", "0");
    assert_file(&t, "cpuset", "cpuset.mems", "0");
    assert_file(&t, "pids", "pids.max", "42");
    if v2 {
        assert_file(&t, "cpu", "cpu.weight", "20"); // 1 + (512-2)*9999/262142
        assert_file(&t, "cpu", "cpu.max", "50000 100000");
        assert_file(&t, "cpu", "cpu.max.burst", "10000");
        assert_file(&t, "cpu", "cpu.idle", "0"); // 1 would turn shares/weight into the idle weight
        assert_file(&t, "memory", "memory.max", &(256 * MB).to_string());
        assert_file(&t, "memory", "memory.low", &(128 * MB).to_string());
        assert_file(&t, "memory", "memory.swap.max", &(256 * MB).to_string()); // 512M - 256M
        assert_file(&t, "memory", "memory.high", "805306368"); // from `unified`
        match common::io_weight_file(&t) {
            Some("io.bfq.weight") => assert_file(&t, "io", "io.bfq.weight", "default 500"),
            Some(f) => assert_file(&t, "io", f, "default 4950"), // 1 + (500-10)*9999/990
            None => eprintln!("no io weight file on this kernel: weight not applied"),
        }
        if let Some((a, b)) = dev {
            let io_max = t.read("io", "io.max");
            let want = format!("{a}:{b} rbps=1048576 wbps=2097152 riops=100 wiops=200");
            assert!(
                io_max.lines().any(|l| l == want),
                "io.max {io_max:?}, want {want:?}"
            );
        }
    } else {
        assert_file(&t, "cpu", "cpu.shares", "512");
        assert_file(&t, "cpu", "cpu.cfs_quota_us", "50000");
        assert_file(&t, "cpu", "cpu.cfs_period_us", "100000");
        assert_file(&t, "cpu", "cpu.cfs_burst_us", "10000");
        assert_file(&t, "cpu", "cpu.idle", "0"); // 1 would turn shares/weight into the idle weight
        if has_rt {
            assert_file(&t, "cpu", "cpu.rt_period_us", "1000000");
            assert_file(&t, "cpu", "cpu.rt_runtime_us", "5000");
        }
        assert_file(
            &t,
            "memory",
            "memory.limit_in_bytes",
            &(256 * MB).to_string(),
        );
        assert_file(
            &t,
            "memory",
            "memory.soft_limit_in_bytes",
            &(128 * MB).to_string(),
        );
        if t.dir("memory").join("memory.memsw.limit_in_bytes").exists() {
            assert_file(
                &t,
                "memory",
                "memory.memsw.limit_in_bytes",
                &(512 * MB).to_string(),
            );
        }
        assert_file(
            &t,
            "memory",
            "memory.kmem.tcp.limit_in_bytes",
            &(32 * MB).to_string(),
        );
        assert_file(&t, "memory", "memory.swappiness", "30");
        assert!(t
            .read("memory", "memory.oom_control")
            .contains("oom_kill_disable 1"));
        if let Some(weight) = common::io_weight_file(&t) {
            let w = t.read("blkio", weight);
            assert!(w == "500" || w == "default 500", "{weight}: {w:?}");
        }
        if let Some((a, b)) = dev {
            for (file, rate) in [
                ("read_bps", 1048576),
                ("write_bps", 2097152),
                ("read_iops", 100),
                ("write_iops", 200),
            ] {
                assert_file(
                    &t,
                    "blkio",
                    &format!("blkio.throttle.{file}_device"),
                    &format!("{a}:{b} {rate}"),
                );
            }
        }
        assert_file(&t, "devices", "devices.list", "c 1:3 rwm\nc 1:5 r");
        if t.mode == CgroupMode::Hybrid {
            assert_eq!(
                read_file(&t.mgr.paths()["unified"].join("cgroup.max.descendants")),
                "7"
            );
        }
    }
    eprintln!("mode {:?}, block device {dev:?}, rt {has_rt}", t.mode);
}

/// memory limit vs memory+swap: raising and lowering both must work in either direction.
#[test]
fn memory_limit_and_swap_order() {
    let t = TestCg::created("memorder");
    let v2 = t.v2();
    let has_memsw = !v2 && t.dir("memory").join("memory.memsw.limit_in_bytes").exists();
    for (limit, swap) in [(256, 512), (64, 128), (1024, 2048), (512, 512), (-1, -1)] {
        let (l, s) = (
            if limit > 0 { limit * MB } else { -1 },
            if swap > 0 { swap * MB } else { -1 },
        );
        t.mgr
            .apply(&resources(&format!(
                r#"{{"memory": {{"limit": {l}, "swap": {s}}}}}"#
            )))
            .unwrap_or_else(|e| panic!("limit {limit}M swap {swap}M: {e}"));
        if v2 {
            let max = |v: i64| {
                if v < 0 {
                    "max".to_string()
                } else {
                    v.to_string()
                }
            };
            assert_file(&t, "memory", "memory.max", &max(l));
            let want_swap = if l < 0 {
                "max".to_string()
            } else {
                (s - l).to_string()
            };
            assert_file(&t, "memory", "memory.swap.max", &want_swap);
        } else {
            let unl = "9223372036854771712";
            let v1 = |v: i64| {
                if v < 0 {
                    unl.to_string()
                } else {
                    v.to_string()
                }
            };
            assert_file(&t, "memory", "memory.limit_in_bytes", &v1(l));
            if has_memsw {
                assert_file(&t, "memory", "memory.memsw.limit_in_bytes", &v1(s));
            }
        }
    }
    let e = t
        .mgr
        .apply(&resources(&format!(
            r#"{{"memory": {{"limit": {}, "swap": {}}}}}"#,
            256 * MB,
            128 * MB
        )))
        .unwrap_err();
    assert_eq!(e.field(), Some("linux.resources.memory.swap"), "{e}");
}

#[test]
fn cpuset_outside_the_host_is_rejected_before_writing() {
    let t = TestCg::created("cpuset");
    t.mgr
        .apply(&resources(
            r#"{"cpu": {"shares": 512, "cpus": "0"}, "pids": {"limit": 10}}"#,
        ))
        .unwrap();
    let shares_file = if t.v2() { "cpu.weight" } else { "cpu.shares" };
    let before = (
        t.read("cpu", shares_file),
        t.read("cpuset", "cpuset.cpus"),
        t.read("pids", "pids.max"),
    );

    let e = t
        .mgr
        .apply(&resources(
            r#"{"cpu": {"shares": 2048, "cpus": "99"}, "pids": {"limit": 20}}"#,
        ))
        .unwrap_err();
    eprintln!("cpuset 99: {e}");
    assert_eq!(e.field(), Some("linux.resources.cpu.cpus"), "{e}");
    assert!(matches!(e, Error::Invalid { .. }), "{e:?}");
    assert!(e.to_string().contains("99"), "{e}");
    let after = (
        t.read("cpu", shares_file),
        t.read("cpuset", "cpuset.cpus"),
        t.read("pids", "pids.max"),
    );
    assert_eq!(before, after, "files changed by a rejected apply");

    for (json, field) in [
        (r#"{"cpu": {"cpus": "0-"}}"#, "linux.resources.cpu.cpus"),
        (r#"{"cpu": {"shares": 1}}"#, "linux.resources.cpu.shares"),
        (
            r#"{"memory": {"swappiness": 101}}"#,
            "linux.resources.memory.swappiness",
        ),
        (
            r#"{"blockIO": {"weight": 5}}"#,
            "linux.resources.blockIO.weight",
        ),
        (
            r#"{"hugepageLimits": [{"pageSize": "2M", "limit": 1}]}"#,
            "linux.resources.hugepageLimits",
        ),
        (
            r#"{"devices": [{"allow": true, "type": "c", "access": "rwx"}]}"#,
            "linux.resources.devices[0].access",
        ),
    ] {
        let e = t.mgr.apply(&resources(json)).unwrap_err();
        eprintln!("{json}: {e}");
        assert!(
            e.field().unwrap_or_default().starts_with(field),
            "{json}: {e}"
        );
    }
    let after = (
        t.read("cpu", shares_file),
        t.read("cpuset", "cpuset.cpus"),
        t.read("pids", "pids.max"),
    );
    assert_eq!(before, after);
}

#[test]
fn unified_keys() {
    let t = TestCg::created("unified");
    t.mgr
        .apply(&resources(r#"{"pids": {"limit": 10}}"#))
        .unwrap();
    let bad = t
        .mgr
        .apply(&resources(
            r#"{"pids": {"limit": 99}, "unified": {"nonexistent.knob": "1"}}"#,
        ))
        .unwrap_err();
    eprintln!("unknown unified key: {bad}");
    match t.mode {
        CgroupMode::Legacy => assert_eq!(bad.field(), Some("linux.resources.unified")),
        _ => {
            assert_eq!(
                bad.field(),
                Some(r#"linux.resources.unified["nonexistent.knob"]"#),
                "{bad}"
            );
            assert!(bad.to_string().contains("unknown key"), "{bad}");
        }
    }
    assert_file(&t, "pids", "pids.max", "10"); // nothing written
    for key in ["../memory.max", "cgroup.procs", "noperiod"] {
        let e = t
            .mgr
            .apply(&resources(&format!(r#"{{"unified": {{"{key}": "1"}}}}"#)))
            .unwrap_err();
        assert!(
            e.field().unwrap().starts_with("linux.resources.unified"),
            "{key}: {e}"
        );
    }
    match t.mode {
        CgroupMode::Hybrid => {
            // memory is a v1 controller here: its v2 file does not exist in the unified dir
            let e = t
                .mgr
                .apply(&resources(r#"{"unified": {"memory.max": "1000000"}}"#))
                .unwrap_err();
            eprintln!("memory.max on hybrid: {e}");
            assert!(e.to_string().contains("cgroup v1 on this host"), "{e}");
            t.mgr
                .apply(&resources(r#"{"unified": {"cgroup.max.depth": "3"}}"#))
                .unwrap();
            assert_eq!(
                read_file(&t.mgr.paths()["unified"].join("cgroup.max.depth")),
                "3"
            );
        }
        CgroupMode::Unified => {
            // explicit keys win over converted fields (written last)
            t.mgr
                .apply(&resources(
                    r#"{"pids": {"limit": 5}, "unified": {"pids.max": "6", "cpu.weight": "300"}}"#,
                ))
                .unwrap();
            assert_file(&t, "pids", "pids.max", "6");
            assert_file(&t, "cpu", "cpu.weight", "300");
        }
        CgroupMode::Legacy => {}
    }
}

#[test]
fn fields_the_host_cannot_honour_name_themselves() {
    let t = TestCg::created("unsupported");
    // hugetlb: on the dev VM (hybrid) it exists only in the cgroup2 mount, whose root does not
    // enable it (and host cgroups are not ours to change); in the v2 VM it works.
    let huge = r#"{"hugepageLimits": [{"pageSize": "2MB", "limit": 4194304}]}"#;
    let huge_here = if t.v2() {
        t.dir("hugetlb").join("hugetlb.2MB.max").exists()
    } else {
        t.mgr
            .paths()
            .get("hugetlb")
            .is_some_and(|d| d.join("hugetlb.2MB.limit_in_bytes").exists())
            || t.mgr
                .paths()
                .get("unified")
                .is_some_and(|d| d.join("hugetlb.2MB.max").exists())
    };
    match t.mgr.apply(&resources(huge)) {
        Ok(()) => {
            assert!(huge_here);
            let (dir, file) = if let Some(d) = t.mgr.paths().get("hugetlb").filter(|_| !t.v2()) {
                (d.clone(), "hugetlb.2MB.limit_in_bytes")
            } else {
                (t.mgr.paths()["unified"].clone(), "hugetlb.2MB.max")
            };
            assert_eq!(read_file(&dir.join(file)), "4194304");
        }
        Err(e) => {
            eprintln!("hugetlb: {e}");
            assert!(!huge_here, "{e}");
            assert_eq!(e.field(), Some("linux.resources.hugepageLimits"), "{e}");
            assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
        }
    }
    // net_cls / net_prio: error only when a value is set and the hierarchy is missing
    t.mgr.apply(&resources(r#"{"network": {}}"#)).unwrap();
    if !t.mgr.paths().contains_key("net_cls") {
        let e = t
            .mgr
            .apply(&resources(r#"{"network": {"classID": 1048577}}"#))
            .unwrap_err();
        assert_eq!(e.field(), Some("linux.resources.network.classID"), "{e}");
    }
    if !t.mgr.paths().contains_key("net_prio") {
        let e = t
            .mgr
            .apply(&resources(
                r#"{"network": {"priorities": [{"name": "lo", "priority": 1}]}}"#,
            ))
            .unwrap_err();
        assert_eq!(e.field(), Some("linux.resources.network.priorities"), "{e}");
    }
    if t.v2() {
        let e = t
            .mgr
            .apply(&resources(r#"{"cpu": {"realtimeRuntime": 5000}}"#))
            .unwrap_err();
        assert_eq!(
            e.field(),
            Some("linux.resources.cpu.realtimeRuntime"),
            "{e}"
        );
        // devices are skipped (with a warning) until the eBPF program lands
        t.mgr
            .apply(&resources(
                r#"{"devices": [{"allow": false, "access": "rwm"}]}"#,
            ))
            .unwrap();
    }
}

#[test]
fn kernel_refusal_names_field_and_file() {
    let t = TestCg::created("refused");
    // A weight for a device that does not exist: passes validation, the kernel refuses it.
    let json = r#"{"blockIO": {"weightDevice": [{"major": 250, "minor": 250, "weight": 300}]}}"#;
    let e = t.mgr.apply(&resources(json)).unwrap_err();
    eprintln!("kernel refusal: {e}");
    match e {
        Error::Write {
            field, path, value, ..
        } => {
            assert_eq!(field, "linux.resources.blockIO.weightDevice");
            assert!(
                path.to_string_lossy().contains("weight"),
                "{}",
                path.display()
            );
            assert!(value.starts_with("250:250 "), "{value}");
        }
        Error::Unsupported { field, .. } => {
            assert_eq!(field, "linux.resources.blockIO.weightDevice")
        }
        e => panic!("unexpected {e:?}"),
    }
}
