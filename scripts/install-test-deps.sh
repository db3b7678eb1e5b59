#!/usr/bin/env bash
# Installs what the process tests need beyond Rust: `dig` (Debian's dnsutils) for the
# `dns` app's tests, which skip with a message without it. Safe to run again: it does
# nothing when `dig` is already on PATH. Needs root (or sudo) for apt-get.
set -euo pipefail

if command -v dig >/dev/null 2>&1; then
    echo "dig already installed: $(command -v dig)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends dnsutils
dig -v
