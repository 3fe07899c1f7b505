#!/usr/bin/env bash
# Shim benchmark: containerd's Go `containerd-shim-runc-v2` against
# `containerd-shim-runc-v2-rs` (release build), both driving runc-rs, under
# one private containerd started by this script.
#
#   1. RSS and PSS (/proc/PID/smaps_rollup) of one shim holding one running
#      container;
#   2. the same summed over 20 running containers, each with its own shim;
#   3. `ctr run --rm ... true` lifecycle, median of RUNS (>= 30) runs per
#      shim, the two shims' runs interleaved one by one;
#   4. wall time of 20 concurrent `ctr run -d` (median of ROUNDS rounds).
#
# Usage: sudo bench/shim.sh            (see bench/README.md)
# Env:   SHIM_RS_BIN   Rust shim; if unset, `cargo build --release -p shim-runc-v2`
#        RUNC_RS_BIN   runc-rs; if unset, $CARGO_TARGET_DIR/release/runc-rs when
#                      it exists, else `cargo build -p runc-rs` (debug)
#        TESTDATA_BIN  testdata binary; if unset, `cargo build -p testdata`
#        RUNS (30), WARMUP (3), ROUNDS (3), N (20), OUT (bench/results)
#
# The Go shim gets runc-rs through ctr's runc options (`--runc-binary`,
# `--runc-root`); the Rust shim through a runtime options file
# (`--runtime-config-path`, BinaryName + Root): the same binary and state
# root for both. Containers go under the cgroup parent /runc-rs-shimbench-<pid>.
#
# Cleanup (trap on EXIT/INT/TERM, also on failure): every task and container
# of the bench namespace, containerd, leftover shims (by pid, found by our
# socket in their command line), their sockets, the cgroup parent, mounts
# under the temp dir, the temp dir.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/runc-rs/target}
RUNS=${RUNS:-30}
WARMUP=${WARMUP:-3}
ROUNDS=${ROUNDS:-3}
N=${N:-20}
OUT=${OUT:-$HERE/results}
CGPARENT=runc-rs-shimbench-$$
NS=shimbench-$$

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root"
[ "$RUNS" -ge 30 ] 2>/dev/null || die "RUNS must be >= 30 (got $RUNS)"
for t in containerd ctr containerd-shim-runc-v2 jq; do
    command -v "$t" >/dev/null || die "$t not found (Debian: containerd jq)"
done

# Shims put their sockets in /run/containerd/s (not configurable in 1.6):
# if this run creates that tree, it removes it again (once empty).
RUN_PREEXISTED=$([ -d /run/containerd ] && echo 1 || true)
W=$(mktemp -d /tmp/runc-rs-shimbench-XXXXXX)
# Runtime state on tmpfs, as containerd's defaults have it (state
# /run/containerd, runc root /run/containerd/runc, ctr's FIFOs
# /run/containerd/fifo); the persistent root (content, snapshots,
# metadata) stays on disk under $W, as /var/lib/containerd would.
RUNDIR=$(mktemp -d /run/runc-rs-shimbench-XXXXXX)
SOCK=$W/containerd.sock
DAEMON=

ctr_() { ctr --address "$SOCK" --namespace "$NS" --connect-timeout 10s "$@"; }

cleanup() {
    local rc=$? id pid a
    set +e
    trap - EXIT INT TERM
    if [ -n "$DAEMON" ] && kill -0 "$DAEMON" 2>/dev/null; then
        for id in $(ctr_ task ls -q 2>/dev/null); do
            ctr_ task kill -s SIGKILL "$id" >/dev/null 2>&1
        done
        sleep 0.5
        for id in $(ctr_ task ls -q 2>/dev/null); do ctr_ task rm -f "$id" >/dev/null 2>&1; done
        for id in $(ctr_ c ls -q 2>/dev/null); do ctr_ c rm "$id" >/dev/null 2>&1; done
        kill "$DAEMON"; wait "$DAEMON" 2>/dev/null
    fi
    # Shim sockets live in /run/containerd/s: only ours, from our bundles.
    for a in "$RUNDIR"/state/io.containerd.runtime.v2.task/*/*/address; do
        [ -f "$a" ] && rm -f "$(sed 's|^unix://||' "$a")"
    done
    for pid in $(pgrep -f -- "-address $SOCK" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null; done
    for d in /sys/fs/cgroup/"$CGPARENT" /sys/fs/cgroup/*/"$CGPARENT"; do
        [ -d "$d" ] || continue
        for pid in $(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null); do kill -KILL "$pid"; done
        sleep 0.2
        find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
        [ -d "$d" ] && log "warning: could not remove cgroup $d"
    done
    for d in "$W" "$RUNDIR"; do
        awk -v w="$d" '$5 == w || index($5, w "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
            while read -r m; do umount -l "$m"; done
    done
    rm -rf "$W" "$RUNDIR"
    [ -n "$RUN_PREEXISTED" ] || rmdir /run/containerd/s /run/containerd/runc /run/containerd 2>/dev/null
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- binaries -----------------------------------------------------------------
if [ -z "${SHIM_RS_BIN:-}" ]; then
    # The shim's own profile (size-optimised, fat LTO), linked statically:
    # one process per container, so its resident pages count per container,
    # and a static binary maps no ld.so / libc.so / libgcc_s. With musl
    # (when its Rust target is installed) the process also skips glibc's
    # start-up CPU probing, which traps to the hypervisor in a VM: the shim
    # is exec'd twice per container (`start`, `delete`).
    # `--target` keeps the RUSTFLAGS away from build scripts and from the
    # other packages' builds in the shared target dir.
    if rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
        SHIM_TARGET=x86_64-unknown-linux-musl
    else
        SHIM_TARGET=x86_64-unknown-linux-gnu
    fi
    log "building containerd-shim-runc-v2-rs (profile release-shim, static, $SHIM_TARGET)"
    (cd "$REPO" && RUSTFLAGS="-C target-feature=+crt-static" cargo build -q --profile release-shim \
        --target "$SHIM_TARGET" -p shim-runc-v2) || die "building the shim failed"
    SHIM_RS_BIN=$CARGO_TARGET_DIR/$SHIM_TARGET/release-shim/containerd-shim-runc-v2-rs
fi
if [ -z "${RUNC_RS_BIN:-}" ]; then
    RUNC_RS_BIN=$CARGO_TARGET_DIR/release/runc-rs
    if [ ! -x "$RUNC_RS_BIN" ]; then
        log "no release runc-rs: building runc-rs (debug)"
        (cd "$REPO" && cargo build -q -p runc-rs) || die "cargo build -p runc-rs failed; set RUNC_RS_BIN"
        RUNC_RS_BIN=$CARGO_TARGET_DIR/debug/runc-rs
    fi
fi
if [ -z "${TESTDATA_BIN:-}" ]; then
    (cd "$REPO" && cargo build -q -p testdata) || die "cargo build -p testdata failed; set TESTDATA_BIN"
    TESTDATA_BIN=$CARGO_TARGET_DIR/debug/testdata
fi
for b in "$SHIM_RS_BIN" "$RUNC_RS_BIN" "$TESTDATA_BIN"; do [ -x "$b" ] || die "$b missing"; done
GO_SHIM=$(command -v containerd-shim-runc-v2)

# --- a private containerd -------------------------------------------------------
mkdir -p "$W"/{root,tmp,bin} "$RUNDIR"/{state,runc,fifo}
ln -s "$(readlink -f "$SHIM_RS_BIN")" "$W/bin/containerd-shim-runc-v2-rs"
cat >"$W/config.toml" <<EOF
version = 2
root = "$W/root"
state = "$RUNDIR/state"
temp = "$W/tmp"
oom_score = 0
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt",
  "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = ""
  level = "warn"
[metrics]
  address = ""
EOF
PATH="$W/bin:$PATH" containerd --config "$W/config.toml" >"$W/containerd.log" 2>&1 &
DAEMON=$!
for _ in $(seq 300); do ctr_ version >/dev/null 2>&1 && break; sleep 0.1; done
ctr_ version >/dev/null 2>&1 || die "containerd did not start: $(tail -5 "$W/containerd.log")"
IMAGE=localhost/runc-rs-shimbench/busybox:$$
"$TESTDATA_BIN" image "$W/busybox.tar" "$IMAGE" >/dev/null
ctr_ images import "$W/busybox.tar" >/dev/null
printf 'BinaryName = "%s"\nRoot = "%s"\n' "$RUNC_RS_BIN" "$RUNDIR/runc" >"$W/rs.toml"

# run_args SHIM: the ctr run flags selecting SHIM (go|rs) driving runc-rs.
run_args() {
    case $1 in
    go) echo "--runtime io.containerd.runc.v2 --runc-binary $RUNC_RS_BIN --runc-root $RUNDIR/runc" ;;
    rs) echo "--runtime io.containerd.runc.v2-rs --runtime-config-path $W/rs.toml" ;;
    esac
}
# Computed once: a command substitution inside the timed runs would fork.
declare -A RUN_ARGS=([go]="$(run_args go)" [rs]="$(run_args rs)")
# run SHIM ID FLAGS... -- CMD...: ctr run with the bench's image and cgroup.
run() {
    local shim=$1 id=$2; shift 2
    local flags=()
    while [ "$1" != -- ]; do flags+=("$1"); shift; done
    shift
    # shellcheck disable=SC2046
    ctr_ run "${flags[@]}" ${RUN_ARGS[$shim]} --fifo-dir "$RUNDIR/fifo" \
        --cgroup "/$CGPARENT/$id" "$IMAGE" "$id" "$@"
}
remove_all() {
    local id
    for id in $(ctr_ task ls -q); do ctr_ task kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_ task ls -q); do
        for _ in $(seq 100); do
            ctr_ task ls | awk -v i="$id" '$1 == i { print $3 }' | grep -q STOPPED && break
            sleep 0.05
        done
        ctr_ task rm "$id" >/dev/null 2>&1
    done
    for id in $(ctr_ c ls -q); do ctr_ c rm "$id" >/dev/null; done
}
shim_of() { # task id -> its shim's pid
    local pid
    pid=$(ctr_ task ls | awk -v i="$1" '$1 == i { print $2 }')
    awk '{ print $4 }' "/proc/$pid/stat"
}
rollup() { # pid field -> KiB
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/smaps_rollup"
}
# The median of the numbers on stdin and a 95 % interval for it,
# distribution-free: the order statistics at n/2 -+ 0.98 sqrt(n) (the
# binomial bound), so that "at most 0.70" can be read off one run.
median_ci() {
    sort -n | awk '{ a[NR] = $1 }
        END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
              h = 0.98 * sqrt(NR); lo = int(NR / 2 - h); hi = int(NR / 2 + h + 1)
              if (lo < 1) lo = 1; if (hi > NR) hi = NR
              print m, a[lo], a[hi] }'
}
median() { median_ci | awk '{ print $1 }'; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

declare -A R=()
for shim in go rs; do
    log "$shim: one shim, one running container"
    run "$shim" one-$shim -d -- sleep 600 >/dev/null
    sleep 2   # let the shim settle (the Go runtime frees memory periodically)
    p=$(shim_of one-$shim)
    R[$shim.rss1]=$(rollup "$p" Rss)
    R[$shim.pss1]=$(rollup "$p" Pss)
    remove_all

    log "$shim: $N running containers, one shim each"
    for i in $(seq "$N"); do run "$shim" many-$shim-$i -d -- sleep 600 >/dev/null; done
    sleep 2
    rss=0 pss=0
    for p in $(for i in $(seq "$N"); do shim_of many-$shim-$i; done | sort -u); do
        rss=$((rss + $(rollup "$p" Rss))); pss=$((pss + $(rollup "$p" Pss)))
    done
    R[$shim.rssN]=$rss R[$shim.pssN]=$pss
    remove_all

    log "$shim: $N concurrent starts, $ROUNDS rounds"
    R[$shim.par]=$(for r in $(seq "$ROUNDS"); do
        t=$(now_ms)
        for i in $(seq "$N"); do run "$shim" par-$shim-$r-$i -d -- sleep 600 >/dev/null & done
        wait
        echo $(($(now_ms) - t))
        remove_all
    done | median)
done

# The lifecycle, interleaved run by run (Go then Rust, then Rust then Go,
# ...): a machine whose speed drifts, as a VM's does, weighs on both
# shims alike. The median of each shim's RUNS runs, and the median of the
# per-pair ratios.
log "ctr run --rm lifecycle: $RUNS runs per shim, interleaved"
for shim in go rs; do
    # One run in the open first: a failure shows its error.
    run "$shim" lc-$shim --rm -- true || die "$shim: ctr run --rm failed"
    for i in $(seq "$WARMUP"); do run "$shim" lc-$shim --rm -- true; done
    : >"$W/lc-$shim.times"
done
for i in $(seq "$RUNS"); do
    if [ $((i % 2)) = 1 ]; then order="go rs"; else order="rs go"; fi
    for shim in $order; do
        # bash's clock, read without a fork: what is timed is ctr's run.
        t=${EPOCHREALTIME//[.,]/}
        run "$shim" lc-$shim --rm -- true
        e=${EPOCHREALTIME//[.,]/}
        printf '%d.%03d\n' $(((e - t) / 1000)) $(((e - t) % 1000)) >>"$W/lc-$shim.times"
    done
done
for shim in go rs; do
    R[$shim.lc]=$(median <"$W/lc-$shim.times" | awk '{ printf "%.1f", $1 }')
done
R[pair.lc]=$(paste "$W/lc-rs.times" "$W/lc-go.times" | awk '{ print $1 / $2 }' | median_ci |
    awk '{ printf "%.3f [%.3f, %.3f]", $1, $2, $3 }')

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
row() { printf '| %s | %s | %s | %s |\n' "$1" "${R[go.$2]}" "${R[rs.$2]}" "$(ratio "${R[rs.$2]}" "${R[go.$2]}")"; }
mkdir -p "$OUT"
{
    echo "| metric | Go shim | Rust shim | Rust / Go |"
    echo "|---|---:|---:|---:|"
    row "RSS, one shim + 1 container (KiB)" rss1
    row "PSS, one shim + 1 container (KiB)" pss1
    row "RSS, $N shims + $N containers (KiB)" rssN
    row "PSS, $N shims + $N containers (KiB)" pssN
    row "\`ctr run --rm true\` median (ms, $RUNS runs)" lc
    echo "| \`ctr run --rm true\`, median of the $RUNS paired ratios [95 % interval] | | | ${R[pair.lc]} |"
    row "$N concurrent \`ctr run -d\` wall (ms, median of $ROUNDS)" par
    echo
    echo "Both shims drive runc-rs ($RUNC_RS_BIN); Go shim: $GO_SHIM ($(containerd --version | awk '{ print $3 }'));"
    echo "Rust shim: $SHIM_RS_BIN ($(file -b "$(readlink -f "$SHIM_RS_BIN")" | cut -d, -f1-2 | sed 's/ELF 64-bit LSB //'))."
    echo "Goals: <= 3072 KiB RSS per Rust shim; lifecycle <= 0.70 x the Go shim's."
} | tee "$OUT/shim-summary.md"
