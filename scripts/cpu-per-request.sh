#!/usr/bin/env bash
# Where the machine's CPU goes per request: runs `bench cluster` with the arguments
# given (for example `--target kv --clients 256 --workload write`), samples every CPU
# with `perf` for 6 s in the middle of the run, and prints the microseconds of CPU per
# request spent in the load generator and in the nodes, each split into kernel and
# user space, plus idle time and other processes (kernel workers). Every CPU's time is
# counted, so the rows add up to (number of CPUs) s / requests per second.
#
# Needs root, perf (Debian: linux-perf) and python3; build first with
# `cargo build --release -p raft-examples`.
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
perf record -q -F 999 -a -o "$out/perf.data" -- sleep 6 >/dev/null 2>&1
wait "$run"
perf script -i "$out/perf.data" -F pid,ip,dso 2>/dev/null >"$out/samples"
python3 - "$out" "$(nproc)" <<'EOF'
import collections, json, sys
out, cpus = sys.argv[1], int(sys.argv[2])
rate = json.loads(open(f"{out}/run.json").read().splitlines()[-1])["ops_per_sec"]
kind = dict(line.split() for line in open(f"{out}/pids"))
counts, total = collections.Counter(), 0
for line in open(f"{out}/samples"):
    parts = line.split()
    if not parts:
        continue
    who = kind.get(parts[0], "idle" if parts[0] == "0" else "other")
    ring = "kernel" if "kernel" in parts[-1] else "user"
    counts[(who, ring)] += 1
    total += 1
print(f"{rate:.0f} requests/s, {total} samples; CPU per request ({cpus} CPUs):")
for (who, ring), n in sorted(counts.items()):
    print(f"  {who:9} {ring:6} {100 * n / total:5.1f}%  {n / total * cpus * 1e6 / rate:6.2f} us")
EOF
