#!/usr/bin/env bash
# Installs etcd (Debian's etcd-server package) for `kvctl bench --target etcd`.
# Idempotent: does nothing when an `etcd` binary is already on PATH.
set -euo pipefail
command -v etcd >/dev/null 2>&1 && exit 0
bash "$(dirname "$0")/apt-install.sh" etcd-server
# Debian starts a system etcd on the default ports; the benchmark runs its own on free ports.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    systemctl disable --now etcd >/dev/null 2>&1 || true
fi
