#!/usr/bin/env bash
# Installs the system tools the test suite drives (network namespaces, iptables, libfaketime,
# and Debian's chromium, which the status page's browser test drives through playwright).
# Idempotent: does nothing when they are already present.
set -euo pipefail
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1 || missing+=(libfaketime faketime)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
exec bash "$(dirname "$0")/apt-install.sh" "${missing[@]}"
