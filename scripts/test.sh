#!/usr/bin/env bash
# Runs every test (unit, kernel-level, differential against runc, containerd
# and podman end to end). Needs root on a Linux host; installs what it needs.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/runc-rs/target}"
cargo build --workspace --bins
# Tests share the host's kernel state (mounts, cgroups, containerd): run
# test binaries one at a time, tests inside each with two threads.
cargo test --workspace --no-fail-fast -- --test-threads=2 "$@"
