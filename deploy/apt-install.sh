#!/usr/bin/env bash
# apt-install.sh PACKAGE... — install Debian packages as root (or through sudo), quietly.
set -euo pipefail
[ $# -gt 0 ] || exit 0
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO=sudo; else
        echo "kvstore: need root to install: $* (apt-get install $*)" >&2
        exit 1
    fi
else
    SUDO=
fi
echo "kvstore: installing system packages: $*"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "$@" >/dev/null
