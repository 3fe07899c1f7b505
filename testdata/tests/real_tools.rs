//! End-to-end proof that the fixtures work with the real tools: runc runs a
//! bundle, a private containerd imports and runs the image archive, podman
//! loads and runs it.
//!
//! Each test skips (passes with a note on stderr) when not root or when the
//! tool is missing, and cleans up in guards that run even on panic: runc
//! state, the containerd daemon (stopped by pid) and its mounts, the podman
//! container and image, and every cgroup created (all under a parent named
//! `runc-rs-testdata-<pid>-<tag>`, which no one else uses).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use serde_json::json;
use testdata::{build_image_archive, host, temp_dir, which, Bundle};

/// True when the test can run; otherwise says why on stderr.
fn require(test: &str, tools: &[&str]) -> bool {
    if !host::is_root() {
        eprintln!("{test}: skipped, needs root");
        return false;
    }
    for t in tools {
        if which(t).is_none() {
            eprintln!("{test}: skipped, {t} not installed");
            return false;
        }
    }
    true
}

struct Ran {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

/// Run `cmd` with output captured to files in `dir`, killed after `secs`.
fn run(cmd: &mut Command, dir: &Path, secs: u64) -> Ran {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let (o, e) = (dir.join(format!("out.{n}")), dir.join(format!("err.{n}")));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&o).unwrap())
        .stderr(File::create(&e).unwrap())
        .spawn()
        .unwrap_or_else(|err| panic!("spawn {cmd:?}: {err}"));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} timed out after {secs}s: {}",
                fs::read_to_string(&e).unwrap()
            );
        }
        sleep(Duration::from_millis(20));
    };
    let ran = Ran {
        status,
        stdout: fs::read_to_string(&o).unwrap(),
        stderr: fs::read_to_string(&e).unwrap(),
    };
    let _ = fs::remove_file(o);
    let _ = fs::remove_file(e);
    ran
}

fn check(what: &str, r: &Ran) {
    assert!(
        r.status.success(),
        "{what}: {}\nstdout: {}\nstderr: {}",
        r.status,
        r.stdout,
        r.stderr
    );
}

/// Removes a cgroup tree on drop (after the runtime is gone).
struct Cgroup(String);
impl Drop for Cgroup {
    fn drop(&mut self) {
        let left = host::remove_cgroup_tree(&self.0);
        if !left.is_empty() {
            eprintln!("could not remove cgroups {left:?}");
        }
    }
}

/// `runc delete --force` on drop, in case the test failed mid-run.
struct RuncContainer<'a> {
    root: &'a Path,
    id: String,
}
impl Drop for RuncContainer<'_> {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(self.root)
            .args(["delete", "--force", &self.id])
            .stderr(Stdio::null())
            .status();
    }
}

fn runc_run(test: &str, args: &[&str], user: Option<(u32, u32)>) -> Ran {
    let cg = Cgroup(host::cgroup_name(test));
    let mut b = Bundle::with_args(args).unwrap();
    b.spec["linux"]["cgroupsPath"] = json!(format!("/{}/c1", cg.0));
    if let Some((uid, gid)) = user {
        b.spec["process"]["user"] = json!({ "uid": uid, "gid": gid });
    }
    b.write_spec().unwrap();
    let state = temp_dir().unwrap();
    let logs = temp_dir().unwrap();
    let ctr = RuncContainer {
        root: state.path(),
        id: format!("{}-{test}", std::process::id()),
    };
    let r = run(
        Command::new("runc")
            .arg("--root")
            .arg(state.path())
            .arg("run")
            .arg("-b")
            .arg(&b.dir)
            .arg(&ctr.id),
        logs.path(),
        60,
    );
    drop(ctr);
    let name = cg.0.clone();
    drop(cg);
    assert!(
        host::cgroup_dirs(&name).is_empty(),
        "cgroup {name} left behind"
    );
    r
}

#[test]
fn runc_runs_bundle() {
    if !require("runc_runs_bundle", &["runc"]) {
        return;
    }
    let r = runc_run("runc", &["echo", "hello"], None);
    check("runc run", &r);
    assert_eq!(r.stdout, "hello\n");
}

#[test]
fn runc_resolves_rootfs_users() {
    if !require("runc_resolves_rootfs_users", &["runc"]) {
        return;
    }
    // `id` inside the container names uid/gid 1000 from the rootfs's
    // /etc/passwd and /etc/group, so those files are where runtimes look.
    let r = runc_run("runc-user", &["id"], Some((1000, 1000)));
    check("runc run id", &r);
    assert!(
        r.stdout.starts_with("uid=1000(user) gid=1000(user)"),
        "{}",
        r.stdout
    );
}

/// A private containerd (own root, state, sockets, opt dir; CRI disabled)
/// that is stopped by pid and cleaned up on drop.
struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    namespace: String,
    run_containerd_existed: bool,
}

impl Containerd {
    fn start(namespace: String) -> Containerd {
        let dir = temp_dir().unwrap();
        let w = dir.path().display().to_string();
        let config = format!(
            "version = 2\n\
             root = \"{w}/root\"\n\
             state = \"{w}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{w}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{w}/containerd.sock.ttrpc\"\n\
             [debug]\n  address = \"{w}/debug.sock\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{w}/opt\"\n"
        );
        fs::write(dir.path().join("config.toml"), config).unwrap();
        let mut c = Containerd {
            run_containerd_existed: Path::new("/run/containerd").exists(),
            child: None,
            namespace,
            dir,
        };
        let log = File::create(c.dir.path().join("containerd.log")).unwrap();
        c.child = Some(
            Command::new("containerd")
                .arg("--config")
                .arg(c.dir.path().join("config.toml"))
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !c.socket().exists() {
            if Instant::now() > deadline {
                panic!("containerd did not start: {}", c.log());
            }
            sleep(Duration::from_millis(50));
        }
        c
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("-a")
            .arg(self.socket())
            .arg("-n")
            .arg(&self.namespace);
        c
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = host::signal(child.id(), "TERM");
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let left = host::unmount_under(self.dir.path());
        if !left.is_empty() {
            eprintln!("still mounted: {left:?}");
        }
        host::remove_cgroup_tree(&self.namespace);
        // The v2 shim always puts its socket under /run/containerd/s; remove
        // the (empty) dirs only if this test created /run/containerd.
        if !self.run_containerd_existed {
            for d in ["s", "fifo", "runc", ""] {
                let _ = fs::remove_dir(Path::new("/run/containerd").join(d));
            }
        }
    }
}

#[test]
fn containerd_imports_and_runs_archive() {
    if !require(
        "containerd_imports_and_runs_archive",
        &["containerd", "ctr", "runc"],
    ) {
        return;
    }
    let ns = host::cgroup_name("ctr");
    let d = Containerd::start(ns.clone());
    let w = d.dir.path().to_path_buf();
    let archive = w.join("img.tar");
    build_image_archive(&archive, "docker.io/library/busybox:latest").unwrap();

    let r = run(d.ctr().args(["images", "import"]).arg(&archive), &w, 120);
    check("ctr images import", &r);
    let r = run(d.ctr().args(["images", "ls", "-q"]), &w, 30);
    check("ctr images ls", &r);
    assert_eq!(r.stdout.trim(), "docker.io/library/busybox:latest");

    let r = run(
        d.ctr()
            .args(["run", "--rm", "--runc-root"])
            .arg(w.join("runc-root"))
            .arg("--fifo-dir")
            .arg(w.join("fifo"))
            .args(["docker.io/library/busybox:latest", "t1", "echo", "hi"]),
        &w,
        120,
    );
    if !r.status.success() {
        eprintln!("containerd log:\n{}", d.log());
    }
    check("ctr run", &r);
    assert_eq!(r.stdout, "hi\n");
    drop(d);
    assert!(host::cgroup_dirs(&ns).is_empty(), "cgroup {ns} left behind");
    assert!(host::mounts_under(&w).is_empty());
    assert!(!w.exists());
}

/// Removes the podman container, image and cgroup parent on drop.
struct Podman {
    image: String,
    container: String,
    cgroup: Cgroup,
}
impl Drop for Podman {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            let _ = Command::new("podman")
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        };
        quiet(&["rm", "--force", "--ignore", &self.container]);
        quiet(&["rmi", &self.image]);
        // `cgroup` is dropped after this, once the container is gone.
    }
}

#[test]
fn podman_loads_and_runs_archive() {
    if !require("podman_loads_and_runs_archive", &["podman", "runc"]) {
        return;
    }
    // A name of our own: `podman rmi` must not untag an image someone else
    // loaded (the shared podman store is global).
    let pid = std::process::id();
    let p = Podman {
        image: format!("localhost/runc-rs-testdata-{pid}:latest"),
        container: format!("runc-rs-testdata-{pid}"),
        cgroup: Cgroup(host::cgroup_name("podman")),
    };
    let tmp = temp_dir().unwrap();
    let archive = tmp.path().join("img.tar");
    build_image_archive(&archive, &p.image).unwrap();

    let r = run(
        Command::new("podman").arg("load").arg("-i").arg(&archive),
        tmp.path(),
        120,
    );
    check("podman load", &r);
    assert!(
        r.stdout.contains(&format!("Loaded image: {}", p.image)),
        "{}",
        r.stdout
    );

    // cgroupfs: this host has no systemd; --cgroup-parent keeps podman's
    // cgroups (container + conmon) under a parent this test removes.
    let r = run(
        Command::new("podman")
            .args([
                "--cgroup-manager",
                "cgroupfs",
                "run",
                "--rm",
                "--network",
                "none",
            ])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .args(["--runtime", "runc", "--cgroup-parent"])
            .arg(format!("/{}", p.cgroup.0))
            .args(["--name", &p.container, &p.image, "echo", "hi"]),
        tmp.path(),
        120,
    );
    check("podman run", &r);
    assert_eq!(r.stdout, "hi\n");

    let r = run(
        Command::new("podman").args(["rmi", &p.image]),
        tmp.path(),
        60,
    );
    check("podman rmi", &r);
    let cg = p.cgroup.0.clone();
    drop(p);
    assert!(host::cgroup_dirs(&cg).is_empty(), "cgroup {cg} left behind");
}
