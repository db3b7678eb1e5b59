#!/usr/bin/env bash
# Installs what `bench cluster --target etcd`, `bench compare`, `bench report` and
# `bench dns` need: etcd 3.4 (server and etcdctl), dnsperf and NSD from Debian's
# packages. Safe to run again: it installs only what is missing from PATH. Needs root
# (or sudo) for apt-get.
set -euo pipefail

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

missing=()
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server etcd-client)
command -v dnsperf >/dev/null 2>&1 || missing+=(dnsperf)
command -v nsd >/dev/null 2>&1 || [ -x /usr/sbin/nsd ] || missing+=(nsd)
if [ ${#missing[@]} -eq 0 ]; then
    echo "etcd, dnsperf and nsd already installed"
    exit 0
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"

# Debian's package starts a system-wide etcd on the default ports; the benchmark runs
# its own members on free ports, so the service is not needed.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet etcd 2>/dev/null; then
    $SUDO systemctl stop etcd || true
fi
# Likewise NSD: the benchmark runs its own on a free port.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nsd 2>/dev/null; then
    $SUDO systemctl stop nsd || true
fi

etcd --version
