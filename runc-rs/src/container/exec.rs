//! `exec`: a new process in a running container, from a process.json
//! (`--process`) or from the container's process overridden by the command
//! line, confined like the container's init (see `process::exec`).

use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Capability, LinuxCapabilities, Process, User};

use super::foreground::{Console, Foreground};
use super::stdio::{host_root_ids, Pipes};
use super::{load, ContainerError};
use crate::process::exec::ExecConfig;
use crate::process::parent;
use crate::state::Status;
use crate::utils::write_atomic;

#[derive(Debug, Clone, Default)]
pub struct ExecOpts {
    pub id: String,
    /// `--process`: a runtime-spec process JSON; the other process flags are then ignored.
    pub process: Option<PathBuf>,
    /// The command and its arguments (without `--process`).
    pub args: Vec<String>,
    pub tty: bool,
    pub console_socket: Option<PathBuf>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub cwd: Option<String>,
    pub env: Vec<String>,
    /// `uid[:gid]`
    pub user: Option<String>,
    pub additional_gids: Vec<i64>,
    pub caps: Vec<String>,
    pub no_new_privs: bool,
    pub apparmor: Option<String>,
    pub process_label: Option<String>,
    pub preserve_fds: i32,
    pub ignore_paused: bool,
    /// `--cgroup`: run in an existing sub-cgroup of the container's (see
    /// [`parse_sub_cgroups`]).
    pub cgroup: Vec<String>,
}

fn bad(msg: impl Into<String>) -> ContainerError {
    ContainerError::Precondition(msg.into())
}

/// Starts the process. Detached: returns 0 once it runs. In the foreground:
/// waits for it, forwarding signals, and returns its exit code.
pub fn exec(root: &Path, opts: &ExecOpts) -> Result<i32, ContainerError> {
    let st = load(root, &opts.id)?;
    match st.status(root) {
        Status::Stopped => return Err(bad("cannot exec in a stopped container")),
        Status::Paused if !opts.ignore_paused => {
            return Err(bad(
                "cannot exec in a paused container (use --ignore-paused to override)",
            ))
        }
        _ => {}
    }
    if opts.process.is_none() && opts.args.is_empty() {
        return Err(bad("process args cannot be empty"));
    }
    let spec = st
        .config
        .clone()
        .ok_or_else(|| bad("the container's state has no spec (created by an older runc-rs?)"))?;
    let base = spec
        .process()
        .clone()
        .ok_or_else(|| bad("the container's spec has no process"))?;
    let process = match &opts.process {
        Some(path) => from_file(path, &base)?,
        None => from_flags(opts, base)?,
    };
    validate(&process)?;
    let sub_cgroups = parse_sub_cgroups(&opts.cgroup)?;
    let terminal = process.terminal().unwrap_or(false);
    check_terminal(opts.detach, terminal, opts.console_socket.is_some())?;
    for i in 0..opts.preserve_fds {
        let fd = 3 + i;
        std::fs::metadata(format!("/proc/self/fd/{fd}")).map_err(|e| {
            bad(format!(
                "unable to stat preserved-fd {i} (of {}): {e}",
                opts.preserve_fds
            ))
        })?;
    }
    let cgroup = exec_cgroup(st.cgroup.as_ref(), &sub_cgroups)?;

    // Signals queue from now on: none is lost between the start of the
    // process and the wait.
    let mut fg = if opts.detach {
        None
    } else {
        Some(Foreground::block()?)
    };
    let ExecStdio {
        console_socket,
        console,
        pipes,
    } = exec_stdio(opts, terminal, &spec)?;
    let cfg = ExecConfig {
        id: st.id.clone(),
        spec: spec.clone(),
        process,
        init_pid: st.pid,
        bundle: st.bundle.clone(),
        annotations: st.annotations.clone(),
        console_socket,
        passed_fds: opts.preserve_fds,
        cgroup,
        no_new_keyring: st.no_new_keyring,
    };
    let launched = launch(&cfg, pipes.as_ref());
    drop(cfg);
    // Started even when the launch failed: what the children wrote is shown.
    let relay = match pipes.map(Pipes::relay).transpose() {
        Ok(r) => r,
        Err(e) => {
            if let Ok(pid) = launched {
                kill_and_reap(pid);
            }
            return Err(e);
        }
    };
    let result = launched.and_then(|pid| after_launch(pid, opts, console, fg.as_mut()));
    if let Some(r) = relay {
        r.finish();
    }
    result
}

/// runc's checkTerminal, word for word.
pub(crate) fn check_terminal(
    detach: bool,
    terminal: bool,
    console_socket: bool,
) -> Result<(), ContainerError> {
    if detach && terminal && !console_socket {
        return Err(bad(
            "cannot allocate tty if runc will detach without setting console socket",
        ));
    }
    if (!detach || !terminal) && console_socket {
        return Err(bad(
            "cannot use console socket if runc will not detach or allocate tty",
        ));
    }
    Ok(())
}

/// Our end of the process's console and our terminal.
type ConsoleEnds = (std::os::unix::net::UnixStream, OwnedFd);

/// The process's stdio, as runc's setupIO chooses it: its pty's master sent
/// to the caller's console socket, or relayed to our terminal through a
/// socket pair of ours; else in the foreground pipes; else (detached) our
/// own stdio, inherited.
#[derive(Default)]
struct ExecStdio {
    /// The process's end of the console socket.
    console_socket: Option<OwnedFd>,
    /// When we relay the pty.
    console: Option<ConsoleEnds>,
    pipes: Option<Pipes>,
}

fn exec_stdio(
    opts: &ExecOpts,
    terminal: bool,
    spec: &oci_spec::runtime::Spec,
) -> Result<ExecStdio, ContainerError> {
    Ok(match (&opts.console_socket, terminal) {
        (Some(path), _) => ExecStdio {
            console_socket: Some(crate::tty::connect(path)?),
            ..Default::default()
        },
        (None, true) => {
            let host = Console::host_terminal()?;
            let (a, b) = std::os::unix::net::UnixStream::pair()
                .map_err(super::io_err("console socketpair"))?;
            ExecStdio {
                console_socket: Some(OwnedFd::from(b)),
                console: Some((a, host)),
                pipes: None,
            }
        }
        (None, false) if opts.detach => ExecStdio::default(),
        (None, false) => {
            let p = Pipes::new()?;
            p.chown(host_root_ids(spec)?)?;
            ExecStdio {
                pipes: Some(p),
                ..Default::default()
            }
        }
    })
}

/// The container's cgroup, or with `--cgroup` the sub-cgroups named. A
/// container without a cgroup (rootless) has no controller to name.
fn exec_cgroup(
    cgroup: Option<&cgroups::Manager>,
    sub: &BTreeMap<String, String>,
) -> Result<Option<cgroups::Manager>, ContainerError> {
    match cgroup {
        _ if sub.is_empty() => Ok(cgroup.cloned()),
        Some(cg) => Ok(Some(cg.sub_cgroup(sub)?)),
        None => match sub.keys().find(|k| !k.is_empty()) {
            Some(c) if !sub.contains_key("") => Err(cgroups::Error::UnknownController {
                controller: c.clone(),
            }
            .into()),
            _ => Ok(None),
        },
    }
}

fn kill_and_reap(pid: i32) {
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
}

/// The exec children, forked with the pipes (if any) as their stdio.
fn launch(cfg: &ExecConfig, pipes: Option<&Pipes>) -> Result<i32, ContainerError> {
    let _installed = pipes.map(Pipes::install).transpose()?;
    Ok(parent::launch_exec(cfg)?.pid)
}

/// The console relay, the pid file, and in the foreground the wait.
fn after_launch(
    pid: i32,
    opts: &ExecOpts,
    console: Option<ConsoleEnds>,
    fg: Option<&mut Foreground>,
) -> Result<i32, ContainerError> {
    let kill_it = || kill_and_reap(pid);
    let mut console = match console
        .map(|(sock, host)| receive_console(&sock, host))
        .transpose()
    {
        Ok(c) => c,
        Err(e) => {
            kill_it();
            return Err(e);
        }
    };
    if let Some(pf) = &opts.pid_file {
        let written = std::path::absolute(pf)
            .map_err(super::io_err("pid-file"))
            .and_then(|pf| write_atomic(&pf, pid.to_string().as_bytes()).map_err(Into::into));
        if let Err(e) = written {
            kill_it();
            return Err(e);
        }
    }
    match fg {
        None => Ok(0),
        Some(fg) => Ok(fg.wait(pid, console.as_mut())),
    }
}

/// The pty master the process sent (before it reported ready: it is
/// queued), relayed to our terminal `host`.
pub(crate) fn receive_console(
    sock: &impl std::os::fd::AsRawFd,
    host: OwnedFd,
) -> Result<Console, ContainerError> {
    match crate::tty::recv_fd(sock.as_raw_fd()) {
        Ok(Some(master)) => Console::new(master, host),
        Ok(None) => Err(bad("the process sent no pty master")),
        Err(source) => Err(ContainerError::Sys {
            what: "receive the pty master".into(),
            source,
        }),
    }
}

/// runc 1.1's `--cgroup` arguments: one PATH (every hierarchy; the form for
/// cgroup v2), or CONTROLLER[,CONTROLLER...]:PATH, repeatable (cgroup v1).
fn parse_sub_cgroups(args: &[String]) -> Result<BTreeMap<String, String>, ContainerError> {
    let mut paths = BTreeMap::new();
    for arg in args {
        let parts: Vec<&str> = arg.splitn(3, ':').collect();
        match parts.as_slice() {
            [path] if args.len() == 1 => {
                paths.insert(String::new(), (*path).to_owned());
            }
            [_] => {
                return Err(bad(format!(
                    "invalid --cgroup argument: {arg} (missing <controller>: prefix)"
                )))
            }
            [controllers, path] => {
                for c in controllers.split(',') {
                    paths.insert(c.to_owned(), (*path).to_owned());
                }
            }
            _ => return Err(bad(format!("invalid --cgroup argument: {arg}"))),
        }
    }
    Ok(paths)
}

/// `--process FILE`: the process as given, with runc 1.1's one fallback:
/// the container's capabilities when it names none. (Its rlimits and
/// AppArmor profile do not carry over: runc 1.1 keeps them per process.)
fn from_file(path: &Path, base: &Process) -> Result<Process, ContainerError> {
    let data = std::fs::read(path).map_err(super::io_err(format!("open {}", path.display())))?;
    let mut v: serde_json::Value =
        serde_json::from_slice(&data).map_err(|e| bad(format!("{}: {e}", path.display())))?;
    let obj = v.as_object_mut().ok_or_else(|| {
        bad(format!(
            "{}: a process must be a JSON object",
            path.display()
        ))
    })?;
    // Go's decoder leaves missing fields at their zero values; oci-spec
    // requires these two.
    obj.entry("user")
        .or_insert_with(|| serde_json::json!({"uid": 0, "gid": 0}));
    obj.entry("cwd").or_insert_with(|| serde_json::json!(""));
    let mut wrapped = serde_json::json!({ "process": v });
    crate::spec::drop_unknown_capabilities(&mut wrapped);
    let v = wrapped["process"].take();
    let mut p: Process = serde_path_to_error::deserialize(v)
        .map_err(|e| bad(format!("{}: {}: {}", path.display(), e.path(), e.inner())))?;
    if p.capabilities().is_none() {
        p.set_capabilities(base.capabilities().clone());
    }
    Ok(p)
}

/// The container's process with the command line's overrides, as runc's
/// getProcess builds it.
fn from_flags(o: &ExecOpts, mut p: Process) -> Result<Process, ContainerError> {
    p.set_args(Some(o.args.clone()));
    if let Some(cwd) = o.cwd.as_deref().filter(|c| !c.is_empty()) {
        p.set_cwd(cwd.into());
    }
    if let Some(a) = o.apparmor.as_deref().filter(|a| !a.is_empty()) {
        p.set_apparmor_profile(Some(a.to_owned()));
    }
    if let Some(l) = o.process_label.as_deref().filter(|l| !l.is_empty()) {
        p.set_selinux_label(Some(l.to_owned()));
    }
    if !o.caps.is_empty() {
        let mut c: LinuxCapabilities = p.capabilities().clone().unwrap_or_default();
        let mut added = vec![];
        let mut unknown = vec![];
        for name in &o.caps {
            match serde_json::from_value::<Capability>(serde_json::json!(name)) {
                Ok(cap) => added.push(cap),
                Err(_) => unknown.push(name.clone()),
            }
        }
        if !unknown.is_empty() {
            log::warn!(
                "ignoring unknown or unavailable capabilities: [{}]",
                unknown.join(" ")
            );
        }
        let add = |set: &Option<oci_spec::runtime::Capabilities>| {
            let mut s = set.clone().unwrap_or_default();
            s.extend(added.iter().copied());
            Some(s)
        };
        c.set_bounding(add(c.bounding()));
        c.set_effective(add(c.effective()));
        c.set_permitted(add(c.permitted()));
        c.set_ambient(add(c.ambient()));
        p.set_capabilities(Some(c));
    }
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(o.env.iter().cloned());
    p.set_env(Some(env));
    p.set_terminal(Some(o.tty));
    if o.no_new_privs {
        p.set_no_new_privileges(Some(true));
    }
    let mut user: User = p.user().clone();
    if let Some(u) = o.user.as_deref().filter(|u| !u.is_empty()) {
        let (uid, gid) = match u.split_once(':') {
            Some((uid, gid)) => (uid, Some(gid)),
            None => (u, None),
        };
        if let Some(gid) = gid {
            user.set_gid(
                atoi(gid).map_err(|e| bad(format!("parsing {gid} as int for gid failed: {e}")))?,
            );
        }
        user.set_uid(
            atoi(uid).map_err(|e| bad(format!("parsing {uid} as int for uid failed: {e}")))?,
        );
    }
    if !o.additional_gids.is_empty() {
        let mut gids = user.additional_gids().clone().unwrap_or_default();
        for &g in &o.additional_gids {
            if g < 0 {
                return Err(bad(format!(
                    "additional-gids must be a positive number {g}"
                )));
            }
            gids.push(g as u32);
        }
        user.set_additional_gids(Some(gids));
    }
    p.set_user(user);
    Ok(p)
}

/// Go's strconv.Atoi, with its error text; the id wraps to 32 bits as in
/// runc's uint32 conversion.
fn atoi(s: &str) -> Result<u32, String> {
    s.parse::<i64>().map(|v| v as u32).map_err(|e| {
        let why = if matches!(
            e.kind(),
            std::num::IntErrorKind::PosOverflow | std::num::IntErrorKind::NegOverflow
        ) {
            "value out of range"
        } else {
            "invalid syntax"
        };
        format!("strconv.Atoi: parsing {s:?}: {why}")
    })
}

/// runc's validateProcessSpec.
fn validate(p: &Process) -> Result<(), ContainerError> {
    if p.cwd().as_os_str().is_empty() {
        return Err(bad("Cwd property must not be empty"));
    }
    if !p.cwd().is_absolute() {
        return Err(bad("Cwd must be an absolute path"));
    }
    if p.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(bad("args must not be empty"));
    }
    if p.selinux_label().as_ref().is_some_and(|l| !l.is_empty())
        && !Path::new("/sys/fs/selinux/enforce").exists()
    {
        return Err(bad(
            "selinux label is specified in config, but selinux is disabled or not supported",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Vec<(String, String)>, String> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        parse_sub_cgroups(&args)
            .map(|m| m.into_iter().collect())
            .map_err(|e| e.to_string())
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn sub_cgroup_arguments_as_runc_1_1_reads_them() {
        assert_eq!(parse(&[]), Ok(vec![]));
        assert_eq!(parse(&["a/b"]), Ok(kv(&[("", "a/b")])));
        assert_eq!(
            parse(&["memory,pids:s", "cpu:/t"]),
            Ok(kv(&[("cpu", "/t"), ("memory", "s"), ("pids", "s")]))
        );
        assert_eq!(
            parse(&["x", "y"]),
            Err("invalid --cgroup argument: x (missing <controller>: prefix)".into())
        );
        assert_eq!(
            parse(&["a:b:c"]),
            Err("invalid --cgroup argument: a:b:c".into())
        );
    }
}
