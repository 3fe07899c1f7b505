#!/usr/bin/env bash
# Container lifecycle benchmark: create -> start -> (wait for exit) -> delete
# of one busybox `true` container, timed with hyperfine for runc-rs, crun and
# runc, plus the peak RSS of each runtime's `create`.
#
# Usage: sudo bench/runtime-lifecycle.sh        (see bench/README.md)
# Env:   RUNC_RS_BIN  runc-rs binary; if unset, `cargo build --release -p runc-rs`
#                     and use $CARGO_TARGET_DIR/release/runc-rs
#        RUNC_BIN, CRUN_BIN   other runtimes (default: from PATH)
#        TESTDATA_BIN testdata binary; if unset, `cargo build -p testdata`
#        RUNS (30), WARMUP (3), RSS_RUNS (15), OUT (bench/results)
#
# Fairness: every iteration of every runtime runs the same driver script
# through the same wrapper: a private mount namespace (`unshare -m`) in
# which, on a hybrid cgroup host, /sys/fs/cgroup/unified is lazily
# unmounted. crun 1.8 refuses hybrid mode ("cgroups in hybrid mode not
# supported"), so all three runtimes see a pure cgroup v1 host. The host's
# own mounts are not changed (the namespace's propagation is private).
#
# Cleanup (trap on EXIT/INT/TERM, also on failure): force-delete any
# container left in the bench's --root dirs, rmdir the bench-owned cgroup
# parent /runc-rs-bench-<pid> in every hierarchy, unmount anything left
# under the temp dir, remove the temp dir.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/runc-rs/target}
RUNS=${RUNS:-30}
WARMUP=${WARMUP:-3}
RSS_RUNS=${RSS_RUNS:-15}
OUT=${OUT:-$HERE/results}
CGPARENT=runc-rs-bench-$$

log() { printf '[bench] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (runtimes create namespaces and cgroups)"
[ "$RUNS" -ge 30 ] 2>/dev/null || die "RUNS must be >= 30 (got $RUNS)"
for t in hyperfine jq unshare umount /usr/bin/time; do
    command -v "$t" >/dev/null || die "$t not found (Debian: hyperfine jq util-linux mount time)"
done

W=$(mktemp -d /tmp/runc-rs-bench-XXXXXX)
declare -A RT=()        # name -> binary, for the runtimes that passed the pre-check
ORDER=()                # names in table order

# Long steps run in the background and are waited for with `wait`, which a
# trapped INT/TERM interrupts at once (a foreground hyperfine would make
# bash defer, or drop, the signal until it finished).
CHILD=
run_child() {
    "$@" &
    CHILD=$!
    local rc=0
    wait "$CHILD" || rc=$?
    CHILD=
    return "$rc"
}
# Stop the running step: freeze it, TERM its children (hyperfine's child is
# `timeout`, which passes TERM on to the driver, whose trap deletes its
# container), kill it, and wait (bounded) for the children to finish.
stop_child() {
    [ -n "$CHILD" ] || return 0
    local kids k
    kill -STOP "$CHILD" 2>/dev/null
    kids=$(cat /proc/"$CHILD"/task/*/children 2>/dev/null || true)
    for k in $kids; do kill -TERM "$k" 2>/dev/null; done
    kill -KILL "$CHILD" 2>/dev/null
    wait "$CHILD" 2>/dev/null
    for k in $kids; do
        for _ in $(seq 100); do kill -0 "$k" 2>/dev/null || break; sleep 0.1; done
    done
    CHILD=
}

cleanup() {
    local rc=$? name root d id
    set +e
    trap - EXIT INT TERM
    stop_child
    for name in "${!RT[@]}"; do
        root=$W/root-$name
        [ -d "$root" ] || continue
        for d in "$root"/*/; do
            [ -d "$d" ] || continue
            id=$(basename "$d")
            "$W/wrap.sh" "${RT[$name]}" --root "$root" delete --force "$id" >/dev/null 2>&1
        done
    done
    # Bench-owned cgroup parent, in every hierarchy (v1 controllers, unified,
    # or the v2 root), deepest directory first; rmdir only.
    for d in /sys/fs/cgroup/"$CGPARENT" /sys/fs/cgroup/*/"$CGPARENT"; do
        [ -d "$d" ] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
        [ -d "$d" ] && log "warning: could not remove cgroup $d"
    done
    # Nothing should be mounted under $W, but never rm -rf through a mount.
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
        # Do not fall back to a stale binary from an earlier build.
        RUNC_RS_NOTE="cargo build --release -p runc-rs failed"
        RUNC_RS_BIN=
    fi
fi
CRUN_BIN=${CRUN_BIN:-$(command -v crun || true)}
RUNC_BIN=${RUNC_BIN:-$(command -v runc || true)}

# --- wrapper and driver -------------------------------------------------------
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

cat >"$W/driver.sh" <<'EOF'
#!/bin/sh
# driver.sh RUNTIME ROOT BUNDLE [RSS_FILE]: one create/start/wait/delete.
# With RSS_FILE, `create` runs under /usr/bin/time and its peak RSS (KiB)
# is appended to RSS_FILE.
set -eu
rt=$1 root=$2 bundle=$3 rss=${4:-}
read -r id </proc/sys/kernel/random/uuid   # unique container id per iteration
pidfile=$root/$id.pid
done=
# On any failure, do not leave a created container (it would hold our stdio
# and its cgroup); on success this costs nothing.
trap '[ -n "$done" ] || "$rt" --root "$root" delete --force "$id" >/dev/null 2>&1; rm -f "$pidfile"' EXIT
trap 'exit 143' INT TERM
if [ -n "$rss" ]; then
    /usr/bin/time -f %M -a -o "$rss" "$rt" --root "$root" create --bundle "$bundle" --pid-file "$pidfile" "$id"
else
    "$rt" --root "$root" create --bundle "$bundle" --pid-file "$pidfile" "$id"
fi
read -r pid <"$pidfile" || [ -n "$pid" ]   # crun writes no trailing newline
"$rt" --root "$root" start "$id"
# The container's init is not our child: spin on /proc until it is gone or
# a zombie (pid 1 reaps it). Builtins only, so no fork per poll.
while read -r line 2>/dev/null <"/proc/$pid/stat"; do
    line=${line##*) }
    [ "${line%% *}" = Z ] && break
done
"$rt" --root "$root" delete "$id"
done=1
EOF
chmod +x "$W/wrap.sh" "$W/driver.sh"

# --- bundles and pre-check ----------------------------------------------------
add_runtime() { # name binary [note-if-missing]
    local name=$1 bin=$2 b=$W/bundle-$1 err
    if [ -z "$bin" ] || [ ! -x "$bin" ]; then
        log "skipping $name: binary ${bin:-<none>} not found${3:+ ($3)}"
        SKIPPED+=("$name: binary ${bin:-<none>} not found${3:+ ($3)}")
        return
    fi
    "$TESTDATA_BIN" bundle "$b" -- true
    jq --arg cg "/$CGPARENT/$name" '.linux.cgroupsPath = $cg' "$b/config.json" >"$b/config.tmp"
    mv "$b/config.tmp" "$b/config.json"
    mkdir -p "$W/root-$name"
    RT[$name]=$bin
    # Output to a file, not a pipe: a container left behind by a broken
    # runtime would keep a pipe open and hang the script.
    if ! run_child timeout 60 "$W/wrap.sh" "$W/driver.sh" "$bin" "$W/root-$name" "$b" \
        </dev/null >"$W/precheck-$name.log" 2>&1; then
        err=$(tail -n 1 "$W/precheck-$name.log")
        log "skipping $name: one create/start/delete cycle failed: ${err:-no output}"
        SKIPPED+=("$name ($bin): a create/start/delete cycle failed: ${err:-no output}")
        return
    fi
    ORDER+=("$name")
}
SKIPPED=()
add_runtime runc-rs "$RUNC_RS_BIN" "$RUNC_RS_NOTE"
add_runtime crun "$CRUN_BIN"
add_runtime runc "$RUNC_BIN"
[ "${#ORDER[@]}" -gt 0 ] || die "no runtime completed a lifecycle"

# --- timing -------------------------------------------------------------------
mkdir -p "$OUT"
for name in "${ORDER[@]}"; do
    log "hyperfine: $name (${RT[$name]})"
    if ! run_child hyperfine -N --warmup "$WARMUP" --runs "$RUNS" --output null \
        --export-json "$OUT/lifecycle-$name.json" --command-name "$name" \
        "timeout 60 $W/wrap.sh $W/driver.sh ${RT[$name]} $W/root-$name $W/bundle-$name" >&2; then
        SKIPPED+=("$name: failed during the hyperfine run")
        rm -f "$OUT/lifecycle-$name.json"
    fi
done
jq -s '{results: [.[].results[]]}' "$OUT"/lifecycle-*.json >"$OUT/lifecycle.json" 2>/dev/null || true

# --- peak RSS of `create` -----------------------------------------------------
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) print "n/a"; else if (NR % 2) print v[(NR + 1) / 2]; else print int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
declare -A RSS=()
for name in "${ORDER[@]}"; do
    [ -f "$OUT/lifecycle-$name.json" ] || continue
    : >"$W/rss-$name"
    for _ in $(seq "$RSS_RUNS"); do
        run_child timeout 60 "$W/wrap.sh" "$W/driver.sh" "${RT[$name]}" "$W/root-$name" "$W/bundle-$name" "$W/rss-$name" \
            </dev/null >/dev/null 2>&1 || break
    done
    RSS[$name]=$(median <"$W/rss-$name")
done

# --- table --------------------------------------------------------------------
crun_median=
[ -f "$OUT/lifecycle-crun.json" ] && crun_median=$(jq '.results[0].median' "$OUT/lifecycle-crun.json")
{
    echo
    echo "create -> start -> wait -> delete of one busybox \`true\` container, $RUNS runs after $WARMUP warm-up;"
    echo "peak RSS: median over $RSS_RUNS runs of the runtime's \`create\` (GNU time %M)."
    echo
    echo "| runtime | median ms | mean ± stddev ms | ratio to crun | peak RSS KiB |"
    echo "|---|---:|---:|---:|---:|"
    for name in "${ORDER[@]}"; do
        f=$OUT/lifecycle-$name.json
        [ -f "$f" ] || continue
        jq -r '.results[0] | [.median, .mean, .stddev] | @tsv' "$f" |
            awk -F'\t' -v name="$name" -v rss="${RSS[$name]:-n/a}" -v crun="${crun_median:-}" '{
                ratio = (crun == "") ? "n/a" : sprintf("%.2f", $1 / crun)
                printf "| %s | %.1f | %.1f ± %.1f | %s | %s |\n", name, $1 * 1000, $2 * 1000, $3 * 1000, ratio, rss
            }'
    done
    for s in "${SKIPPED[@]}"; do echo "- skipped $s"; done
    echo
    for name in "${ORDER[@]}"; do
        echo "- $name: ${RT[$name]} ($("${RT[$name]}" --version 2>/dev/null | head -n 1 || true))"
    done
    echo
    echo "JSON: $OUT/lifecycle.json (per runtime: $OUT/lifecycle-<runtime>.json)"
} | tee "$OUT/summary.md"
