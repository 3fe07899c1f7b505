//! Rootless: runc-rs run by an unprivileged user (created here with
//! useradd, removed after) on a `spec --rootless` bundle: a user namespace
//! mapping the user's own id (written directly) or a /etc/subuid range
//! (through newuidmap/newgidmap), no cgroup (none is delegated on this
//! host), the state under `$XDG_RUNTIME_DIR/runc-rs` or
//! `/run/user/<uid>/runc-rs`. What the container's processes see is
//! compared with Debian's runc run the same way.
//!
//! Run: `cargo build -p runc-rs && cargo test -p integration-tests --test runc_rs_rootless`

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use integration_tests::runtime::{is_root, runc_rs_bin, wait_for};
use serde_json::{json, Value};

const OBS: &str = r#"
id
cat /proc/self/uid_map /proc/self/gid_map /proc/self/setgroups
grep -E '^(Cap|NoNewPrivs|Seccomp|Uid|Gid|Groups)' /proc/self/status
hostname; echo "cwd $(pwd)"; env | sort; ulimit -n
ls -ln /dev/null | cut -c1-10
mount | grep -E ' on /(proc|dev|sys) ' | sort
"#;

/// A user made for one test: removed, with its processes, on drop.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    /// /run/user/<uid>, when this test made it.
    run_dir: Option<PathBuf>,
}

impl TestUser {
    fn create(tag: &str) -> Option<TestUser> {
        if !is_root() {
            eprintln!("skipping: needs root (to create a user)");
            return None;
        }
        for tool in ["useradd", "userdel", "newuidmap", "newgidmap"] {
            assert!(
                testdata::which(tool).is_some(),
                "{tool} missing (apt-get install passwd uidmap)"
            );
        }
        let name = format!("rrs{tag}{}", std::process::id());
        let st = Command::new("useradd")
            .args(["-M", "-U", "-s", "/bin/sh", &name])
            .status()
            .unwrap();
        assert!(st.success(), "useradd {name}");
        let id = |flag: &str| -> u32 {
            String::from_utf8(
                Command::new("id")
                    .args([flag, &name])
                    .output()
                    .unwrap()
                    .stdout,
            )
            .unwrap()
            .trim()
            .parse()
            .unwrap()
        };
        Some(TestUser {
            uid: id("-u"),
            gid: id("-g"),
            name,
            run_dir: None,
        })
    }

    /// `prog args` as this user, in `dir`, with only PATH (and `env`).
    /// Output goes through files, not pipes: `run -d` leaves a container
    /// holding its stdio.
    fn run(&self, dir: &Path, prog: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let tmp = tempfile::tempfile().unwrap();
        let tmp_err = tempfile::tempfile().unwrap();
        let status = Command::new(prog)
            .args(args)
            .current_dir(dir)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .envs(env.iter().copied())
            .uid(self.uid)
            .gid(self.gid)
            .stdin(Stdio::null())
            .stdout(tmp.try_clone().unwrap())
            .stderr(tmp_err.try_clone().unwrap())
            .status()
            .unwrap();
        let read = |mut f: std::fs::File| {
            use std::io::{Read, Seek};
            let mut v = vec![];
            f.seek(std::io::SeekFrom::Start(0)).unwrap();
            f.read_to_end(&mut v).unwrap();
            v
        };
        Output {
            status,
            stdout: read(tmp),
            stderr: read(tmp_err),
        }
    }

    /// A /etc/subuid (or subgid) range of this user: (start, count).
    fn sub_range(&self, file: &str) -> (u32, u32) {
        let text = std::fs::read_to_string(file).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{}:", self.name)))
            .unwrap_or_else(|| panic!("no {file} range for {}", self.name));
        let f: Vec<&str> = line.split(':').collect();
        (f[1].parse().unwrap(), f[2].parse().unwrap())
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // Every process of the user was started by this test.
        for e in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
                continue;
            };
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let uid = status
                .lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|u| u.parse::<u32>().ok());
            if uid == Some(self.uid) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        if let Some(d) = &self.run_dir {
            let _ = std::fs::remove_dir_all(d);
        }
        let _ = Command::new("userdel").arg(&self.name).status();
    }
}

fn chown_tree(p: &Path, uid: u32, gid: u32) {
    let _ = std::os::unix::fs::lchown(p, Some(uid), Some(gid));
    if p.is_dir() && !p.is_symlink() {
        for e in std::fs::read_dir(p).unwrap().flatten() {
            chown_tree(&e.path(), uid, gid);
        }
    }
}

/// A busybox bundle owned by the user whose config.json is what
/// `runc-rs spec --rootless` printed for that user, with `args`.
fn rootless_bundle(
    user: &TestUser,
    args: &[&str],
    mutate: impl Fn(&mut Value),
) -> (tempfile::TempDir, PathBuf) {
    let tmp = testdata::temp_dir().unwrap();
    let dir = tmp.path().join("bundle");
    testdata::build_rootfs(&dir.join("rootfs")).unwrap();
    chown_tree(tmp.path(), user.uid, user.gid);
    let out = user.run(&dir, &runc_rs_bin(), &["spec", "--rootless"], &[]);
    assert!(
        out.status.success(),
        "spec --rootless: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut spec: Value =
        serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        spec["linux"]["uidMappings"],
        json!([{"containerID": 0, "hostID": user.uid, "size": 1}])
    );
    spec["process"]["terminal"] = json!(false);
    spec["process"]["args"] = json!(args);
    mutate(&mut spec);
    std::fs::write(dir.join("config.json"), spec.to_string()).unwrap();
    chown_tree(tmp.path(), user.uid, user.gid);
    (tmp, dir)
}

/// Runs the OBS view of a `run -d` container under runc and runc-rs, as
/// the user; returns (runc, runc-rs) views.
fn both_views(
    user: &TestUser,
    mutate: &dyn Fn(&mut Value),
    exec_flags: &[&str],
) -> (String, String) {
    let (_tmp, dir) = rootless_bundle(user, &["sleep", "1000"], mutate);
    let xdg = dir.parent().unwrap().join("xdg");
    std::fs::create_dir_all(&xdg).unwrap();
    chown_tree(&xdg, user.uid, user.gid);
    let env = [("XDG_RUNTIME_DIR", xdg.to_str().unwrap())];
    let mut views = vec![];
    for rt in [PathBuf::from("/usr/sbin/runc"), runc_rs_bin()] {
        let id = "rl";
        let out = user.run(&dir, &rt, &["run", "-d", id], &env);
        assert!(
            out.status.success(),
            "{} run -d: {}",
            rt.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut args = vec!["exec"];
        args.extend_from_slice(exec_flags);
        args.extend([id, "sh", "-c", OBS]);
        let out = user.run(&dir, &rt, &args, &env);
        assert!(
            out.status.success(),
            "{} exec: {}",
            rt.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        views.push(String::from_utf8_lossy(&out.stdout).into_owned());
        if rt == runc_rs_bin() {
            // State under $XDG_RUNTIME_DIR/runc-rs, owned by the user; no cgroup made.
            let state = xdg.join("runc-rs").join(id).join("state.json");
            assert!(state.exists(), "{} missing", state.display());
            use std::os::unix::fs::MetadataExt;
            assert_eq!(std::fs::metadata(&state).unwrap().uid(), user.uid);
            assert!(
                testdata::host::cgroup_dirs(id).is_empty(),
                "no cgroup created for a rootless container"
            );
            let ps = user.run(&dir, &rt, &["ps", "--format", "json", id], &env);
            let pids: Vec<i32> = serde_json::from_slice(&ps.stdout).unwrap_or_default();
            assert!(
                !pids.is_empty(),
                "ps of a cgroup-less container: {}",
                String::from_utf8_lossy(&ps.stderr)
            );
        }
        let out = user.run(&dir, &rt, &["kill", id, "KILL"], &env);
        assert!(
            out.status.success(),
            "{} kill: {}",
            rt.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            wait_for(10, || user
                .run(&dir, &rt, &["delete", id], &env)
                .status
                .success()),
            "{} delete",
            rt.display()
        );
    }
    assert!(
        !xdg.join("runc-rs").join("rl").exists(),
        "state dir removed"
    );
    (views[0].clone(), views[1].clone())
}

#[test]
fn rootless_own_id_like_runc() {
    let Some(user) = TestUser::create("a") else {
        return;
    };
    let (runc, rs) = both_views(&user, &|_| {}, &[]);
    assert_eq!(runc, rs, "runc (left) and runc-rs (right)");
    assert!(
        rs.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["0", &user.uid.to_string(), "1"]),
        "own-id map: {rs}"
    );
    assert!(
        rs.contains("deny"),
        "setgroups denied for an own-id map: {rs}"
    );
}

#[test]
fn rootless_subuid_range_through_newuidmap_like_runc() {
    let Some(user) = TestUser::create("b") else {
        return;
    };
    let (su, sc) = user.sub_range("/etc/subuid");
    let (sg, gc) = user.sub_range("/etc/subgid");
    assert!(sc >= 1000 && gc >= 1000, "subordinate ranges too small");
    let (uid, gid) = (user.uid, user.gid);
    let mutate = move |s: &mut Value| {
        s["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": uid, "size": 1}, {"containerID": 1, "hostID": su, "size": sc}]);
        s["linux"]["gidMappings"] = json!([{"containerID": 0, "hostID": gid, "size": 1}, {"containerID": 1, "hostID": sg, "size": gc}]);
    };
    let (runc, rs) = both_views(&user, &mutate, &["--user", "1000:1000"]);
    assert_eq!(runc, rs, "runc (left) and runc-rs (right)");
    assert!(rs.starts_with("uid=1000"), "{rs}");
    assert!(
        rs.contains(&su.to_string()) && rs.contains("allow"),
        "a subuid range, setgroups allowed: {rs}"
    );
}

#[test]
fn rootless_default_root_is_the_users_run_dir() {
    let Some(mut user) = TestUser::create("c") else {
        return;
    };
    let run_user = PathBuf::from(format!("/run/user/{}", user.uid));
    if !run_user.exists() {
        std::fs::create_dir_all(&run_user).unwrap();
        chown_tree(&run_user, user.uid, user.gid);
        user.run_dir = Some(run_user.clone());
    }
    let (_tmp, dir) = rootless_bundle(&user, &["sleep", "1000"], |_| {});
    let rs = runc_rs_bin();
    // No --root and no XDG_RUNTIME_DIR: /run/user/<uid>/runc-rs.
    let out = user.run(&dir, &rs, &["run", "-d", "dflt"], &[]);
    assert!(
        out.status.success(),
        "run -d: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run_user.join("runc-rs/dflt/state.json").exists());
    let list = user.run(&dir, &rs, &["list", "-q"], &[]);
    assert_eq!(String::from_utf8_lossy(&list.stdout), "dflt\n");
    let out = user.run(&dir, &rs, &["delete", "--force", "dflt"], &[]);
    assert!(
        out.status.success(),
        "delete --force: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!run_user.join("runc-rs/dflt").exists());
}
