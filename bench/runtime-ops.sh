#!/usr/bin/env bash
# Operations on a running container: `exec` of `true` (foreground, waits for
# it) and `pause` + `resume`, timed with hyperfine for runc-rs, crun and runc
# in one run, medians and ratio to crun in a markdown table.
#
# Usage: sudo bench/runtime-ops.sh               (see bench/README.md)
# Env:   RUNC_RS_BIN  runc-rs binary; if unset, `cargo build --release -p runc-rs`
#                     and use $CARGO_TARGET_DIR/release/runc-rs
#        RUNC_BIN, CRUN_BIN   other runtimes (default: from PATH)
#        TESTDATA_BIN testdata binary; if unset, `cargo build -p testdata`
#        RUNS (30), WARMUP (3), OUT (bench/results)
#
# Fairness: as in runtime-lifecycle.sh, every command of every runtime runs
# through the same wrapper: a private mount namespace (`unshare -m`) in
# which, on a hybrid cgroup host, /sys/fs/cgroup/unified is lazily
# unmounted (crun 1.8 refuses hybrid mode), so all three see a pure cgroup
# v1 host. Each runtime gets its own long-running busybox container
# (`sleep`), started once through the wrapper before timing.
#
# Cleanup (trap on EXIT/INT/TERM, also on failure): force-delete the
# containers in the bench's --root dirs, rmdir the bench-owned cgroup parent
# /runc-rs-bench-ops-<pid> in every hierarchy, remove the temp dir.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/runc-rs/target}
RUNS=${RUNS:-30}
WARMUP=${WARMUP:-3}
OUT=${OUT:-$HERE/results}
CGPARENT=runc-rs-bench-ops-$$

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (runtimes create namespaces and cgroups)"
[ "$RUNS" -ge 30 ] 2>/dev/null || die "RUNS must be >= 30 (got $RUNS)"
for t in hyperfine jq unshare umount; do
    command -v "$t" >/dev/null || die "$t not found (Debian: hyperfine jq util-linux mount)"
done

W=$(mktemp -d /tmp/runc-rs-bench-ops-XXXXXX)
declare -A RT=()        # name -> binary, for the runtimes whose container runs
ORDER=()
SKIPPED=()

# Long steps run in the background so that a trapped INT/TERM interrupts
# the wait at once (a foreground hyperfine would defer the signal).
CHILD=
run_child() {
    "$@" &
    CHILD=$!
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=
    return "$rc"
}

cleanup() {
    local rc=$? name root d id
    set +e
    trap - EXIT INT TERM
    if [ -n "$CHILD" ]; then
        kill -TERM "$CHILD" 2>/dev/null
        wait "$CHILD" 2>/dev/null
    fi
    for name in "${!RT[@]}"; do
        root=$W/root-$name
        [ -d "$root" ] || continue
        for d in "$root"/*/; do
            [ -d "$d" ] || continue
            id=$(basename "$d")
            "$W/wrap.sh" "${RT[$name]}" --root "$root" delete --force "$id" >/dev/null 2>&1
        done
    done
    for d in /sys/fs/cgroup/"$CGPARENT" /sys/fs/cgroup/*/"$CGPARENT"; do
        [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
        [ -d "$d" ] && log "warning: could not remove cgroup $d"
    done
    awk -v w="$W" '$5 == w || index($5, w "/") == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m"; done
    rm -rf "$W"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- binaries -----------------------------------------------------------------
if [ -z "${TESTDATA_BIN:-}" ]; then
    log "building testdata (debug)"
    (cd "$REPO" && cargo build -q -p testdata) || die "cargo build -p testdata failed; set TESTDATA_BIN"
    TESTDATA_BIN=$CARGO_TARGET_DIR/debug/testdata
fi
[ -x "$TESTDATA_BIN" ] || die "testdata binary $TESTDATA_BIN missing"
RUNC_RS_NOTE=
if [ -z "${RUNC_RS_BIN:-}" ]; then
    log "building runc-rs (release)"
    RUNC_RS_BIN=$CARGO_TARGET_DIR/release/runc-rs
    if ! (cd "$REPO" && cargo build --release -p runc-rs); then
        RUNC_RS_NOTE="cargo build --release -p runc-rs failed"
        RUNC_RS_BIN=
    fi
fi
CRUN_BIN=${CRUN_BIN:-$(command -v crun || true)}
RUNC_BIN=${RUNC_BIN:-$(command -v runc || true)}

# --- wrapper and drivers ------------------------------------------------------
HIDE_UNIFIED=
if [ "$(stat -f -c %T /sys/fs/cgroup 2>/dev/null)" != cgroup2fs ] &&
    [ "$(stat -f -c %T /sys/fs/cgroup/unified 2>/dev/null)" = cgroup2fs ]; then
    HIDE_UNIFIED='umount -l /sys/fs/cgroup/unified || exit 125'
    log "hybrid cgroups: hiding /sys/fs/cgroup/unified in a private mount namespace for every runtime"
fi
cat >"$W/wrap.sh" <<EOF
#!/bin/sh
# wrap.sh CMD [ARGS...]: CMD in a private mount namespace (same for every runtime).
exec unshare --mount --propagation private -- sh -c '${HIDE_UNIFIED:-:}
exec "\$@"' sh "\$@"
EOF
cat >"$W/pause-resume.sh" <<EOF
#!/bin/sh
# pause-resume.sh RUNTIME ROOT ID: one pause and one resume, each wrapped.
set -e
"$W/wrap.sh" "\$1" --root "\$2" pause "\$3"
"$W/wrap.sh" "\$1" --root "\$2" resume "\$3"
EOF
chmod +x "$W/wrap.sh" "$W/pause-resume.sh"

# --- one running container per runtime -----------------------------------------
add_runtime() { # name binary [note-if-missing]
    local name=$1 bin=$2 b=$W/bundle-$1 root=$W/root-$1 err
    if [ -z "$bin" ] || [ ! -x "$bin" ]; then
        log "skipping $name: binary ${bin:-<none>} not found${3:+ ($3)}"
        SKIPPED+=("$name: binary ${bin:-<none>} not found${3:+ ($3)}")
        return
    fi
    "$TESTDATA_BIN" bundle "$b" -- sleep 1000000 >/dev/null
    jq --arg cg "/$CGPARENT/$name" '.linux.cgroupsPath = $cg' "$b/config.json" >"$b/config.tmp"
    mv "$b/config.tmp" "$b/config.json"
    mkdir -p "$root"
    RT[$name]=$bin
    # Output to a file, not a pipe: the container keeps its stdio.
    if ! (cd "$b" && timeout 60 "$W/wrap.sh" "$bin" --root "$root" run -d --bundle "$b" ops \
        </dev/null >"$W/start-$name.log" 2>&1); then
        err=$(tail -n 1 "$W/start-$name.log")
        log "skipping $name: run -d failed: ${err:-no output}"
        SKIPPED+=("$name ($bin): run -d failed: ${err:-no output}")
        return
    fi
    if ! timeout 60 "$W/wrap.sh" "$bin" --root "$root" exec ops true </dev/null >"$W/check-$name.log" 2>&1 ||
        ! timeout 60 "$W/pause-resume.sh" "$bin" "$root" ops </dev/null >>"$W/check-$name.log" 2>&1; then
        err=$(tail -n 1 "$W/check-$name.log")
        log "skipping $name: exec or pause/resume failed: ${err:-no output}"
        SKIPPED+=("$name ($bin): exec or pause/resume failed: ${err:-no output}")
        return
    fi
    ORDER+=("$name")
}
add_runtime runc-rs "$RUNC_RS_BIN" "$RUNC_RS_NOTE"
add_runtime crun "$CRUN_BIN"
add_runtime runc "$RUNC_BIN"
[ "${#ORDER[@]}" -gt 0 ] || die "no runtime could run a container"

# --- timing -------------------------------------------------------------------
mkdir -p "$OUT"
for name in "${ORDER[@]}"; do
    root=$W/root-$name
    log "hyperfine: $name (${RT[$name]}): exec true"
    run_child hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --output null \
        --export-json "$OUT/ops-exec-$name.json" --command-name "$name" \
        "timeout 60 $W/wrap.sh ${RT[$name]} --root $root exec ops true" >&2 ||
        { SKIPPED+=("$name: exec failed during the hyperfine run"); rm -f "$OUT/ops-exec-$name.json"; }
    log "hyperfine: $name: pause + resume"
    run_child hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --output null \
        --export-json "$OUT/ops-pause-$name.json" --command-name "$name" \
        "timeout 60 $W/pause-resume.sh ${RT[$name]} $root ops" >&2 ||
        { SKIPPED+=("$name: pause/resume failed during the hyperfine run"); rm -f "$OUT/ops-pause-$name.json"; }
done
jq -s '{results: [.[].results[]]}' "$OUT"/ops-exec-*.json "$OUT"/ops-pause-*.json >"$OUT/ops.json" 2>/dev/null || true

# --- table --------------------------------------------------------------------
median_ms() { [ -f "$1" ] && jq -r '.results[0].median * 1000' "$1" || echo ""; }
fmt() { [ -n "$1" ] && printf '%.1f' "$1" || printf 'n/a'; }
ratio() { [ -n "$1" ] && [ -n "$2" ] && awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }' || printf 'n/a'; }
crun_exec=$(median_ms "$OUT/ops-exec-crun.json")
crun_pause=$(median_ms "$OUT/ops-pause-crun.json")
{
    echo
    echo "\`exec\` of \`true\` into a running busybox container (foreground, waits for it), and \`pause\` + \`resume\`"
    echo "(two runtime invocations) of it; hyperfine, $RUNS runs after $WARMUP warm-up, every command through the same"
    echo "mount-namespace wrapper."
    echo
    echo "| runtime | exec median ms | exec ratio to crun | pause+resume median ms | pause+resume ratio to crun |"
    echo "|---|---:|---:|---:|---:|"
    for name in "${ORDER[@]}"; do
        e=$(median_ms "$OUT/ops-exec-$name.json")
        p=$(median_ms "$OUT/ops-pause-$name.json")
        echo "| $name | $(fmt "$e") | $(ratio "$e" "$crun_exec") | $(fmt "$p") | $(ratio "$p" "$crun_pause") |"
    done
    for s in "${SKIPPED[@]}"; do echo "- skipped $s"; done
    echo
    for name in "${ORDER[@]}"; do
        echo "- $name: ${RT[$name]} ($("${RT[$name]}" --version 2>/dev/null | head -n 1 || true))"
    done
    echo
    echo "JSON: $OUT/ops.json (per runtime: $OUT/ops-exec-<runtime>.json, $OUT/ops-pause-<runtime>.json)"
} | tee "$OUT/ops-summary.md"
