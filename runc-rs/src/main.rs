//! runc-rs: the command line, with runc's subcommands, flags and exit codes.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand};

use runc_rs::container::create::CreateOpts;
use runc_rs::container::list::ListFormat;
use runc_rs::container::{create, delete, kill, list, run, start, state_cmd};
use runc_rs::logging::{self, LogFormat};

#[derive(Parser, Debug)]
#[command(
    name = "runc-rs",
    version,
    about = "A native OCI runtime, CLI-compatible with runc"
)]
struct Cli {
    /// Root directory for container state (default /run/runc-rs; for a
    /// non-root user $XDG_RUNTIME_DIR/runc-rs or /run/user/<uid>/runc-rs).
    #[arg(long, global = false)]
    root: Option<PathBuf>,
    /// Log file (default: stderr).
    #[arg(long)]
    log: Option<PathBuf>,
    #[arg(long = "log-format", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Enable debug logging.
    #[arg(long)]
    debug: bool,
    /// Use systemd for cgroups (no systemd driver yet: refused).
    #[arg(long = "systemd-cgroup")]
    systemd_cgroup: bool,
    /// Path to criu (checkpoint, restore).
    #[arg(long, default_value = "criu")]
    criu: String,
    /// Rootless mode: true, false or auto (accepted for compatibility).
    #[arg(long, default_value = "auto")]
    rootless: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug)]
struct CreateArgs {
    /// Path to the bundle directory.
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Unix socket that receives the pty master.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// File to write the container's pid to.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Do not use pivot_root (for ramdisk roots).
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long = "no-new-keyring")]
    no_new_keyring: bool,
    /// Pass N more fds (from 3) into the container.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: i32,
    container_id: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a container (it waits for `start`).
    Create(CreateArgs),
    /// Start a created container.
    Start { container_id: String },
    /// Create and start a container.
    Run {
        #[command(flatten)]
        create: CreateArgs,
        /// Detach from the container's process.
        #[arg(short, long)]
        detach: bool,
        /// Keep the container after it exits (accepted; not yet honoured).
        #[arg(long)]
        keep: bool,
    },
    /// Print a container's state as JSON.
    State { container_id: String },
    /// List containers.
    #[command(alias = "ls")]
    List {
        #[arg(short, long, value_enum, default_value = "table")]
        format: ListFormat,
        #[arg(short, long)]
        quiet: bool,
    },
    /// Send a signal to a container's init (or all its processes).
    Kill {
        #[arg(short, long)]
        all: bool,
        container_id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container.
    Delete {
        #[arg(short, long)]
        force: bool,
        container_id: String,
    },
    /// Write a default config.json.
    Spec {
        #[arg(short, long, default_value = ".")]
        bundle: PathBuf,
        #[arg(long)]
        rootless: bool,
    },
    /// Print the features this runtime supports, as JSON.
    Features,
    /// Run a new process inside a container.
    Exec(ExecArgs),
    /// List the processes of a container (`ps` options may follow the id).
    Ps {
        /// table or json
        #[arg(short, long, default_value = "table")]
        format: String,
        container_id: String,
        /// Options for ps(1) (default -ef).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Freeze every process of a container.
    Pause { container_id: String },
    /// Thaw a paused container.
    Resume { container_id: String },
    /// Update a container's resource limits.
    Update(UpdateArgs),
    /// Checkpoint a running container with criu.
    Checkpoint(CheckpointArgs),
    /// Restore a container from a criu checkpoint.
    Restore(RestoreArgs),
    /// Print a container's statistics and OOM events as JSON.
    Events {
        /// How often to print statistics (a Go duration).
        #[arg(long, default_value = "5s")]
        interval: String,
        /// Print the statistics once and exit.
        #[arg(long)]
        stats: bool,
        container_id: String,
    },
}

/// The criu options checkpoint and restore share.
#[derive(clap::Args, Debug)]
struct CriuArgs {
    /// Directory of the criu image files (default ./checkpoint).
    #[arg(long = "image-path")]
    image_path: Option<PathBuf>,
    /// Directory for criu's work files and logs.
    #[arg(long = "work-path")]
    work_path: Option<PathBuf>,
    /// Allow open TCP connections.
    #[arg(long = "tcp-established")]
    tcp_established: bool,
    /// Allow external unix sockets.
    #[arg(long = "ext-unix-sk")]
    ext_unix_sk: bool,
    /// Allow shell jobs.
    #[arg(long = "shell-job")]
    shell_job: bool,
    /// Handle file locks.
    #[arg(long = "file-locks")]
    file_locks: bool,
    /// cgroups mode: soft (default), full or strict.
    #[arg(long = "manage-cgroups-mode")]
    manage_cgroups_mode: Option<String>,
    /// Create a namespace, but do not restore its properties (network).
    #[arg(long = "empty-ns")]
    empty_ns: Vec<String>,
    /// Deduplicate memory images.
    #[arg(long = "auto-dedup")]
    auto_dedup: bool,
    /// Restore memory pages lazily (not supported).
    #[arg(long = "lazy-pages")]
    lazy_pages: bool,
}

#[derive(clap::Args, Debug)]
struct CheckpointArgs {
    #[command(flatten)]
    criu: CriuArgs,
    /// A previous pre-dump, relative to the image path.
    #[arg(long = "parent-path")]
    parent_path: Option<String>,
    /// Leave the container running after the checkpoint.
    #[arg(long = "leave-running")]
    leave_running: bool,
    /// Dump memory only and leave the container running.
    #[arg(long = "pre-dump")]
    pre_dump: bool,
    /// ADDRESS:PORT of a criu page server.
    #[arg(long = "page-server")]
    page_server: Option<String>,
    /// Accepted for compatibility (lazy pages are not supported).
    #[arg(long = "status-fd", default_value_t = -1, allow_negative_numbers = true)]
    status_fd: i32,
    container_id: String,
}

#[derive(clap::Args, Debug)]
struct RestoreArgs {
    #[command(flatten)]
    criu: CriuArgs,
    /// Path to the bundle directory.
    #[arg(short, long, default_value = ".")]
    bundle: PathBuf,
    /// Detach from the container's process.
    #[arg(short, long)]
    detach: bool,
    /// File to write the container's pid to.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// Unix socket that receives a restored terminal's pty master.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Accepted for compatibility.
    #[arg(long = "no-subreaper")]
    no_subreaper: bool,
    /// Accepted for compatibility (criu sets up the root).
    #[arg(long = "no-pivot")]
    no_pivot: bool,
    container_id: String,
}

fn criu_opts(cli: &Cli, a: &CriuArgs) -> Result<runc_rs::container::criu::CriuOpts> {
    if a.lazy_pages {
        bail!("--lazy-pages is not supported by this runtime");
    }
    Ok(runc_rs::container::criu::CriuOpts {
        criu: cli.criu.clone(),
        image_path: a.image_path.clone(),
        work_path: a.work_path.clone(),
        tcp_established: a.tcp_established,
        ext_unix_sk: a.ext_unix_sk,
        shell_job: a.shell_job,
        file_locks: a.file_locks,
        auto_dedup: a.auto_dedup,
        manage_cgroups_mode: a.manage_cgroups_mode.clone(),
        empty_ns: a.empty_ns.clone(),
    })
}

#[derive(clap::Args, Debug)]
struct UpdateArgs {
    /// A linux.resources JSON file, or '-' for stdin; the other flags are then ignored.
    #[arg(short, long)]
    resources: Option<String>,
    #[arg(long = "blkio-weight", allow_hyphen_values = true)]
    blkio_weight: Option<String>,
    #[arg(long = "cpu-period", allow_hyphen_values = true)]
    cpu_period: Option<String>,
    #[arg(long = "cpu-quota", allow_hyphen_values = true)]
    cpu_quota: Option<String>,
    #[arg(long = "cpu-share", allow_hyphen_values = true)]
    cpu_share: Option<String>,
    #[arg(long = "cpu-rt-period", allow_hyphen_values = true)]
    cpu_rt_period: Option<String>,
    #[arg(long = "cpu-rt-runtime", allow_hyphen_values = true)]
    cpu_rt_runtime: Option<String>,
    #[arg(long = "cpuset-cpus")]
    cpuset_cpus: Option<String>,
    #[arg(long = "cpuset-mems")]
    cpuset_mems: Option<String>,
    /// (obsolete; ignored with a warning)
    #[arg(long = "kernel-memory", allow_hyphen_values = true, hide = true)]
    kernel_memory: Option<String>,
    /// (obsolete; ignored with a warning)
    #[arg(long = "kernel-memory-tcp", allow_hyphen_values = true, hide = true)]
    kernel_memory_tcp: Option<String>,
    /// Memory limit (bytes, or with a k/m/g suffix; -1 for none).
    #[arg(long, allow_hyphen_values = true)]
    memory: Option<String>,
    #[arg(long = "memory-reservation", allow_hyphen_values = true)]
    memory_reservation: Option<String>,
    /// Memory + swap limit; -1 for unlimited swap.
    #[arg(long = "memory-swap", allow_hyphen_values = true)]
    memory_swap: Option<String>,
    #[arg(long = "pids-limit", allow_hyphen_values = true)]
    pids_limit: Option<String>,
    #[arg(long = "l3-cache-schema")]
    l3_cache_schema: Option<String>,
    #[arg(long = "mem-bw-schema")]
    mem_bw_schema: Option<String>,
    container_id: String,
}

fn update_opts(a: &UpdateArgs) -> runc_rs::container::update::UpdateOpts {
    runc_rs::container::update::UpdateOpts {
        id: a.container_id.clone(),
        resources: a.resources.clone(),
        blkio_weight: a.blkio_weight.clone(),
        cpu_period: a.cpu_period.clone(),
        cpu_quota: a.cpu_quota.clone(),
        cpu_share: a.cpu_share.clone(),
        cpu_rt_period: a.cpu_rt_period.clone(),
        cpu_rt_runtime: a.cpu_rt_runtime.clone(),
        cpuset_cpus: a.cpuset_cpus.clone(),
        cpuset_mems: a.cpuset_mems.clone(),
        kernel_memory: a.kernel_memory.clone(),
        kernel_memory_tcp: a.kernel_memory_tcp.clone(),
        memory: a.memory.clone(),
        memory_reservation: a.memory_reservation.clone(),
        memory_swap: a.memory_swap.clone(),
        pids_limit: a.pids_limit.clone(),
        l3_cache_schema: a.l3_cache_schema.clone(),
        mem_bw_schema: a.mem_bw_schema.clone(),
    }
}

#[derive(clap::Args, Debug)]
struct ExecArgs {
    /// Unix socket that receives the pty master.
    #[arg(long = "console-socket")]
    console_socket: Option<PathBuf>,
    /// Working directory in the container.
    #[arg(long)]
    cwd: Option<String>,
    /// Set an environment variable (repeatable).
    #[arg(short, long)]
    env: Vec<String>,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    tty: bool,
    /// uid[:gid]
    #[arg(short, long)]
    user: Option<String>,
    /// An additional gid (repeatable).
    #[arg(short = 'g', long = "additional-gids", allow_negative_numbers = true)]
    additional_gids: Vec<i64>,
    /// A process.json; the process flags are then ignored.
    #[arg(short, long)]
    process: Option<PathBuf>,
    /// Detach from the process.
    #[arg(short, long)]
    detach: bool,
    /// File to write the process's pid to.
    #[arg(long = "pid-file")]
    pid_file: Option<PathBuf>,
    /// SELinux label of the process.
    #[arg(long = "process-label")]
    process_label: Option<String>,
    /// AppArmor profile of the process.
    #[arg(long)]
    apparmor: Option<String>,
    /// Set no_new_privs for the process.
    #[arg(long = "no-new-privs")]
    no_new_privs: bool,
    /// Add a capability to the bounding, effective, permitted and ambient sets (repeatable).
    #[arg(short = 'c', long = "cap")]
    cap: Vec<String>,
    /// Pass N more fds (from 3) into the process.
    #[arg(long = "preserve-fds", default_value_t = 0)]
    preserve_fds: i32,
    /// Allow exec in a paused container.
    #[arg(long = "ignore-paused")]
    ignore_paused: bool,
    /// Run the process in an existing sub-cgroup of the container's:
    /// [<controller>[,<controller>...]:]<path> (repeatable with controllers).
    #[arg(long = "cgroup")]
    cgroup: Vec<String>,
    container_id: String,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    command: Vec<String>,
}

fn exec_opts(a: &ExecArgs) -> runc_rs::container::exec::ExecOpts {
    runc_rs::container::exec::ExecOpts {
        id: a.container_id.clone(),
        process: a.process.clone(),
        args: a.command.clone(),
        tty: a.tty,
        console_socket: a.console_socket.clone(),
        detach: a.detach,
        pid_file: a.pid_file.clone(),
        cwd: a.cwd.clone(),
        env: a.env.clone(),
        user: a.user.clone(),
        additional_gids: a.additional_gids.clone(),
        caps: a.cap.clone(),
        no_new_privs: a.no_new_privs,
        apparmor: a.apparmor.clone(),
        process_label: a.process_label.clone(),
        preserve_fds: a.preserve_fds,
        ignore_paused: a.ignore_paused,
        cgroup: a.cgroup.clone(),
    }
}

fn main() {
    // Go-style `-flag` spellings, as runc accepts them (see goflags).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let cli = if runc_rs::goflags::may_need(&args) {
        Cli::parse_from(runc_rs::goflags::normalize(&Cli::command(), args))
    } else {
        Cli::parse_from(args)
    };
    if let Err(e) = logging::init(cli.log.as_deref(), cli.log_format, cli.debug) {
        eprintln!("open log file {:?}: {e}", cli.log);
        std::process::exit(1);
    }
    let result = dispatch(&cli);
    // runc reports a failed exec as "exec failed: ..." with status 255, so
    // that callers can tell it from the process's own exit status.
    let (prefix, status) = if matches!(cli.command, Command::Exec(_)) {
        ("exec failed: ", 255)
    } else {
        ("", 1)
    };
    match result {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let msg = format!("{prefix}{}", error_message(&e));
            log::error!("{msg}");
            // With --log, runc also prints the error so a human sees it.
            let _ = writeln!(std::io::stderr(), "{msg}");
            std::process::exit(status);
        }
    }
}

fn create_opts(a: &CreateArgs) -> CreateOpts {
    CreateOpts {
        id: a.container_id.clone(),
        bundle: a.bundle.clone(),
        console_socket: a.console_socket.clone(),
        pid_file: a.pid_file.clone(),
        no_pivot: a.no_pivot,
        no_new_keyring: a.no_new_keyring,
        preserve_fds: a.preserve_fds,
    }
}

fn dispatch(cli: &Cli) -> Result<i32> {
    let root = &match &cli.root {
        Some(r) => r.clone(),
        None => {
            let r = runc_rs::rootless::default_root();
            if runc_rs::rootless::is_rootless() {
                runc_rs::rootless::prepare_root(&r);
            }
            r
        }
    };
    let needs_cgroups = matches!(
        cli.command,
        Command::Create(_) | Command::Run { .. } | Command::Restore(_)
    );
    if cli.systemd_cgroup && needs_cgroups {
        bail!("--systemd-cgroup: the systemd cgroup driver is not supported yet; use the cgroupfs driver");
    }
    match &cli.command {
        Command::Create(a) => {
            create::create(root, &create_opts(a))
                .with_context(|| format!("runc-rs create {}", a.container_id))?;
        }
        Command::Start { container_id } => {
            start::start(root, container_id)
                .with_context(|| format!("runc-rs start {container_id}"))?;
        }
        Command::Run {
            create: a,
            detach,
            keep: _,
        } => {
            return run::run(root, &create_opts(a), *detach)
                .with_context(|| format!("runc-rs run {}", a.container_id));
        }
        Command::State { container_id } => {
            println!("{}", state_cmd::state_json(root, container_id)?);
        }
        Command::List { format, quiet } => {
            print!("{}", list::list(root, *format, *quiet));
        }
        Command::Kill {
            all,
            container_id,
            signal,
        } => {
            let sig = runc_rs::utils::parse_signal(signal)?;
            kill::kill(root, container_id, sig, *all)?;
        }
        Command::Delete {
            force,
            container_id,
        } => {
            delete::delete(root, container_id, *force)?;
        }
        Command::Spec { bundle, rootless } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("File {} exists. Remove it first", path.display());
            }
            let spec = runc_rs::features::default_spec(*rootless);
            std::fs::write(&path, serde_json::to_string_pretty(&spec)?)
                .with_context(|| format!("write {}", path.display()))?;
        }
        Command::Ps {
            format,
            container_id,
            ps_args,
        } => {
            print!(
                "{}",
                runc_rs::container::ps::ps(root, container_id, format, ps_args)?
            );
        }
        Command::Pause { container_id } => runc_rs::container::pause::pause(root, container_id)?,
        Command::Resume { container_id } => runc_rs::container::pause::resume(root, container_id)?,
        Command::Update(a) => runc_rs::container::update::update(root, &update_opts(a))?,
        Command::Events {
            interval,
            stats,
            container_id,
        } => {
            runc_rs::container::events::events(root, container_id, interval, *stats)?;
        }
        Command::Checkpoint(a) => {
            let o = runc_rs::container::checkpoint::CheckpointOpts {
                id: a.container_id.clone(),
                criu: criu_opts(cli, &a.criu)?,
                leave_running: a.leave_running,
                pre_dump: a.pre_dump,
                parent_path: a.parent_path.clone(),
                page_server: a.page_server.clone(),
            };
            runc_rs::container::checkpoint::checkpoint(root, &o)?;
        }
        Command::Restore(a) => {
            let o = runc_rs::container::restore::RestoreOpts {
                id: a.container_id.clone(),
                bundle: a.bundle.clone(),
                criu: criu_opts(cli, &a.criu)?,
                detach: a.detach,
                pid_file: a.pid_file.clone(),
                console_socket: a.console_socket.clone(),
            };
            return Ok(runc_rs::container::restore::restore(root, &o)?);
        }
        Command::Exec(a) => {
            return Ok(runc_rs::container::exec::exec(root, &exec_opts(a))?);
        }
        Command::Features => {
            println!(
                "{}",
                serde_json::to_string_pretty(&runc_rs::features::features_json())?
            );
        }
    }
    Ok(0)
}

/// The error and its causes joined with ": ", skipping a cause whose text
/// the message already carries (the library errors print their source in
/// their own message, as runc's do).
fn error_message(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}
