//! Error codes of `containerd-shim-runc-v2-rs`, checked on a shim server
//! the test starts itself (`-socket`) with requests ctr cannot express:
//! missing bundle, unmountable rootfs, malformed options, a runtime binary
//! that is not there, unknown and duplicate ids, an exec after the init
//! exited, checkpoints of a stopped or unknown task or with bad options (and
//! one that criu fails: the container runs on). Every bad request gets its ttrpc code and a message naming the
//! culprit, and the shim goes on serving the two containers it holds.
//!
//! Needs root and the built binaries. Run:
//! `cargo test -p integration-tests --test shim_errors`

use std::fs;
use std::path::Path;
use std::time::Duration;

use containerd_shim_protos::api::{
    CheckpointTaskRequest, CreateTaskRequest, DeleteRequest, ExecProcessRequest, KillRequest,
    ShutdownRequest, StartRequest, StateRequest, StatsRequest, Status, WaitRequest,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{CodedOutputStream, MessageField};
use containerd_shim_protos::shim::shim_ttrpc::TaskClient;
use containerd_shim_protos::types::mount::Mount;
use integration_tests::containerd::{runtime_under_test, CgroupParent};
use integration_tests::shim_rs::{ctx, runc_options, runc_rs, status_code, wait_until, ServedShim};
use ttrpc::Code;

const LONG: Duration = Duration::from_secs(20);

/// A bundle (busybox rootfs) running `args`, its cgroup under `cg`.
fn bundle(cg: &CgroupParent, id: &str, args: &[&str]) -> testdata::bundle::Bundle {
    let mut b = testdata::bundle::Bundle::with_args(args).unwrap();
    b.spec["linux"]["cgroupsPath"] = serde_json::json!(cg.child(id));
    b.write_spec().unwrap();
    b
}

fn create_req(id: &str, bundle: &Path, options: Option<Any>) -> CreateTaskRequest {
    CreateTaskRequest {
        id: id.into(),
        bundle: bundle.to_string_lossy().into_owned(),
        options: MessageField::from_option(options),
        ..Default::default()
    }
}

#[test]
fn errors_have_codes_and_the_shim_keeps_serving() {
    if runtime_under_test().is_none() {
        return;
    }
    let cg = CgroupParent::new();
    let mut shim = ServedShim::start(&format!("shimtest-{}-errors", std::process::id()));
    let root = shim.dir.path().join("root");
    let opts = || Some(runc_options(&runc_rs(), &root));
    let c = shim.client();
    let good: Vec<_> = ["good1", "good2"]
        .iter()
        .map(|id| {
            let b = bundle(&cg, id, &["sleep", "300"]);
            let r = c
                .create(ctx(), &create_req(id, &b.dir, opts()))
                .expect("Create");
            assert!(r.pid > 0);
            c.start(
                ctx(),
                &StartRequest {
                    id: (*id).into(),
                    ..Default::default()
                },
            )
            .expect("Start");
            b
        })
        .collect();

    // Missing bundle.
    let (code_, msg) = status_code(c.create(
        ctx(),
        &create_req("x1", Path::new("/nonexistent/bundle"), opts()),
    ));
    assert_eq!(code_, Code::NOT_FOUND, "{msg}");
    assert!(msg.contains("/nonexistent/bundle"), "{msg}");
    // A rootfs mount that cannot be mounted.
    let b = bundle(&cg, "x2", &["true"]);
    let mut req = create_req("x2", &b.dir, opts());
    req.rootfs.push(Mount {
        type_: "nosuchfs".into(),
        source: "none".into(),
        ..Default::default()
    });
    let (code_, msg) = status_code(c.create(ctx(), &req));
    assert_eq!(code_, Code::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("rootfs") && msg.contains("nosuchfs"), "{msg}");
    let mounted = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounted.contains(&b.rootfs().to_string_lossy().into_owned()),
        "rootfs left mounted"
    );
    // Malformed options, options of an unknown type, a config file that is not there.
    let mut bad = Any::new();
    bad.type_url = "containerd.runc.v1.Options".into();
    bad.value = vec![0xff, 0xff, 0xff];
    let (code_, msg) = status_code(c.create(ctx(), &create_req("x3", &b.dir, Some(bad))));
    assert_eq!(code_, Code::INVALID_ARGUMENT, "{msg}");
    let mut other = Any::new();
    other.type_url = "example.com/NotOptions".into();
    let (code_, msg) = status_code(c.create(ctx(), &create_req("x3", &b.dir, Some(other))));
    assert_eq!(code_, Code::INVALID_ARGUMENT, "{msg}");
    let mut cri = Any::new();
    cri.type_url = "runtimeoptions.v1.Options".into();
    let mut os = CodedOutputStream::vec(&mut cri.value);
    os.write_string(2, "/nonexistent/runc.toml").unwrap();
    os.flush().unwrap();
    drop(os);
    let (code_, msg) = status_code(c.create(ctx(), &create_req("x3", &b.dir, Some(cri))));
    assert_eq!(code_, Code::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("/nonexistent/runc.toml"), "{msg}");
    // A runtime binary that does not exist.
    let missing = Some(runc_options(Path::new("/nonexistent/runc"), &root));
    let (code_, msg) = status_code(c.create(ctx(), &create_req("x4", &b.dir, missing)));
    assert_eq!(code_, Code::NOT_FOUND, "{msg}");
    assert!(msg.contains("/nonexistent/runc"), "{msg}");
    // An id in use; ids nobody created.
    let (code_, _) = status_code(c.create(ctx(), &create_req("good1", &good[0].dir, opts())));
    assert_eq!(code_, Code::ALREADY_EXISTS);
    let nope = || "nope".to_owned();
    assert_eq!(
        status_code(c.state(
            ctx(),
            &StateRequest {
                id: nope(),
                ..Default::default()
            }
        ))
        .0,
        Code::NOT_FOUND
    );
    assert_eq!(
        status_code(c.kill(
            ctx(),
            &KillRequest {
                id: nope(),
                signal: 9,
                ..Default::default()
            }
        ))
        .0,
        Code::NOT_FOUND
    );
    assert_eq!(
        status_code(c.delete(
            ctx(),
            &DeleteRequest {
                id: nope(),
                ..Default::default()
            }
        ))
        .0,
        Code::NOT_FOUND
    );
    assert_eq!(
        status_code(c.stats(
            ctx(),
            &StatsRequest {
                id: nope(),
                ..Default::default()
            }
        ))
        .0,
        Code::NOT_FOUND
    );

    // No exec once the init exited.
    let q = bundle(&cg, "quick", &["true"]);
    c.create(ctx(), &create_req("quick", &q.dir, opts()))
        .expect("Create quick");
    c.start(
        ctx(),
        &StartRequest {
            id: "quick".into(),
            ..Default::default()
        },
    )
    .expect("Start quick");
    let w = c
        .wait(
            ctx(),
            &WaitRequest {
                id: "quick".into(),
                ..Default::default()
            },
        )
        .expect("Wait");
    assert_eq!(w.exit_status, 0);
    let mut spec = Any::new();
    spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Process".into();
    spec.value = serde_json::to_vec(&good[0].spec["process"]).unwrap();
    let exec = ExecProcessRequest {
        id: "quick".into(),
        exec_id: "late".into(),
        spec: MessageField::some(spec),
        ..Default::default()
    };
    let refused = match c.exec(ctx(), &exec) {
        Err(e) => status_code::<()>(Err(e)),
        Ok(_) => status_code(c.start(
            ctx(),
            &StartRequest {
                id: "quick".into(),
                exec_id: "late".into(),
                ..Default::default()
            },
        )),
    };
    assert_eq!(refused.0, Code::FAILED_PRECONDITION, "{}", refused.1);
    checkpoint_errors(&c, &good[0].dir);
    c.delete(
        ctx(),
        &DeleteRequest {
            id: "quick".into(),
            ..Default::default()
        },
    )
    .expect("Delete quick");

    // Both good containers are still served.
    for (i, id) in ["good1", "good2"].iter().enumerate() {
        let st = c
            .state(
                ctx(),
                &StateRequest {
                    id: (*id).into(),
                    ..Default::default()
                },
            )
            .expect("State");
        assert_eq!(st.status.enum_value(), Ok(Status::RUNNING), "{id}");
        let stats = c
            .stats(
                ctx(),
                &StatsRequest {
                    id: (*id).into(),
                    ..Default::default()
                },
            )
            .expect("Stats");
        assert!(
            stats.stats.type_url.starts_with("io.containerd.cgroups.v"),
            "{:?}",
            stats.stats.type_url
        );
        c.kill(
            ctx(),
            &KillRequest {
                id: (*id).into(),
                signal: 9,
                ..Default::default()
            },
        )
        .expect("Kill");
        let w = c
            .wait(
                ctx(),
                &WaitRequest {
                    id: (*id).into(),
                    ..Default::default()
                },
            )
            .expect("Wait");
        assert_eq!(w.exit_status, 137);
        c.delete(
            ctx(),
            &DeleteRequest {
                id: (*id).into(),
                ..Default::default()
            },
        )
        .expect("Delete");
        assert!(!good[i].rootfs().join("proc/1").exists());
    }
    assert!(shim.alive());
    c.shutdown(ctx(), &ShutdownRequest::default())
        .expect("Shutdown");
    wait_until("the shim to exit", LONG, || !shim.alive());
}

fn checkpoint(c: &TaskClient, id: &str, path: &str, options: Option<Any>) -> ttrpc::Result<()> {
    let req = CheckpointTaskRequest {
        id: id.into(),
        path: path.into(),
        options: MessageField::from_option(options),
        ..Default::default()
    };
    c.checkpoint(ctx(), &req).map(drop)
}

/// Checkpoint refusals (`quick` has exited, `good1` runs), and a real
/// checkpoint of `good1`: where criu cannot dump (this host's kernel) the
/// error names the kept criu log and the container runs on.
fn checkpoint_errors(c: &TaskClient, good_bundle: &Path) {
    let img = good_bundle.join("checkpoint");
    let img_s = img.to_str().unwrap();
    let (code_, msg) = status_code(checkpoint(c, "quick", img_s, None));
    assert_eq!(code_, Code::FAILED_PRECONDITION, "{msg}");
    assert!(msg.contains("stopped"), "{msg}");
    assert_eq!(
        status_code(checkpoint(c, "nope", img_s, None)).0,
        Code::NOT_FOUND
    );
    let (code_, msg) = status_code(checkpoint(c, "good1", "", None));
    assert_eq!(code_, Code::INVALID_ARGUMENT, "{msg}");
    let mut wrong = Any::new();
    wrong.type_url = "containerd.runc.v1.Options".into();
    let (code_, msg) = status_code(checkpoint(c, "good1", img_s, Some(wrong)));
    assert_eq!(code_, Code::INVALID_ARGUMENT, "{msg}");
    assert!(msg.contains("CheckpointOptions"), "{msg}");
    match checkpoint(c, "good1", img_s, None) {
        Ok(()) => assert!(
            img.join("inventory.img").is_file(),
            "criu images in {img_s}"
        ),
        Err(e) => {
            let msg = format!("{e:?}");
            assert!(msg.contains("criu-dump.log"), "{msg}");
            assert!(
                good_bundle.join("criu-dump.log").is_file(),
                "criu's log kept"
            );
        }
    }
    let st = c
        .state(
            ctx(),
            &StateRequest {
                id: "good1".into(),
                ..Default::default()
            },
        )
        .expect("State");
    assert_eq!(
        st.status.enum_value(),
        Ok(Status::RUNNING),
        "good1 runs on after its checkpoint"
    );
}
