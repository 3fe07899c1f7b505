#!/usr/bin/env bash
# Installs what building and testing need on a fresh Debian 12 machine (as root).
set -euo pipefail
pkgs=(pkg-config libseccomp-dev protobuf-compiler busybox-static runc crun containerd podman skopeo uidmap jq hyperfine iproute2 util-linux time)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
