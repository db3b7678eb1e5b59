#!/usr/bin/env bash
# The whole test suite: formatting, lints, and the tests of every runtime combination.
# Run from the repository root: ./scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== rustfmt"
cargo fmt --all -- --check

echo "== clippy (all targets, all features)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

echo "== tests: tokio + smol + testing (all features), including the simulator sweep"
cargo nextest run --workspace --all-features --no-fail-fast

# The simulator does not depend on the runtime features; its sweep ran above.
echo "== tests: tokio only"
cargo nextest run -p raft --no-default-features --features tokio,testing --no-fail-fast -E 'not test(/simulator_sweep/)'

echo "== tests: smol only"
cargo nextest run -p raft --no-default-features --features smol,testing --no-fail-fast -E 'not test(/simulator_sweep/)'

echo "== raft-net-tcp on each runtime alone, with its TLS tests; lints without TLS"
cargo nextest run -p raft-net-tcp --no-default-features --features tokio,tls --no-fail-fast
cargo nextest run -p raft-net-tcp --no-default-features --features smol,tls --no-fail-fast
cargo clippy -p raft-net-tcp --all-targets --no-default-features --features tokio -- -D warnings

echo "== raft-examples and raft-bench: lints of each runtime alone, and the apps' process tests on smol alone"
cargo clippy -p raft-examples -p raft-bench --all-targets -- -D warnings
cargo clippy -p raft-examples --all-targets --no-default-features --features smol -- -D warnings
cargo clippy -p raft-bench --all-targets --features smol -- -D warnings
cargo nextest run -p raft-examples --no-default-features --features smol --no-fail-fast

echo "== doc tests and docs (broken links are errors)"
cargo test --workspace --all-features --doc
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features
