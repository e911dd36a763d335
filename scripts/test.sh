#!/usr/bin/env bash
# The whole test suite: unit, integration (stand-in memU) and doc tests, a build of the benchmarks,
# then the end-to-end suite against the real memU server and the real memu-py SDK (scripts/e2e.sh
# installs what it needs).
# Usage: scripts/test.sh            (from anywhere)
#        scripts/test.sh --fast     (skip the end-to-end suite: cargo only, no Python)
set -euo pipefail
cd "$(dirname "$0")/.."
# Unit tests of the library and the binary, and every integration test in tests/. Not
# `--all-targets`: that adds `--benches`, which *runs* the benchmarks (harness = false) as
# unoptimised binaries, minutes of work that prove nothing.
cargo test --lib --bins --tests
cargo test --doc
# The benchmarks (benches/*.rs) are compiled as `cargo bench` compiles them, so they cannot rot,
# but not run. `--bench '*'` leaves out the lib and bin rebuilt as (empty) benchmark harnesses.
cargo bench --no-run --bench '*'
if [[ ${1:-} != --fast ]]; then
  scripts/e2e.sh
fi
