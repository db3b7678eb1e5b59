#!/usr/bin/env bash
# Installs what the process tests need beyond Rust: `dig` (Debian's dnsutils) for the
# `dns` app's tests and `nft` (Debian's nftables) for the network-partition tests; the
# tests that need one skip with a message without it. Safe to run again: it installs
# only what is not already on PATH. Needs root (or sudo) for apt-get.
set -euo pipefail

missing=()
command -v dig >/dev/null 2>&1 || missing+=(dnsutils)
command -v nft >/dev/null 2>&1 || missing+=(nftables)
if [ ${#missing[@]} -eq 0 ]; then
    echo "dig and nft already installed: $(command -v dig) $(command -v nft)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
dig -v
nft --version
