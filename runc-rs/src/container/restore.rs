//! `restore`: a new container from a criu image and a bundle. As in runc:
//! state dir and cgroup as for `create`, missing mount points made in the
//! rootfs, the rootfs bound to `<state>/criu-root` (criu wants a mount
//! point whose parent is not overmounted), then a RESTORE request to criu
//! running inside the container's cgroup, with the restored tree as our
//! child (rst_sibling) so that the foreground case can wait for it;
//! prestart/createRuntime hooks at criu's setup-namespaces notification
//! and a restored terminal's pty master to `--console-socket`.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

use super::checkpoint::{device_paths, is_bind, DESCRIPTORS};
use super::criu::{self, CriuOpts};
use super::criu_rpc::{self, Notice, Pb};
use super::foreground::Foreground;
use super::{io_err, ContainerError};
use crate::state::{self, ContainerState};
use crate::utils::{proc_stat, rfc3339_nano, secure_join, write_atomic};

#[derive(Debug, Clone, Default)]
pub struct RestoreOpts {
    pub id: String,
    pub bundle: PathBuf,
    pub criu: CriuOpts,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
}

fn bad(msg: impl Into<String>) -> ContainerError {
    ContainerError::Precondition(msg.into())
}

/// Detached: 0 once the container runs again. In the foreground: waits for
/// it (forwarding signals), deletes it and returns its exit code.
pub fn restore(root: &Path, o: &RestoreOpts) -> Result<i32, ContainerError> {
    criu::check_version(&o.criu.criu)?;
    let images = match &o.criu.image_path {
        Some(p) => std::path::absolute(p).map_err(io_err("image path"))?,
        None => std::env::current_dir()
            .map_err(io_err("current directory"))?
            .join("checkpoint"),
    };
    let descriptors: Vec<String> = {
        let path = images.join(DESCRIPTORS);
        let data = std::fs::read(&path).map_err(io_err(format!("open {}", path.display())))?;
        serde_json::from_slice(&data).map_err(|e| bad(format!("{}: {e}", path.display())))?
    };
    let bundle =
        std::path::absolute(&o.bundle).map_err(io_err(format!("bundle {}", o.bundle.display())))?;
    let spec = crate::spec::load(&bundle)?;
    let rootfs = crate::spec::rootfs_path(&spec, &bundle);
    let dir = state::create_dir(root, &o.id)?;
    let linux = spec.linux().clone().unwrap_or_default();
    let mut st = ContainerState {
        id: o.id.clone(),
        pid: 0,
        start_time: 0,
        bundle: bundle.clone(),
        rootfs: rootfs.clone(),
        created: rfc3339_nano(std::time::SystemTime::now()),
        annotations: spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        cgroup: None,
        shared_pid_ns: !linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid),
        hooks: spec.hooks().clone(),
        config: Some(spec.clone()),
        no_new_keyring: false,
    };
    let mut fg = if o.detach {
        None
    } else {
        Some(Foreground::block()?)
    };
    let criu_root = dir.join("criu-root");
    let result = restore_in(root, o, &images, &descriptors, &criu_root, &mut st);
    if criu_root.exists() {
        let _ = umount2(&criu_root, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&criu_root);
    }
    if let Err(e) = result {
        if let Some(cg) = &st.cgroup {
            let _ = cg.kill_all(libc::SIGKILL);
            let _ = cg.delete();
        }
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    match fg.as_mut() {
        None => Ok(0),
        Some(fg) => {
            let code = fg.wait(st.pid, None);
            super::delete::delete(root, &o.id, true)?;
            Ok(code)
        }
    }
}

fn restore_in(
    root: &Path,
    o: &RestoreOpts,
    images: &Path,
    descriptors: &[String],
    criu_root: &Path,
    st: &mut ContainerState,
) -> Result<(), ContainerError> {
    let spec = st.config.clone().expect("set above");
    let cgroups_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned());
    let cg = cgroups::Manager::new(cgroups_path.as_deref(), &o.id)?;
    st.cgroup = Some(cg.clone());
    st.save(root)?;
    cg.create()?;
    cg.apply(&super::create::effective_resources(&spec))?;
    make_mount_points(&st.rootfs, &spec)?;
    std::fs::create_dir(criu_root).map_err(io_err(format!("create {}", criu_root.display())))?;
    mount(
        Some(&st.rootfs),
        criu_root,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|source| ContainerError::Sys {
        what: format!("bind {} to {}", st.rootfs.display(), criu_root.display()),
        source,
    })?;

    let (mut opts, _dirs) = o
        .criu
        .rpc_opts(images, "restore.log", criu_root, &st.annotations)?;
    // The restored tree becomes our child (rst_sibling), which the
    // foreground case waits for.
    opts.flag(6, true).flag(26, true);
    for m in spec.mounts().iter().flatten().filter(|m| is_bind(m)) {
        if let Some(src) = m.source() {
            opts.pair(
                23,
                &m.destination().display().to_string(),
                &src.display().to_string(),
            );
        }
    }
    if spec
        .linux()
        .as_ref()
        .and_then(|l| l.masked_paths().as_ref())
        .is_some_and(|m| !m.is_empty())
    {
        opts.pair(23, "/dev/null", "/dev/null");
    }
    for path in device_paths(&spec) {
        let p = path.display().to_string();
        opts.pair(23, &p, &p);
    }
    // The restored init's stdio pipes are criu's stdio, which is ours (as
    // runc passes it).
    for (fd, d) in descriptors.iter().enumerate().take(3) {
        if d.contains("pipe:") {
            let mut inherit = Pb::default();
            inherit.string(1, d).int(2, fd as i32);
            opts.message(27, &inherit);
        }
    }
    for (controller, path) in cgroup_roots(&cg) {
        let mut root = Pb::default();
        if let Some(c) = controller {
            root.string(1, &c);
        }
        root.string(2, &path);
        opts.message(25, &root);
    }
    let console = match &o.console_socket {
        Some(p) => Some(crate::tty::connect(p)?),
        None => None,
    };
    let hooks = spec.hooks().clone();
    let snapshot = st.clone();
    let mut notified = |n: Notice| -> Result<(), ContainerError> {
        match n.script.as_str() {
            // runc runs these hooks here: the namespaces exist, nothing runs yet.
            "setup-namespaces" => {
                let state = super::hook_state(
                    &ContainerState {
                        pid: n.pid,
                        ..snapshot.clone()
                    },
                    crate::state::Status::Creating,
                );
                let h = hooks.as_ref();
                crate::hooks::run_all("prestart", h.and_then(|h| h.prestart().as_ref()), &state)?;
                crate::hooks::run_all(
                    "createRuntime",
                    h.and_then(|h| h.create_runtime().as_ref()),
                    &state,
                )?;
            }
            // A restored terminal gets a new pty master: it goes to the caller.
            "orphan-pts-master" => {
                let (Some(sock), Some(fd)) = (&console, &n.fd) else {
                    return Err(bad(
                        "the checkpoint has a terminal: restore it with --console-socket",
                    ));
                };
                crate::tty::send_fd(sock.as_raw_fd(), "orphan-pts-master", fd.as_raw_fd())
                    .map_err(|source| ContainerError::Sys {
                        what: "send the pty master to the console socket".into(),
                        source,
                    })?;
            }
            _ => {}
        }
        Ok(())
    };
    let join = cg.clone();
    // criu restores into its own cgroup (relocated by cg_root), so it runs
    // inside the container's from the start.
    let setup: Box<dyn Fn() -> std::io::Result<()> + Send + Sync> = Box::new(move || {
        join.add_pid(0)
            .map_err(|e| std::io::Error::other(e.to_string()))
    });
    let pid = criu_rpc::call(
        &o.criu.criu,
        criu_rpc::RESTORE,
        &opts,
        Some(setup),
        &mut notified,
        &o.criu.log_path(images, "restore.log"),
    )?;
    if pid <= 0 {
        return Err(bad("criu reported no restored pid"));
    }
    st.pid = pid;
    st.start_time = proc_stat(pid).map(|s| s.start_time).unwrap_or(0);
    st.save(root)?;
    if let Some(pf) = &o.pid_file {
        let pf = std::path::absolute(pf).map_err(io_err("pid-file"))?;
        write_atomic(&pf, pid.to_string().as_bytes())?;
    }
    Ok(())
}

/// runc's prepareCriuRestoreMounts: the mount points criu will mount on,
/// except those on a tmpfs of the spec (criu restores tmpfs contents).
fn make_mount_points(rootfs: &Path, spec: &oci_spec::runtime::Spec) -> Result<(), ContainerError> {
    let mounts: Vec<_> = spec.mounts().iter().flatten().collect();
    let tmpfs: Vec<&Path> = mounts
        .iter()
        .filter(|m| m.typ().as_deref() == Some("tmpfs"))
        .map(|m| m.destination().as_path())
        .collect();
    for m in mounts {
        let dest = m.destination();
        if tmpfs.iter().any(|t| dest != *t && dest.starts_with(t))
            || m.typ().as_deref() == Some("cgroup")
        {
            continue;
        }
        let path = secure_join(rootfs, dest)?;
        let file_bind = is_bind(m) && m.source().as_ref().is_some_and(|s| s.is_file());
        let made = if file_bind {
            if let Some(parent) = path.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map(|_| ())
        } else {
            std::fs::create_dir_all(&path)
        };
        // A read-only rootfs that already has the mount point is fine.
        if let Err(e) = made {
            if !path.exists() {
                return Err(ContainerError::Io {
                    what: format!("create mount point {}", path.display()),
                    source: e,
                });
            }
        }
    }
    Ok(())
}

/// `--cgroup-root` values putting the restored tree into the container's
/// cgroup: per v1 hierarchy (`controllers:/path`), and the cgroup2 path as
/// the default (no controller).
fn cgroup_roots(cg: &cgroups::Manager) -> Vec<(Option<String>, String)> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    // (mount point, fs type, super options)
    let mounts: Vec<(PathBuf, String, String)> = info
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let mp = pre.split(' ').nth(4)?;
            let mut p = post.split(' ');
            let fstype = p.next()?.to_owned();
            let opts = p.nth(1).unwrap_or_default().to_owned();
            (fstype == "cgroup" || fstype == "cgroup2").then(|| (PathBuf::from(mp), fstype, opts))
        })
        .collect();
    let mut out = vec![];
    for dir in cg.paths().into_values() {
        let Some((mp, fstype, opts)) = mounts
            .iter()
            .filter(|(mp, _, _)| dir.starts_with(mp))
            .max_by_key(|(mp, _, _)| mp.as_os_str().len())
        else {
            continue;
        };
        let rel = Path::new("/")
            .join(dir.strip_prefix(mp).unwrap_or(&dir))
            .display()
            .to_string();
        let controller = (fstype == "cgroup").then(|| {
            opts.split(',')
                .filter(|o| {
                    !matches!(*o, "rw" | "ro" | "clone_children" | "noprefix" | "xattr")
                        && !o.starts_with("release_agent")
                })
                .collect::<Vec<_>>()
                .join(",")
        });
        let entry = (controller, rel);
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    out
}
