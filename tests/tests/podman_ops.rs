//! podman 4.3 with `--runtime <runtime under test>` on a long-running
//! container: exec (plain, -t, exit status), pause/unpause, top, update,
//! stop, rm -f. conmon drives the runtime's exec (`--detach --pid-file`),
//! pause/resume, update (`--resources`), kill and delete.
//!
//! Run: `cargo build -p runc-rs && cargo test -p integration-tests --test podman_ops`
//! (`E2E_RUNTIME=/usr/sbin/runc` checks the test itself against runc).

use integration_tests::containerd::{describe, exit_code, require_tools, runtime_under_test};
use integration_tests::podman::Podman;

fn podman() -> Option<(Podman, String)> {
    let runtime = runtime_under_test()?;
    require_tools(&["podman", "conmon"]);
    let mut p = Podman::new(&runtime).unwrap_or_else(|e| panic!("prepare a private podman: {e}"));
    let image = p
        .load_busybox()
        .unwrap_or_else(|e| panic!("podman load the busybox image archive: {e}"));
    Some((p, image))
}

fn run_detached(p: &Podman, image: &str, name: &str) {
    let parent = p.cgroups().path();
    let args = [
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
        "--cgroup-parent",
        &parent,
        image,
        "sh",
        "-c",
        "sleep 1000 & wait",
    ];
    p.podman_ok(&args);
}

fn status(p: &Podman, name: &str) -> String {
    p.podman_ok(&["inspect", "--format", "{{.State.Status}}", name])
        .trim()
        .to_owned()
}

#[test]
fn exec_pause_top_update_stop_rm() {
    let Some((p, image)) = podman() else { return };
    let name = "ops";
    run_detached(&p, &image, name);
    assert_eq!(status(&p, name), "running");

    let out = p
        .podman(&["exec", name, "sh", "-c", "echo from-exec; exit 5"])
        .unwrap();
    assert_eq!(exit_code(&out.status), 5, "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "from-exec\n",
        "{}",
        describe(&out)
    );
    let out = p.podman(&["exec", "-t", name, "sh", "-c", "tty"]).unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("/dev/pts/"),
        "{}",
        describe(&out)
    );
    let out = p
        .podman(&[
            "exec",
            "--user",
            "1000:1000",
            "--workdir",
            "/tmp",
            "-e",
            "X=y",
            name,
            "sh",
            "-c",
            "id -u; pwd; echo $X",
        ])
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1000\n/tmp\ny\n",
        "{}",
        describe(&out)
    );

    p.podman_ok(&["pause", name]);
    assert_eq!(status(&p, name), "paused");
    p.podman_ok(&["unpause", name]);
    assert_eq!(status(&p, name), "running");

    let top = p.podman_ok(&["top", name]);
    assert!(top.contains("sleep 1000"), "podman top: {top}");

    p.podman_ok(&["update", "--memory", "64m", "--cpu-shares", "512", name]);
    let id = p
        .podman_ok(&["inspect", "--format", "{{.Id}}", name])
        .trim()
        .to_owned();
    let mut seen = vec![];
    for d in p.cgroups().dirs() {
        for f in [
            "memory.limit_in_bytes",
            "memory.max",
            "cpu.shares",
            "cpu.weight",
        ] {
            let path = d.join(format!("libpod-{id}")).join(f);
            if let Ok(v) = std::fs::read_to_string(&path) {
                seen.push(format!("{f}={}", v.trim()));
            }
        }
    }
    assert!(
        seen.iter()
            .any(|s| s == "memory.limit_in_bytes=67108864" || s == "memory.max=67108864"),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .any(|s| s == "cpu.shares=512" || s == "cpu.weight=20"),
        "{seen:?}"
    );

    p.podman_ok(&["stop", "-t", "2", name]);
    assert_eq!(status(&p, name), "exited");
    p.podman_ok(&["start", name]);
    assert_eq!(status(&p, name), "running");
    p.podman_ok(&["rm", "-f", name]);
    let left = p.podman_ok(&["ps", "--all", "--quiet"]);
    assert!(
        left.trim().is_empty(),
        "containers left after rm -f: {left}"
    );
}
