//! The runtime's delete of a container whose init exited runs at once, not
//! at containerd's Delete (`shim-runc-v2/src/early_delete.rs`): the runtime
//! state and the cgroup go with the exit, Stats answers NotFound (which
//! containerd's Metrics skips), Pids with no pids, Delete still reports
//! the exit; a spec
//! with `poststop` hooks keeps its state until Delete, where the hooks run.
//! And an init the kernel kills for memory is still a `/tasks/oom` event
//! (the OOM is read before its cgroup goes).
//!
//! Needs root and the built binaries. Run:
//! `cargo test -p integration-tests --test shim_early_delete`

use std::path::Path;
use std::time::Duration;

use containerd_shim_protos::api::{
    CreateTaskRequest, DeleteRequest, PidsRequest, StartRequest, StatsRequest, WaitRequest,
};
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;
use integration_tests::containerd::{describe, runtime_under_test, CgroupParent};
use integration_tests::shim_rs::{
    assert_clean, ctx, runc_options, runc_rs, rust_shim, status_code, wait_until, CtrEvents,
    ServedShim,
};
use ttrpc::Code;

const LONG: Duration = Duration::from_secs(20);

/// Create, start and wait for `id` running `args`; its exit status.
fn run_to_exit(
    c: &TaskClient,
    cg: &CgroupParent,
    root: &Path,
    id: &str,
    args: &[&str],
    poststop: Option<&Path>,
) -> (testdata::bundle::Bundle, u32) {
    let mut b = testdata::bundle::Bundle::with_args(args).unwrap();
    b.spec["linux"]["cgroupsPath"] = serde_json::json!(cg.child(id));
    if let Some(mark) = poststop {
        b.spec["hooks"] = serde_json::json!({"poststop": [{
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo ran > {}", mark.display())],
        }]});
    }
    b.write_spec().unwrap();
    let req = CreateTaskRequest {
        id: id.into(),
        bundle: b.dir.to_string_lossy().into_owned(),
        options: MessageField::some(runc_options(&runc_rs(), root)),
        ..Default::default()
    };
    c.create(ctx(), &req).expect("Create");
    let id_req = |id: &str| StartRequest {
        id: id.into(),
        ..Default::default()
    };
    c.start(ctx(), &id_req(id)).expect("Start");
    let w = c
        .wait(
            ctx(),
            &WaitRequest {
                id: id.into(),
                ..Default::default()
            },
        )
        .expect("Wait");
    (b, w.exit_status)
}

fn delete(c: &TaskClient, id: &str) -> u32 {
    c.delete(
        ctx(),
        &DeleteRequest {
            id: id.into(),
            ..Default::default()
        },
    )
    .expect("Delete")
    .exit_status
}

#[test]
fn runtime_state_goes_at_exit_unless_poststop_hooks_wait_for_delete() {
    if runtime_under_test().is_none() {
        return;
    }
    let cg = CgroupParent::new();
    let ns = format!("shimtest-{}-early", std::process::id());
    let shim = ServedShim::start(&ns);
    let root = shim.dir.path().join("root");
    let state = |id: &str| root.join(&ns).join(id);
    let c = shim.client();

    let (_b, status) = run_to_exit(&c, &cg, &root, "plain", &["sh", "-c", "exit 3"], None);
    assert_eq!(status, 3);
    wait_until(
        "the runtime state of the stopped container to go",
        LONG,
        || !state("plain").exists(),
    );
    assert!(
        cg.dirs().iter().all(|d| !d.join("plain").exists()),
        "cgroup of the stopped container still there"
    );
    let stats = c.stats(
        ctx(),
        &StatsRequest {
            id: "plain".into(),
            ..Default::default()
        },
    );
    assert_eq!(status_code(stats).0, Code::NOT_FOUND);
    let pids = c
        .pids(
            ctx(),
            &PidsRequest {
                id: "plain".into(),
                ..Default::default()
            },
        )
        .expect("Pids of the stopped container");
    assert!(pids.processes.is_empty(), "{:?}", pids.processes);
    assert_eq!(delete(&c, "plain"), 3, "Delete reports the exit");
    assert_eq!(
        status_code(c.pids(
            ctx(),
            &PidsRequest {
                id: "plain".into(),
                ..Default::default()
            }
        ))
        .0,
        Code::NOT_FOUND,
        "deleted"
    );

    // poststop hooks run at Delete, and the state waits for it.
    let mark = shim.dir.path().join("poststop-ran");
    let (_h, status) = run_to_exit(&c, &cg, &root, "hooked", &["true"], Some(&mark));
    assert_eq!(status, 0);
    std::thread::sleep(Duration::from_millis(500));
    assert!(state("hooked").exists(), "state deleted before Delete");
    assert!(!mark.exists(), "poststop hook ran before Delete");
    assert_eq!(delete(&c, "hooked"), 0);
    assert!(mark.exists(), "poststop hook did not run at Delete");
    assert!(!state("hooked").exists());
    assert!(cg.pids().is_empty());
}

#[test]
fn an_init_killed_for_memory_is_an_oom_event() {
    let Some((c, _)) = rust_shim() else { return };
    let events = CtrEvents::start(&c);
    // Three times: the OOM must be read before the early delete removes
    // the cgroup, every time.
    for i in 0..3 {
        let id = format!("oom-init-{i}");
        let out = c
            .run(
                &["--memory-limit", &(32u64 << 20).to_string()],
                &id,
                &["dd", "if=/dev/zero", "of=/dev/null", "bs=96M", "count=1"],
            )
            .unwrap_or_else(|e| panic!("ctr run: {e}"));
        assert_eq!(out.status.code(), Some(137), "{}", describe(&out));
        events.wait_for("/tasks/oom", &id, LONG);
        let exit = events.wait_for("/tasks/exit", &id, LONG);
        assert_eq!(exit["exit_status"], 137);
        // ctr deleted the task (not run -d); the container is left.
        c.ctr_ok(&["container", "rm", &id]);
        assert_clean(&c, &[&id]);
    }
}
