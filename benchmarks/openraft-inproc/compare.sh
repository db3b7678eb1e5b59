#!/usr/bin/env bash
# Runs the main workspace's `bench inproc` and this openraft benchmark alternately,
# two rounds per client count, printing one JSON line per run prefixed by the framework.
# Usage: benchmarks/openraft-inproc/compare.sh [DURATION_SECS]  (from anywhere)
# OURS_DIR=/path/to/checkout benchmarks ours from another checkout of the main workspace
# (e.g. a `git archive` export of a commit) instead of this one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
main=${OURS_DIR:-$(cd "$here/../.." && pwd)}
dur=${1:-5}
(cd "$main" && cargo build --release -p raft-bench --bin bench)
(cd "$here" && cargo build --release)
for n in 1 16 64 256 1024; do
  for round in 1 2; do
    echo "ours     round=$round $("$main/target/release/bench" inproc --clients "$n" --duration "$dur" --json | tail -n1)"
    echo "openraft round=$round $("$here/target/release/openraft-inproc-bench" inproc --clients "$n" --duration "$dur" --json | tail -n1)"
  done
done
