//! `create`: everything up to init blocking on exec.fifo.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxNamespaceType,
    LinuxResources, Spec,
};

use super::{hook_state, io_err, ContainerError};
use crate::process::{parent, LaunchConfig};
use crate::state::{self, ContainerState, Status};
use crate::utils::{proc_stat, rfc3339_nano, Staged};

#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    pub id: String,
    pub bundle: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: i32,
}

pub fn create(root: &Path, opts: &CreateOpts) -> Result<ContainerState, ContainerError> {
    let bundle = std::path::absolute(&opts.bundle)
        .map_err(io_err(format!("bundle {}", opts.bundle.display())))?;
    let spec = crate::spec::load(&bundle)?;
    let rootfs = crate::spec::rootfs_path(&spec, &bundle);
    if !rootfs.is_dir() {
        return Err(ContainerError::Precondition(format!(
            "root.path: rootfs {} does not exist or is not a directory",
            rootfs.display()
        )));
    }
    let dir = state::create_dir(root, &opts.id)?;
    let mut st = ContainerState {
        id: opts.id.clone(),
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
        shared_pid_ns: !has_new_ns(&spec, LinuxNamespaceType::Pid),
        hooks: spec.hooks().clone(),
        config: Some(spec.clone()),
        no_new_keyring: opts.no_new_keyring,
    };
    match create_in(root, &dir, opts, spec, &mut st) {
        Ok(()) => Ok(st),
        Err(e) => {
            // As runc destroys a container whose creation failed: kill what
            // runs, remove the cgroup and state, then run poststop hooks.
            if st.pid > 0 {
                // init is our child (CLONE_PARENT): kill and reap it.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(st.pid),
                    nix::sys::signal::SIGKILL,
                );
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(st.pid), None);
            }
            if let Some(cg) = &st.cgroup {
                let _ = cg.kill_all(libc::SIGKILL);
                let _ = cg.delete();
            }
            let _ = std::fs::remove_dir_all(&dir);
            super::delete::run_poststop(&st);
            Err(e)
        }
    }
}

fn has_new_ns(spec: &Spec, t: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .into_iter()
        .flatten()
        .any(|n| n.typ() == t)
}

fn create_in(
    root: &Path,
    dir: &Path,
    opts: &CreateOpts,
    spec: Spec,
    st: &mut ContainerState,
) -> Result<(), ContainerError> {
    let linux = spec.linux().clone().unwrap_or_default();
    let cgroups_path = linux
        .cgroups_path()
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned());
    let cg = cgroups::Manager::new(cgroups_path.as_deref(), &opts.id)?;
    st.cgroup = Some(cg.clone());
    setup_cgroup(root, st, &spec, cgroups_path.as_deref())?;
    let fifo = open_exec_fifo(dir, &spec)?;
    let console_socket = match &opts.console_socket {
        Some(p) => Some(crate::tty::connect(p)?),
        None => None,
    };
    let (listen_fds, extra_env) = listen_fds();
    let cfg = LaunchConfig {
        id: opts.id.clone(),
        spec,
        bundle: st.bundle.clone(),
        rootfs: st.rootfs.clone(),
        state_dir: dir.to_owned(),
        no_pivot: opts.no_pivot,
        no_new_keyring: opts.no_new_keyring,
        console_socket,
        fifo,
        passed_fds: opts.preserve_fds + listen_fds,
        cgroup: st.cgroup.clone(),
        // The manager knows the mode already: no statfs again.
        cgroup_unified: cg.mode() == cgroups::CgroupMode::Unified,
        cgroup_dirs: st
            .cgroup
            .as_ref()
            .map(|c| c.paths().into_iter().collect())
            .unwrap_or_default(),
        extra_env,
    };
    let snapshot = st.clone();
    let pid_file = opts
        .pid_file
        .as_deref()
        .map(std::path::absolute)
        .transpose()
        .map_err(io_err("pid-file"))?;
    // Written while init sets up, put in place once it is ready.
    let mut staged = None;
    log::debug!("create: launching init");
    let launched = parent::launch(
        &cfg,
        &|pid| {
            let mut s = snapshot.clone();
            s.pid = pid;
            hook_state(&s, Status::Creating)
        },
        &mut |pid| staged = Some(stage_records(root, &snapshot, pid, pid_file.as_deref())),
    )?;
    // Set before anything can fail: `create` kills the init of a failed create.
    st.pid = launched.pid;
    let records = staged.expect("init's pid was reported")?;
    st.start_time = records.start_time;
    records.state.commit()?;
    // runc 1.1 runs poststart hooks here, at the end of `create` (its
    // container.Start), not at `start`: they see the status "created", and
    // their failure fails `create`.
    let poststart = st.hooks.as_ref().and_then(|h| h.poststart().clone());
    crate::hooks::run_all(
        "poststart",
        poststart.as_ref(),
        &hook_state(st, Status::Created),
    )?;
    if let Some(pf) = records.pid_file {
        pf.commit()?;
    }
    Ok(())
}

/// Records the state, then creates the cgroup. The state comes first: a
/// crash from there on still leaves `delete --force` enough to remove the
/// cgroup. Rootless, as runc: a cgroup the user may not create is skipped
/// when nothing asked for one (see rootless::skip_cgroup).
fn setup_cgroup(
    root: &Path,
    st: &mut ContainerState,
    spec: &Spec,
    cgroups_path: Option<&str>,
) -> Result<(), ContainerError> {
    st.save(root)?;
    let Some(cg) = st.cgroup.clone() else {
        return Ok(());
    };
    log::debug!("create: creating cgroup");
    match cg.create() {
        Err(e) if crate::rootless::skip_cgroup(&e, cgroups_path, spec) => {
            log::debug!("rootless: running without a cgroup: {e}");
            st.cgroup = None;
            Ok(st.save(root)?)
        }
        created => {
            created?;
            Ok(cg.apply(&effective_resources(spec))?)
        }
    }
}

/// Makes exec.fifo and opens it O_PATH for init (which reopens it for writing).
fn open_exec_fifo(dir: &Path, spec: &Spec) -> Result<OwnedFd, ContainerError> {
    let fifo_path = dir.join(state::EXEC_FIFO);
    make_exec_fifo(&fifo_path, spec)?;
    nix::fcntl::open(
        &fifo_path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map(|fd| unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) })
    .map_err(|source| ContainerError::Sys {
        what: format!("open {}", fifo_path.display()),
        source,
    })
}

/// The records `create` leaves once init is ready: state.json with init's
/// pid and start time, and the pid file.
struct Records {
    state: Staged,
    pid_file: Option<Staged>,
    start_time: u64,
}

/// Stages the [`Records`] as soon as init exists (its start time is fixed
/// from then on), while init prepares the rootfs.
fn stage_records(
    root: &Path,
    snapshot: &ContainerState,
    pid: i32,
    pid_file: Option<&Path>,
) -> Result<Records, ContainerError> {
    let mut s = snapshot.clone();
    s.pid = pid;
    s.start_time = proc_stat(pid).map(|p| p.start_time).unwrap_or(0);
    let state = s.stage(root)?;
    let pid_file = match pid_file {
        Some(p) => Some(Staged::write(p, pid.to_string().as_bytes())?),
        None => None,
    };
    Ok(Records {
        state,
        pid_file,
        start_time: s.start_time,
    })
}

/// exec.fifo, writable by the container's root whoever it is, as runc makes
/// it: mode 0622 whatever our umask (init, possibly no longer root or in a
/// user namespace, reopens it for writing), owned by the host uid/gid that
/// the container's root maps to.
fn make_exec_fifo(path: &Path, spec: &Spec) -> Result<(), ContainerError> {
    use nix::sys::stat::{umask, Mode};
    let old = umask(Mode::empty());
    let res = nix::unistd::mkfifo(path, Mode::from_bits_truncate(0o622));
    umask(old);
    res.map_err(|source| ContainerError::Sys {
        what: format!("mkfifo {}", path.display()),
        source,
    })?;
    let linux = spec.linux().as_ref();
    let root_of = |maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.into_iter()
            .flatten()
            .find(|m| m.container_id() == 0)
            .map(|m| m.host_id())
            .unwrap_or(0)
    };
    let uid = root_of(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gid = root_of(linux.and_then(|l| l.gid_mappings().as_ref()));
    if uid != 0 || gid != 0 {
        nix::unistd::chown(path, Some(uid.into()), Some(gid.into())).map_err(|source| {
            ContainerError::Sys {
                what: format!("chown {}", path.display()),
                source,
            }
        })?;
    }
    Ok(())
}

/// systemd socket activation: LISTEN_FDS fds pass through, with LISTEN_PID=1.
fn listen_fds() -> (i32, Vec<String>) {
    match std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        Some(n) if n > 0 => (
            n,
            vec![format!("LISTEN_FDS={n}"), "LISTEN_PID=1".to_owned()],
        ),
        _ => (0, vec![]),
    }
}

fn rule(
    typ: LinuxDeviceType,
    major: Option<i64>,
    minor: Option<i64>,
    access: &str,
) -> LinuxDeviceCgroup {
    let mut b = LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(typ)
        .access(access.to_owned());
    if let Some(m) = major {
        b = b.major(m);
    }
    if let Some(m) = minor {
        b = b.minor(m);
    }
    b.build().expect("device rule")
}

/// The spec's resources plus the device rules runc 1.1 appends after them:
/// mknod of anything, the default nodes, ptys and /dev/net/tun. The nodes of
/// `linux.devices` get no rule of their own (only `linux.resources.devices`
/// grants access), and a default node whose path `linux.devices` redefines
/// loses its default rule, as in runc's specconv.
pub(crate) fn effective_resources(spec: &Spec) -> LinuxResources {
    let linux = spec.linux().clone().unwrap_or_default();
    let mut res = linux.resources().clone().unwrap_or_default();
    let mut rules: Vec<LinuxDeviceCgroup> = res.devices().clone().unwrap_or_default();
    let redefined = |path: &str| {
        linux
            .devices()
            .iter()
            .flatten()
            .any(|d| d.path() == Path::new(path))
    };
    use LinuxDeviceType::{B, C};
    rules.push(rule(C, None, None, "m"));
    rules.push(rule(B, None, None, "m"));
    for node in crate::rootfs::devices::default_nodes() {
        if !redefined(&node.path.to_string_lossy()) {
            rules.push(rule(
                C,
                Some(node.major as i64),
                Some(node.minor as i64),
                "rwm",
            ));
        }
    }
    rules.push(rule(C, Some(136), None, "rwm"));
    rules.push(rule(C, Some(5), Some(2), "rwm"));
    rules.push(rule(C, Some(10), Some(200), "rwm"));
    res.set_devices(Some(rules));
    res
}
