//! runc-rs: the command line, with runc's subcommands, flags and exit codes.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use runc_rs::container::create::CreateOpts;
use runc_rs::container::list::ListFormat;
use runc_rs::container::{create, delete, kill, list, run, start, state_cmd};
use runc_rs::logging::{self, LogFormat};

#[derive(Parser, Debug)]
#[command(name = "runc-rs", version, about = "A native OCI runtime, CLI-compatible with runc")]
struct Cli {
    /// Root directory for container state.
    #[arg(long, global = false, default_value = "/run/runc-rs")]
    root: PathBuf,
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
    /// Path to criu (accepted for compatibility).
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
    }
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = logging::init(cli.log.as_deref(), cli.log_format, cli.debug) {
        eprintln!("open log file {:?}: {e}", cli.log);
        std::process::exit(1);
    }
    let result = dispatch(&cli);
    // runc reports a failed exec as "exec failed: ..." with status 255, so
    // that callers can tell it from the process's own exit status.
    let (prefix, status) = if matches!(cli.command, Command::Exec(_)) { ("exec failed: ", 255) } else { ("", 1) };
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
    let root = &cli.root;
    let needs_cgroups = matches!(cli.command, Command::Create(_) | Command::Run { .. });
    if cli.systemd_cgroup && needs_cgroups {
        bail!("--systemd-cgroup: the systemd cgroup driver is not supported yet; use the cgroupfs driver");
    }
    match &cli.command {
        Command::Create(a) => {
            create::create(root, &create_opts(a)).with_context(|| format!("runc-rs create {}", a.container_id))?;
        }
        Command::Start { container_id } => {
            start::start(root, container_id).with_context(|| format!("runc-rs start {container_id}"))?;
        }
        Command::Run { create: a, detach, keep: _ } => {
            return run::run(root, &create_opts(a), *detach).with_context(|| format!("runc-rs run {}", a.container_id));
        }
        Command::State { container_id } => {
            println!("{}", state_cmd::state_json(root, container_id)?);
        }
        Command::List { format, quiet } => {
            print!("{}", list::list(root, *format, *quiet));
        }
        Command::Kill { all, container_id, signal } => {
            let sig = runc_rs::utils::parse_signal(signal)?;
            kill::kill(root, container_id, sig, *all)?;
        }
        Command::Delete { force, container_id } => {
            delete::delete(root, container_id, *force)?;
        }
        Command::Spec { bundle, rootless } => {
            let path = bundle.join("config.json");
            if path.exists() {
                bail!("File {} exists. Remove it first", path.display());
            }
            let spec = runc_rs::features::default_spec(*rootless);
            std::fs::write(&path, serde_json::to_string_pretty(&spec)?).with_context(|| format!("write {}", path.display()))?;
        }
        Command::Exec(a) => {
            return Ok(runc_rs::container::exec::exec(root, &exec_opts(a))?);
        }
        Command::Features => {
            println!("{}", serde_json::to_string_pretty(&runc_rs::features::features_json())?);
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
