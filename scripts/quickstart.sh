#!/usr/bin/env bash
# Fresh machine, as root: install dependencies, build runc-rs, and run a real
# busybox container with it, printing what the container printed.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/runc-rs/target}"
cargo build --release -q -p runc-rs -p testdata
bin="$CARGO_TARGET_DIR/release"
work=$(mktemp -d /tmp/runc-rs-quickstart.XXXXXX)
root="$work/state"
cleanup() {
  "$bin/runc-rs" --root "$root" delete --force quickstart >/dev/null 2>&1 || true
  # The container's cgroup went with it; remove the parent made for it.
  for d in /sys/fs/cgroup/*/runc-rs-quickstart; do
    if [ -d "$d" ]; then rmdir "$d" 2>/dev/null || true; fi
  done
  rm -rf "$work"
}
trap cleanup EXIT
"$bin/testdata" bundle "$work/bundle" -- sh -c 'echo "hello from $(hostname), pid $$, uid $(id -u)"; cat /proc/self/status | grep ^CapEff'
# Keep the container's cgroup under a parent of its own.
jq '.linux.cgroupsPath = "/runc-rs-quickstart/quickstart"' "$work/bundle/config.json" > "$work/c.json" && mv "$work/c.json" "$work/bundle/config.json"
"$bin/runc-rs" --root "$root" run --bundle "$work/bundle" quickstart
