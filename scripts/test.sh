#!/usr/bin/env bash
# The whole test suite: unit, integration (stand-in memU), doc tests, then the end-to-end suite
# against the real memU server and the real memu-py SDK (scripts/e2e.sh installs what it needs).
# Usage: scripts/test.sh            (from anywhere)
#        scripts/test.sh --fast     (skip the end-to-end suite: cargo only, no Python)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --all-targets
cargo test --doc
if [[ ${1:-} != --fast ]]; then
  scripts/e2e.sh
fi
