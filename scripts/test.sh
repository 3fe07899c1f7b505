#!/usr/bin/env bash
# Runs every test (unit, kernel-level, differential against runc, containerd
# and podman end to end). Needs root on a Linux host; installs what it needs.
# On a hybrid or v1 host the cgroup tests run a second time in a throwaway
# cgroup v2 VM (../shared/cgroup2-vm); on a pure v2 host the first run is it.
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"
cd "$(dirname "$0")/.."
./scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/var/cache/runc-rs/target}"
cargo build --workspace --bins
# Test binaries run one after another (they share the host's mounts,
# cgroups and daemons); tests inside each binary run two at a time.
cargo test --workspace --no-fail-fast -- --test-threads=2 "$@"

vm="${CGROUP2_VM:-$(cd .. && pwd)/shared/cgroup2-vm/run-in-cgroup2-vm.sh}"
if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
  echo "pure cgroup v2 host: the cgroup tests above already ran on v2"
elif [ -x "$vm" ]; then
  echo "== cgroup tests again on a pure cgroup v2 kernel ($vm)"
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$vm --" cargo test -p cgroups --no-fail-fast -- --test-threads=2
  echo "== runc vs runc-rs on cgroup v2: the cases that read cgroup files, in the same VM"
  # /tmp is a shared folder in the guest, where mkfifo fails: state and
  # bundles go to the guest's own /run.
  DIFF_CASES=default,devices_cgroup,cgroup_memory,cgroup_cpu,cgroup_pids,rootfs_readonly,readonly_custom,ns_cgroup \
  TESTDATA_TMPDIR=/run VM_ENV="PATH RUST_BACKTRACE DIFF_CASES TESTDATA_TMPDIR" \
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$vm --" cargo test -p integration-tests --test differential
else
  echo "cgroup v2 VM runner not found at $vm: set CGROUP2_VM to run the v2 pass" >&2
  exit 1
fi
