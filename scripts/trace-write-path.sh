#!/usr/bin/env bash
# Where one write's time goes: runs `bench cluster --target kv --clients 1`, records
# the nodes' and the client's sendto/recvfrom/pwrite64/fdatasync system calls with
# `perf` for half a second, and prints the median time, from the client's request, at
# which each step first happens (N1f = node 1, a follower; N2l = node 2, the leader).
#
# Needs root, perf (Debian: linux-perf), curl and python3; build first with
# `cargo build --release -p raft-examples -p raft-bench`.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=target/release/bench
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
mount | grep -q tracefs || mount -t tracefs nodev /sys/kernel/tracing
"$bench" cluster --target kv --clients 1 --duration 5 --json >"$out/run.json" 2>/dev/null &
run=$!
sleep 3
for p in $(pgrep -f 'release/kv --id'); do
  args=$(tr '\0' ' ' </proc/"$p"/cmdline)
  id=$(grep -o -- '--id [0-9]*' <<<"$args" | cut -d' ' -f2)
  port=$(grep -o -- '--http [^ ]*' <<<"$args" | sed 's/.*://')
  role=$(curl -s "localhost:$port/status" | grep -o '"role":"[a-z]*"' | cut -d'"' -f4)
  echo "$p N$id${role:0:1}" >>"$out/pids"
done
echo "$(pgrep -f 'release/bench cluster') client" >>"$out/pids"
events=()
for s in sendto recvfrom fdatasync pwrite64; do
  events+=(-e "syscalls:sys_enter_$s" -e "syscalls:sys_exit_$s")
done
perf record -q -m 64M -o "$out/perf.data" "${events[@]}" -a -- sleep 0.5 >/dev/null 2>&1
wait "$run"
perf script -i "$out/perf.data" -F pid,time,event,trace 2>/dev/null >"$out/trace.txt"
echo "run: $(tail -1 "$out/run.json")"
python3 - "$out" <<'PY'
import re, statistics, sys
d = sys.argv[1]
names = dict(l.split() for l in open(d + "/pids"))
ev = []
for l in open(d + "/trace.txt"):
    m = re.match(r"\s*(\d+)\s+([\d.]+):\s+syscalls:sys_(enter|exit)_(\w+):\s*(.*)", l)
    if not m or m.group(1) not in names:
        continue
    pid, t, side, call, rest = m.groups()
    t, who = float(t) * 1e6, names[pid]
    if side == "enter" and call == "sendto":
        ev.append((t, who, "send", int(re.search(r"len: (0x[0-9a-f]+)", rest).group(1), 16)))
    elif side == "exit" and call == "recvfrom":
        n = int(rest.strip(), 16)
        if 0 < n < 1 << 40:
            ev.append((t, who, "receive", n))
    elif call in ("fdatasync", "pwrite64"):
        ev.append((t, who, call + (" starts" if side == "enter" else " ends"), 0))
ev.sort()
size = lambda n: "" if n == 0 else (" >1 KiB" if n > 1000 else (" 100 B-1 KiB" if n > 100 else " <100 B"))
starts = [i for i, e in enumerate(ev) if e[1] == "client" and e[2] == "send"]
at, totals = {}, []
for a, b in zip(starts, starts[1:]):
    end = [e for e in ev[a:b] if e[1] == "client" and e[2] == "receive"]
    if not end:
        continue
    totals.append(end[0][0] - ev[a][0])
    seen = set()
    for e in ev[a:b]:
        k = (e[1], e[2] + size(e[3]))
        if k not in seen:
            seen.add(k)
            at.setdefault(k, []).append(e[0] - ev[a][0])
print(f"{len(totals)} writes, median {statistics.median(totals):.0f} µs from request to answer")
print("median µs  where   first")
for k, v in sorted(at.items(), key=lambda kv: statistics.median(kv[1])):
    if len(v) >= len(totals) / 2:
        print(f"{statistics.median(v):9.0f}  {k[0]:6}  {k[1]}")
PY
