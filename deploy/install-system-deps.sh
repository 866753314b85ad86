#!/usr/bin/env bash
# Installs the system tools the test suite drives (network namespaces, iptables, libfaketime).
# Idempotent: does nothing when they are already present.
set -euo pipefail
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || missing+=(libfaketime faketime)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "kvstore: need root to install: ${missing[*]} (apt-get install ${missing[*]})" >&2
        exit 1
    fi
else
    SUDO=
fi
echo "kvstore: installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
