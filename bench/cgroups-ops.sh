#!/usr/bin/env bash
# cgroups crate micro-benchmark: Manager::apply of a full resource set and Manager::stats,
# 1,000 times each on a real container cgroup, medians (and p10/p90) in microseconds.
# Only our crate is timed; a runc comparison (`runc update`, `runc events --stats`) is a
# separate job.
#
# Usage: sudo bench/cgroups-ops.sh          this host (hybrid/legacy: the v1 paths)
#        sudo bench/cgroups-ops.sh --vm     this host, then the pure cgroup v2 VM
#                                           (../shared/cgroup2-vm; eBPF device program)
# Env:   CGROUPS_BENCH_N    iterations per operation (default 1000)
#        CARGO_TARGET_DIR   (default /var/cache/runc-rs/target)
#
# The work is cgroups/benches/ops.rs (`cargo bench -p cgroups --bench ops`, release build).
# It creates its own parent cgroup /cgroups-test-<pid>-<n> with one container cgroup and one
# sleeping process below it, and removes both when done (also when it fails).
# In the VM every program start costs ~60 ms and CPU work is 10-15x slower (software
# emulation): compare VM numbers with VM numbers only.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/runc-rs/target}
export CGROUPS_BENCH_N=${CGROUPS_BENCH_N:-1000}
VM=$REPO/../shared/cgroup2-vm/run-in-cgroup2-vm.sh

[ "$(id -u)" = 0 ] || { echo "cgroups-ops: must run as root" >&2; exit 1; }
cd "$REPO"

echo "## host ($(uname -r))"
cargo bench -q -p cgroups --bench ops

if [ "${1:-}" = "--vm" ]; then
    [ -x "$VM" ] || { echo "cgroups-ops: $VM not found" >&2; exit 1; }
    echo
    echo "## pure cgroup v2 guest"
    VM_ENV="PATH CGROUPS_BENCH_N" CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$VM --" \
        cargo bench -q -p cgroups --bench ops
fi
