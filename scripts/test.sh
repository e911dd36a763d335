#!/usr/bin/env bash
# The whole test suite: unit, integration (stand-in memU) and doc tests.
# Usage: scripts/test.sh            (from anywhere; no network needed beyond crates.io)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets
cargo test --doc
