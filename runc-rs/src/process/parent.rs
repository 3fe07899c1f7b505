//! The parent side of `create`.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxIdMapping;

use super::channel::{self, ChildOrChannel, Message};
use super::exec::ExecConfig;
use super::{intermediate, LaunchConfig};
use crate::hooks;

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("fork: {0}")]
    Fork(nix::Error),
    #[error("{0}")]
    Child(String),
    #[error(transparent)]
    Channel(#[from] channel::ChannelError),
    #[error("cgroup: {0}")]
    Cgroup(#[from] cgroups::Error),
    #[error(transparent)]
    IdMap(#[from] crate::rootless::RootlessError),
    #[error(transparent)]
    Hook(#[from] hooks::HookError),
    #[error("container init exited before it was ready")]
    InitDied,
    #[error("seccomp listener {path}: {source}")]
    SeccompListener {
        path: String,
        source: std::io::Error,
    },
}

impl From<ChildOrChannel> for LaunchError {
    fn from(e: ChildOrChannel) -> Self {
        match e {
            ChildOrChannel::Child(m) => LaunchError::Child(m),
            ChildOrChannel::Channel(c) => LaunchError::Channel(c),
        }
    }
}

/// A started init (waiting on exec.fifo), or a started exec process.
pub struct Launched {
    pub pid: i32,
}

/// What the children are to do: create a container, or exec in one.
#[derive(Clone, Copy)]
enum Job<'a> {
    Create(&'a LaunchConfig),
    Exec(&'a ExecConfig),
}

impl Job<'_> {
    fn spec(&self) -> &oci_spec::runtime::Spec {
        match self {
            Job::Create(c) => &c.spec,
            Job::Exec(c) => &c.spec,
        }
    }

    fn cgroup(&self) -> Option<&cgroups::Manager> {
        match self {
            Job::Create(c) => c.cgroup.as_ref(),
            Job::Exec(c) => c.cgroup.as_ref(),
        }
    }
}

/// Runs the whole creation dance. On error every child is killed and
/// reaped; the caller removes the cgroup and state dir.
///
/// The intermediate and init each get their own channel. Sharing one would
/// race: init may report (e.g. `RunCreateRuntimeHooks`) before the
/// intermediate's `InitPid` reaches the parent, and the parent would take
/// init for dead. With two channels the parent reads init's channel only
/// once it knows init's pid; whatever init sent meanwhile waits in the socket.
///
/// `on_init_pid` runs as soon as init exists, while init prepares the
/// rootfs: what the parent does there is off the critical path.
pub fn launch(
    cfg: &LaunchConfig,
    state_json: &dyn Fn(i32) -> Vec<u8>,
    on_init_pid: &mut dyn FnMut(i32),
) -> Result<Launched, LaunchError> {
    launch_job(Job::Create(cfg), state_json, on_init_pid)
}

/// `exec`: the same dance with the exec variants of the children (see
/// [`super::exec`]); returns once the new process is about to execve. Its
/// seccomp listener, if any, is told the container is running, with init's
/// pid, as runc does.
pub fn launch_exec(cfg: &ExecConfig) -> Result<Launched, LaunchError> {
    let state = |_pid: i32| {
        crate::container::state_json(
            &cfg.id,
            crate::state::Status::Running,
            cfg.init_pid,
            &cfg.bundle,
            &cfg.annotations,
        )
    };
    launch_job(Job::Exec(cfg), &state, &mut |_| {})
}

fn launch_job(
    job: Job,
    state_json: &dyn Fn(i32) -> Vec<u8>,
    on_init_pid: &mut dyn FnMut(i32),
) -> Result<Launched, LaunchError> {
    let (parent_end, child_end) = channel::pair()?;
    let (parent_init_end, init_end) = channel::pair()?;
    // Safety: the runtime is single-threaded here; the child only runs
    // async-signal-safe-enough code paths of its own before exec or exit.
    let cgroup = job.cgroup();
    let intermediate_pid =
        match unsafe { super::spawn::fork_into(cgroup.and_then(|c| c.unified_dir())) }
            .map_err(LaunchError::Fork)?
        {
            super::spawn::Forked::Child { in_unified } => {
                drop(parent_end);
                drop(parent_init_end);
                // The child places itself: cheaper than the parent moving it.
                if let Some(cg) = cgroup {
                    if let Err(e) = cg.enter_self(in_unified) {
                        let _ = child_end.send(&Message::Error(format!("join cgroup: {e}")));
                        unsafe { libc::_exit(1) }
                    }
                }
                match job {
                    Job::Create(cfg) => intermediate::run(cfg, child_end, init_end),
                    Job::Exec(cfg) => super::exec::intermediate(cfg, child_end, init_end),
                }
            }
            super::spawn::Forked::Parent(child) => child,
        };
    drop(child_end);
    drop(init_end);
    let mut init_pid: Option<i32> = None;
    let result =
        drive_intermediate(job, &parent_end, intermediate_pid, &mut init_pid).and_then(|pid| {
            on_init_pid(pid);
            drive_init(job, &parent_init_end, pid, state_json)
        });
    if result.is_err() {
        if let Some(p) = init_pid {
            let _ = nix::sys::signal::kill(Pid::from_raw(p), nix::sys::signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(p), None);
        }
        let _ = nix::sys::signal::kill(intermediate_pid, nix::sys::signal::SIGKILL);
        let _ = waitpid(intermediate_pid, None);
    }
    result
}

/// Cgroup placement, id maps, until the intermediate reports init's pid.
fn drive_intermediate(
    job: Job,
    chan: &channel::Channel,
    intermediate_pid: Pid,
    init_pid: &mut Option<i32>,
) -> Result<i32, LaunchError> {
    // The intermediate has placed itself in the cgroup before reading Go.
    chan.send(&Message::Go)?;
    let linux = job.spec().linux().as_ref();
    loop {
        match chan.recv()? {
            Message::UserNsReady => {
                let pid = intermediate_pid.as_raw();
                write_map(
                    pid,
                    "uid_map",
                    linux
                        .and_then(|l| l.uid_mappings().as_deref())
                        .unwrap_or_default(),
                )?;
                write_map(
                    pid,
                    "gid_map",
                    linux
                        .and_then(|l| l.gid_mappings().as_deref())
                        .unwrap_or_default(),
                )?;
                chan.send(&Message::MappingsWritten)?;
            }
            Message::InitPid(pid) => {
                *init_pid = Some(pid);
                let _ = waitpid(intermediate_pid, None);
                return Ok(pid);
            }
            Message::Error(e) => return Err(LaunchError::Child(e)),
            other => {
                return Err(channel::ChannelError::Unexpected {
                    expected: "the intermediate's report",
                    got: other,
                }
                .into())
            }
        }
    }
}

/// Hooks and the seccomp listener on init's requests, until init is ready.
fn drive_init(
    job: Job,
    chan: &channel::Channel,
    pid: i32,
    state_json: &dyn Fn(i32) -> Vec<u8>,
) -> Result<Launched, LaunchError> {
    loop {
        let msg = match chan.recv() {
            Ok(m) => m,
            Err(channel::ChannelError::Eof) => return Err(LaunchError::InitDied),
            Err(e) => return Err(e.into()),
        };
        match msg {
            Message::RunCreateRuntimeHooks => {
                let state = state_json(pid);
                let h = job.spec().hooks().as_ref();
                hooks::run_all("prestart", h.and_then(|h| h.prestart().as_ref()), &state)?;
                hooks::run_all(
                    "createRuntime",
                    h.and_then(|h| h.create_runtime().as_ref()),
                    &state,
                )?;
                chan.send(&Message::HooksDone)?;
            }
            Message::SeccompNotifyFd => {
                let fd = recv_fd(chan.raw())?;
                send_to_listener(job.spec(), fd, &state_json(pid), pid)?;
            }
            Message::Ready => return Ok(Launched { pid }),
            Message::Error(e) => return Err(LaunchError::Child(e)),
            other => {
                return Err(channel::ChannelError::Unexpected {
                    expected: "init's report",
                    got: other,
                }
                .into())
            }
        }
    }
}

/// Directly, or through newuidmap/newgidmap for a rootless runtime.
fn write_map(pid: i32, file: &'static str, maps: &[LinuxIdMapping]) -> Result<(), LaunchError> {
    Ok(crate::rootless::write_map(pid, file, maps)?)
}

fn recv_fd(sock: i32) -> Result<OwnedFd, LaunchError> {
    let io = |e| LaunchError::Channel(channel::ChannelError::Io(e));
    crate::tty::recv_fd(sock)
        .map_err(io)?
        .ok_or(LaunchError::Channel(channel::ChannelError::Eof))
}

/// Hands the seccomp notify fd to the listener named by the spec, with the
/// container process state, as runc does.
fn send_to_listener(
    spec: &oci_spec::runtime::Spec,
    fd: OwnedFd,
    state: &[u8],
    pid: i32,
) -> Result<(), LaunchError> {
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let Some(path) = seccomp.and_then(|s| s.listener_path().as_ref()) else {
        return Ok(());
    };
    let err = |source| LaunchError::SeccompListener {
        path: path.display().to_string(),
        source,
    };
    let sock = std::os::unix::net::UnixStream::connect(path).map_err(err)?;
    let state: serde_json::Value = serde_json::from_slice(state).unwrap_or_default();
    let msg = serde_json::json!({
        "ociVersion": crate::state::OCI_VERSION,
        "fds": ["seccompFd"],
        "pid": pid,
        "metadata": seccomp.and_then(|s| s.listener_metadata().clone()).unwrap_or_default(),
        "state": state,
    });
    crate::tty::send_fd(sock.as_raw_fd(), &msg.to_string(), fd.as_raw_fd())
        .map_err(|e| err(std::io::Error::from(e)))
}
