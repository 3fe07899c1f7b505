//! Not a test: times `Manager::apply` of a full resource set and `Manager::stats` on a real
//! container cgroup (one sleeping process in it), N times each (default 1000, `CGROUPS_BENCH_N`),
//! and prints the median (and p10/p90) per operation in microseconds as a markdown table.
//!
//!     cargo bench -p cgroups --bench ops                      # this host
//!     bench/cgroups-ops.sh [--vm]                             # wrapper, also in the v2 VM
//!
//! Needs root. Like the tests it works below its own parent cgroup `/cgroups-test-<pid>-<n>`,
//! which is removed at the end (also on panic, by the guard).

#[path = "../tests/common/mod.rs"]
mod common;

use common::{full_resources_json, resources, TestCg};
use std::process::Command;
use std::time::Instant;

fn time_us(n: usize, mut op: impl FnMut()) -> Vec<f64> {
    let mut v: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            op();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

fn row(name: &str, v: &[f64]) {
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    println!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} |",
        v.len(),
        q(0.5),
        q(0.1),
        q(0.9)
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing to parse.
    let n: usize = std::env::var("CGROUPS_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    let mut t = TestCg::created("bench");
    // The harness logs at debug level for the tests; here logging would be what we measure.
    log::set_max_level(log::LevelFilter::Off);
    let (json, dev) = full_resources_json(&t);
    let res = resources(&json);
    t.mgr.apply(&res).expect("first apply");
    t.spawn_in(Command::new("sleep").arg("3600"));

    let apply = time_us(n, || t.mgr.apply(&res).expect("apply"));
    let stats = time_us(n, || {
        std::hint::black_box(t.mgr.stats().expect("stats"));
    });
    let json_stats = time_us(n, || {
        let s = t.mgr.stats().expect("stats");
        std::hint::black_box(serde_json::to_vec(&s).unwrap());
    });

    println!(
        "\ncgroups crate, {:?} mode, {} (block device for throttling: {dev:?})\n",
        t.mode,
        if t.v2() {
            "devices via eBPF (load + attach + detach per apply)"
        } else {
            "devices via devices.list diff"
        }
    );
    println!("| operation | n | median µs | p10 µs | p90 µs |");
    println!("|---|---|---|---|---|");
    row("apply (full resource set)", &apply);
    row("stats", &stats);
    row("stats + JSON encode", &json_stats);
}
