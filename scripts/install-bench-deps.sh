#!/usr/bin/env bash
# Installs what `bench cluster --target etcd`, `bench compare` and `bench report` need:
# etcd 3.4 (server and etcdctl) from Debian's packages. Safe to run again: it does
# nothing when `etcd` is already on PATH. Needs root (or sudo) for apt-get.
set -euo pipefail

if command -v etcd >/dev/null 2>&1; then
    echo "etcd already installed: $(command -v etcd)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends etcd-server etcd-client

# Debian's package starts a system-wide etcd on the default ports; the benchmark runs
# its own members on free ports, so the service is not needed.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    $SUDO systemctl stop etcd || true
fi

etcd --version
