#!/usr/bin/env bash
# Where the machine's CPU goes per request: runs `bench cluster` with the arguments
# given (for example `--target kv --clients 256 --workload write`), samples every CPU
# with `perf` for 6 s in the middle of the run, and prints the microseconds of CPU per
# request spent in the load generator and in the nodes, each split into kernel and
# user space, plus idle time and other processes (kernel workers); then the same kernel
# time split by the system call it was spent under. Every CPU's time is counted, so the
# first rows add up to (number of CPUs) s / requests per second.
#
# Needs root, perf (Debian: linux-perf) and python3; build first with
# `cargo build --release -p raft-examples -p raft-bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=target/release/bench
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$bench" cluster --duration 14 --json "$@" >"$out/run.json" 2>/dev/null &
run=$!
sleep 5
for p in $(pgrep -f 'release/kv --id|etcd --name'); do echo "$p node"; done >"$out/pids"
for p in $(pgrep -f 'release/bench cluster'); do echo "$p generator"; done >>"$out/pids"
perf record -q -g -F 499 -a -o "$out/perf.data" -- sleep 6 >/dev/null 2>&1
wait "$run"
perf script -i "$out/perf.data" -F pid,ip,sym 2>/dev/null >"$out/samples"
python3 - "$out" "$(nproc)" <<'EOF'
import collections, json, sys
out, cpus = sys.argv[1], int(sys.argv[2])
rate = json.loads(open(f"{out}/run.json").read().splitlines()[-1])["ops_per_sec"]
kind = dict(line.split() for line in open(f"{out}/pids"))
counts, calls, total = collections.Counter(), collections.Counter(), 0
# One sample per block: a header line with the pid, then its stack, innermost first
# (kernel frames have addresses from 0xffff...).
for block in open(f"{out}/samples").read().split("\n\n"):
    lines = [l.split(None, 1) for l in block.strip().splitlines() if l.strip()]
    if not lines:
        continue
    who = kind.get(lines[0][0], "idle" if lines[0][0] == "0" else "other")
    frames = lines[1:]
    in_kernel = bool(frames) and frames[0][0].startswith("ffff")
    counts[(who, "kernel" if in_kernel else "user")] += 1
    if in_kernel:
        entries = [f[1] for f in frames if len(f) > 1 and f[1].startswith("__x64_sys_")]
        calls[(who, entries[-1][len("__x64_sys_"):] if entries else "(no system call)")] += 1
    total += 1
us = lambda n: n / total * cpus * 1e6 / rate
print(f"{rate:.0f} requests/s, {total} samples; CPU per request ({cpus} CPUs):")
for (who, ring), n in sorted(counts.items()):
    print(f"  {who:9} {ring:6} {100 * n / total:5.1f}%  {us(n):6.2f} us")
print("kernel time by system call (0.05 us per request or more):")
for (who, call), n in sorted(calls.items(), key=lambda kv: (kv[0][0], -kv[1])):
    if us(n) >= 0.05:
        print(f"  {who:9} {call:18} {us(n):6.2f} us")
EOF
