#!/usr/bin/env bash
# cgroups crate micro-benchmark: Manager::apply of a full resource set and Manager::stats,
# 1,000 times each on a real container cgroup, medians (and p10/p90) in microseconds.
# Then the same operations through runtime CLIs (`runc update`, `runc events --stats`, and
# runc-rs once it has them) on a live container, for comparison.
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

# ---- the same two operations through runtime CLIs, on a live container:
# `update --resources` (a full resource set) and `events --stats`, one
# process per call as a shim would run them. Medians in microseconds.
echo
echo "## runtime CLIs on this host: update + events --stats (${CLI_N:=200} calls each)"
W=$(mktemp -d /tmp/cgroups-ops-XXXXXX)
CGP=cgroups-ops-cli-$$
cleanup() {
    for rt in "${RTS[@]:-}"; do [ -n "$rt" ] && "$rt" --root "$W/root" delete --force bench >/dev/null 2>&1; done
    for d in /sys/fs/cgroup/*/$CGP; do [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null; done
    rm -rf "$W"
}
RTS=()
trap cleanup EXIT
cargo build -q --release -p runc-rs -p testdata
"$CARGO_TARGET_DIR/release/testdata" bundle "$W/b" -- sleep 1000 >/dev/null
jq --arg p "/$CGP/bench" '.linux.cgroupsPath=$p' "$W/b/config.json" > "$W/c.json" && mv "$W/c.json" "$W/b/config.json"
cat > "$W/res.json" <<'JSON'
{"memory": {"limit": 268435456, "reservation": 134217728, "swap": 536870912},
 "cpu": {"shares": 512, "quota": 50000, "period": 100000, "cpus": "0-1", "mems": "0"},
 "pids": {"limit": 100},
 "blockIO": {"weight": 500}}
JSON
median_us() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_calls() { # rt args... -> median µs over CLI_N calls
    local t0 t1
    for _ in $(seq "$CLI_N"); do
        t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N)
        echo $(( (t1 - t0) / 1000 ))
    done | median_us
}
echo "| runtime | update median µs | events --stats median µs |"
echo "|---|---:|---:|"
for rt in "$CARGO_TARGET_DIR/release/runc-rs" "$(command -v runc)"; do
    name=$(basename "$rt")
    if ! "$rt" update --help >/dev/null 2>&1 || ! "$rt" events --help >/dev/null 2>&1; then
        echo "| $name | (no update/events command yet) | |"
        continue
    fi
    RTS+=("$rt")
    "$rt" --root "$W/root" run -d --bundle "$W/b" bench </dev/null >/dev/null 2>&1
    u=$(time_calls "$rt" --root "$W/root" update --resources "$W/res.json" bench)
    e=$(time_calls "$rt" --root "$W/root" events --stats bench)
    echo "| $name | $u | $e |"
    "$rt" --root "$W/root" delete --force bench >/dev/null 2>&1
done
