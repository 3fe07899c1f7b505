//! podman 4.3 with `--runtime <runtime under test>`.
//!
//! The runtime is runc-rs (`$RUNC_RS_BIN` or the one cargo built); set
//! `E2E_RUNTIME=/usr/sbin/runc` to check these tests against runc. Each
//! test has its own podman storage and state (see
//! `integration_tests::podman`), removed even when the test fails. Needs
//! root; a missing runtime binary fails the tests.
//!
//! Run: `cargo test -p integration-tests --test podman`

use integration_tests::containerd::{describe, exit_code, require_tools, runtime_under_test};
use integration_tests::podman::Podman;

/// A private podman with the busybox image loaded, or `None` when not root.
fn podman() -> Option<(Podman, String)> {
    let runtime = runtime_under_test()?;
    require_tools(&["podman", "conmon"]);
    let mut p = Podman::new(&runtime).unwrap_or_else(|e| panic!("prepare a private podman: {e}"));
    let image = p
        .load_busybox()
        .unwrap_or_else(|e| panic!("podman load the busybox image archive: {e}"));
    Some((p, image))
}

#[test]
fn run_rm_prints_output() {
    let Some((p, image)) = podman() else { return };
    let out = p
        .run(&image, &["echo", "hi"])
        .unwrap_or_else(|e| panic!("podman run: {e}"));
    assert!(
        out.status.success(),
        "podman run failed: {}",
        describe(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hi\n",
        "{}",
        describe(&out)
    );
    // --rm removed the container.
    let left = p.podman_ok(&["ps", "--all", "--quiet"]);
    assert!(left.trim().is_empty(), "containers left after --rm: {left}");
}

#[test]
fn run_propagates_exit_code() {
    let Some((p, image)) = podman() else { return };
    let out = p
        .run(&image, &["sh", "-c", "exit 7"])
        .unwrap_or_else(|e| panic!("podman run: {e}"));
    assert_eq!(
        exit_code(&out.status),
        7,
        "exit code not propagated: {}",
        describe(&out)
    );
}

#[test]
fn run_applies_ulimits() {
    let Some((p, image)) = podman() else { return };
    let out = p
        .run(&image, &["sh", "-c", "ulimit -n; ulimit -Hn; ulimit -u"])
        .unwrap_or_else(|e| panic!("podman run: {e}"));
    assert!(
        out.status.success(),
        "podman run failed: {}",
        describe(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "1024\n1024\n1024\n",
        "{}",
        describe(&out)
    );
}
