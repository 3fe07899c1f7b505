//! `containerd-shim-runc-v2-rs`: see the library docs.

use std::io::Write;

use anyhow::Context;
use shim_runc_v2::{args, bootstrap, info, server, RUNTIME_NAME};

// One allocator on every libc. musl's (the shim's static build) hands
// memory back to the kernel as soon as a group of small blocks empties:
// per container about 130 mmap/munmap calls, each munmap a TLB shootdown
// across the shim's threads, some 2 ms of CPU. dlmalloc keeps what it got
// (it trims only past 2 MiB free), and the shim's heap is small.
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn run() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let flags = args::parse(&argv)?;
    if flags.version {
        let name = std::env::args()
            .next()
            .and_then(|a| a.rsplit('/').next().map(str::to_owned))
            .unwrap_or_else(|| "containerd-shim-runc-v2-rs".into());
        println!("{name}:");
        println!("  Version:  {}", env!("CARGO_PKG_VERSION"));
        println!("  Runtime:  {RUNTIME_NAME}");
        println!();
        return Ok(());
    }
    if flags.info {
        let data = info::run().context("info")?;
        let mut out = std::io::stdout().lock();
        out.write_all(&data)?;
        out.flush()?;
        return Ok(());
    }
    match flags.action.as_str() {
        "start" => {
            let reply = bootstrap::start(&flags).context("start")?;
            let mut out = std::io::stdout().lock();
            out.write_all(&reply)?;
            out.flush()?;
        }
        "delete" => {
            let data = bootstrap::delete(&flags).context("delete")?;
            let mut out = std::io::stdout().lock();
            out.write_all(&data)?;
            out.flush()?;
        }
        "" => server::serve(server::ServerConfig::from_flags(&flags))?,
        other => anyhow::bail!("unknown action {other:?}"),
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprint!("{RUNTIME_NAME}: {e:#}");
        std::process::exit(1);
    }
}
