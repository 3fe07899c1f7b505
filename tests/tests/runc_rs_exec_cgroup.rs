//! `exec --cgroup`, differentially: under Debian's runc and runc-rs, the
//! exec'd process lands in the sub-cgroup(s) named (per controller on v1,
//! one path on v2) and the refusals match.
//!
//! Run: `cargo build -p runc-rs && cargo test -p integration-tests --test runc_rs_exec_cgroup`

use integration_tests::pair::{exec, last_err, normalise, run_detached, stdout_ok, Pair};
use integration_tests::runtime::Cli;

/// True on a pure cgroup v2 host, where `--cgroup` takes one path, no controllers.
fn pure_v2() -> bool {
    integration_tests::hygiene::pure_cgroup_v2_host()
}

/// Makes `sub` below the container's cgroup in every hierarchy, as a caller
/// of `exec --cgroup` must (the runtime never creates it); a v1 cpuset child
/// gets its parent's cpus and mems, without which it refuses processes.
/// The runtime's delete removes it with the container's cgroup.
fn make_sub_cgroup(cli: &Cli, id: &str, sub: &str) {
    let dirs = cli.cgroup_dirs(id);
    assert!(!dirs.is_empty(), "{id} has no cgroup");
    for dir in dirs {
        let d = dir.join(sub);
        std::fs::create_dir(&d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if let (Ok(v), true) = (std::fs::read_to_string(dir.join(f)), d.join(f).exists()) {
                std::fs::write(d.join(f), v.trim()).unwrap();
            }
        }
    }
}

/// `exec --cgroup`: the process starts in the sub-cgroup(s) named, per
/// controller on v1, one path for every hierarchy otherwise.
#[test]
fn exec_cgroup_sub_cgroups_like_runc() {
    let Some(p) = Pair::new() else { return };
    let cases: Vec<Vec<&str>> = if pure_v2() {
        vec![vec!["--cgroup", "sub"], vec!["--cgroup", "/sub/"]]
    } else {
        vec![
            vec!["--cgroup", "memory,pids:sub"],
            vec!["--cgroup", "memory:sub", "--cgroup", "pids:/sub"],
            vec!["--cgroup", "name=systemd:sub"],
            vec!["--cgroup", "sub"],
            vec!["--cgroup", "memory:/"],
        ]
    };
    let mut seen = vec![];
    for (rt, cli) in p.both() {
        let c = run_detached(cli, "e-cg", &["sleep", "100000"], |_| {});
        make_sub_cgroup(cli, &c.id, "sub");
        let mut these = vec![];
        for flags in &cases {
            let out = exec(cli, flags, &c.id, &["cat", "/proc/self/cgroup"]);
            these.push(format!(
                "{flags:?}\n{}",
                normalise(cli, &stdout_ok(cli, &out))
            ));
        }
        // The container's own processes stay where they were.
        let init = std::fs::read_to_string(format!("/proc/{}/cgroup", c.pid)).unwrap();
        assert!(!init.contains("/sub"), "{rt}: {init}");
        seen.push(these);
    }
    assert_eq!(seen[0], seen[1], "runc (left) and runc-rs (right)");
    let want = if pure_v2() {
        "0::/<CG>/e-cg/sub\n"
    } else {
        ":memory:/<CG>/e-cg/sub\n"
    };
    assert!(seen[1][0].contains(want), "{}", seen[1][0]);
}

/// `exec --cgroup` refusals: malformed arguments, an unknown controller, a
/// path out of the container's cgroup, a sub-cgroup that does not exist.
/// Exit 255 under both; runc's wording where runc-rs parses the argument,
/// its gist where runc's libcontainer words it.
#[test]
fn exec_cgroup_refusals_like_runc() {
    let Some(p) = Pair::new() else { return };
    let prefix = if pure_v2() { "" } else { "memory:" };
    let missing = format!("{prefix}nosuch");
    let escape = format!("{prefix}../..");
    let cases: Vec<(Vec<&str>, Vec<String>)> = vec![
        (vec!["--cgroup", "a:b:c"], vec![]),
        (vec!["--cgroup", "x", "--cgroup", "y"], vec![]),
        (
            vec!["--cgroup", "foo:sub"],
            vec!["unknown controller foo".into()],
        ),
        (
            vec!["--cgroup", &escape],
            vec!["../.. is not a sub cgroup path".into()],
        ),
        (
            vec!["--cgroup", &missing],
            vec![
                "/e-cgx/nosuch/cgroup.procs: ".into(),
                "no such file or directory".into(),
            ],
        ),
    ];
    let mut exact = vec![];
    for (rt, cli) in p.both() {
        let c = run_detached(cli, "e-cgx", &["sleep", "100000"], |_| {});
        let mut these = vec![];
        for (flags, gist) in &cases {
            let out = exec(cli, flags, &c.id, &["true"]);
            assert_eq!(
                out.status.code(),
                Some(255),
                "{rt} {flags:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let msg = last_err(&out);
            assert!(msg.starts_with("exec failed: "), "{rt} {flags:?}: {msg}");
            if gist.is_empty() {
                these.push(msg.clone());
            }
            for g in gist {
                assert!(
                    msg.to_lowercase().contains(g.as_str()),
                    "{rt} {flags:?}: {msg:?} lacks {g:?}"
                );
            }
        }
        assert_eq!(cli.state(&c.id).unwrap()["status"], "running", "{rt}");
        exact.push(these);
    }
    assert_eq!(exact[0], exact[1], "runc (left) and runc-rs (right)");
}
