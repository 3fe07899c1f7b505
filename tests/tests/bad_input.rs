//! Bad input: each a clear error on stderr and in `--log`, a non-zero
//! exit, and nothing left behind (no state dir, cgroup, mount or process).

use std::path::Path;

use integration_tests::runtime::{is_root, Cli};
use serde_json::json;
use testdata::Bundle;

/// Asserts the failure contract for container `id` created from `b`.
fn assert_failed_cleanly(
    cli: &Cli,
    out: &std::process::Output,
    id: &str,
    b: &Bundle,
    expect: &[&str],
) {
    assert_eq!(out.status.code(), Some(1), "non-zero exit");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for e in expect {
        assert!(stderr.contains(e), "stderr names {e:?}: {stderr}");
    }
    let last = cli
        .log_text()
        .lines()
        .last()
        .map(str::to_owned)
        .unwrap_or_default();
    let line: serde_json::Value =
        serde_json::from_str(&last).unwrap_or_else(|_| panic!("json log line: {last:?}"));
    assert_eq!(line["level"], "error");
    for e in expect {
        assert!(
            line["msg"].as_str().unwrap().contains(e),
            "log names {e:?}: {last}"
        );
    }
    assert!(!cli.root.path().join(id).exists(), "no state dir left");
    assert!(
        cli.cgroup_dirs(id).is_empty(),
        "no cgroup left: {:?}",
        cli.cgroup_dirs(id)
    );
    assert!(
        testdata::host::mounts_under(&b.dir).is_empty(),
        "no mount left under the bundle"
    );
    assert!(processes_mentioning(&b.dir).is_empty(), "no process left");
}

/// Pids whose command line names `dir` (a container init is a fork of the
/// runtime, so its cmdline carries the bundle path).
fn processes_mentioning(dir: &Path) -> Vec<i32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains(") Z") {
            continue;
        }
        if String::from_utf8_lossy(&cmd).contains(&needle) {
            out.push(pid);
        }
    }
    out
}

fn create(cli: &Cli, b: &Bundle, id: &str) -> std::process::Output {
    cli.run_detached(&["create", "--bundle", b.dir.to_str().unwrap(), id])
}

#[test]
fn missing_config_json() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let b = cli.bundle("noconf", &["true"]);
    std::fs::remove_file(b.config_path()).unwrap();
    let out = create(&cli, &b, "noconf");
    assert_failed_cleanly(&cli, &out, "noconf", &b, &["config.json", "No such file"]);
}

#[test]
fn malformed_config_json() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let b = cli.bundle("badjson", &["true"]);
    std::fs::write(
        b.config_path(),
        "{\"ociVersion\": \"1.0.2\", \"process\": {",
    )
    .unwrap();
    let out = create(&cli, &b, "badjson");
    assert_failed_cleanly(&cli, &out, "badjson", &b, &["config.json", "EOF"]);
}

#[test]
fn wrong_field_type_names_the_field() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let mut b = cli.bundle("badtype", &["true"]);
    b.spec["process"]["user"]["uid"] = json!("root");
    b.write_spec().unwrap();
    let out = create(&cli, &b, "badtype");
    assert_failed_cleanly(
        &cli,
        &out,
        "badtype",
        &b,
        &["config.json", "process.user.uid"],
    );
}

#[test]
fn unknown_namespace() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let mut b = cli.bundle("badns", &["true"]);
    b.spec["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "bogus"}));
    b.write_spec().unwrap();
    let out = create(&cli, &b, "badns");
    assert_failed_cleanly(&cli, &out, "badns", &b, &["linux.namespaces", "bogus"]);
}

#[test]
fn mount_onto_symlink_out_of_rootfs() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let mut b = cli.bundle("escape", &["true"]);
    let outside = testdata::temp_dir().unwrap();
    std::os::unix::fs::symlink(
        "../../../../../../../..".to_owned() + outside.path().to_str().unwrap(),
        b.rootfs().join("evil"),
    )
    .unwrap();
    b.spec["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/evil", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}),
    );
    b.write_spec().unwrap();
    let out = create(&cli, &b, "escape");
    assert_failed_cleanly(&cli, &out, "escape", &b, &["/evil", "escapes the rootfs"]);
    assert!(
        testdata::host::mounts_under(outside.path()).is_empty(),
        "nothing mounted outside the rootfs"
    );
}

#[test]
fn nonexistent_process_binary() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let b = cli.bundle("nobin", &["/no/such/program"]);
    let out = create(&cli, &b, "nobin");
    assert_failed_cleanly(
        &cli,
        &out,
        "nobin",
        &b,
        &["/no/such/program", "No such file"],
    );
    let b2 = cli.bundle("nobin2", &["no-such-program"]);
    let out = create(&cli, &b2, "nobin2");
    assert_failed_cleanly(
        &cli,
        &out,
        "nobin2",
        &b2,
        &["no-such-program", "executable file not found in $PATH"],
    );
}

#[test]
fn duplicate_container_id() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let b = cli.bundle("dup", &["sleep", "1000"]);
    assert!(create(&cli, &b, "dup").status.success());
    let first = cli.state("dup").unwrap();
    let b2 = cli.bundle("dup", &["true"]);
    let out = create(&cli, &b2, "dup");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("container with id exists: dup"), "{stderr}");
    assert!(cli
        .log_text()
        .lines()
        .last()
        .unwrap()
        .contains("container with id exists"));
    // The first container is untouched.
    let after = cli.state("dup").unwrap();
    assert_eq!(after["pid"], first["pid"]);
    assert_eq!(after["status"], "created");
    assert_eq!(after["bundle"], json!(b.dir.to_str().unwrap()));
    assert!(processes_mentioning(&b2.dir).is_empty());
}

#[test]
fn negative_oom_score_adj_needs_privilege() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let mut b = cli.bundle("oom", &["true"]);
    b.spec["process"]["oomScoreAdj"] = json!(-500);
    b.write_spec().unwrap();
    let out = create(&cli, &b, "oom");
    assert_failed_cleanly(&cli, &out, "oom", &b, &["oom_score_adj", "-500"]);
}

#[test]
fn missing_rootfs_and_bad_id() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let b = cli.bundle("norootfs", &["true"]);
    std::fs::remove_dir_all(b.rootfs()).unwrap();
    let out = create(&cli, &b, "norootfs");
    assert_failed_cleanly(&cli, &out, "norootfs", &b, &["root.path", "does not exist"]);
    let b2 = cli.bundle("x", &["true"]);
    let out = create(&cli, &b2, "../escape");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid container id"));
    assert!(!cli.root.path().parent().unwrap().join("escape").exists());
}

#[test]
fn unknown_signal_and_missing_container() {
    if !is_root() {
        return;
    }
    let cli = Cli::runc_rs();
    let out = cli.run(&["kill", "ghost", "SIGNOPE"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown signal"));
    let out = cli.run(&["kill", "ghost", "KILL"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("container does not exist"));
}
