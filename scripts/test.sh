#!/usr/bin/env bash
# The whole test suite: unit, integration (stand-in memU) and doc tests, a build of the benchmarks,
# then the end-to-end suite against the real memU server and the real memu-py SDK (scripts/e2e.sh
# installs what it needs).
# Usage: scripts/test.sh            (from anywhere)
#        scripts/test.sh --fast     (skip the end-to-end suite: cargo only, no Python)
set -euo pipefail
cd "$(dirname "$0")/.."
# Debian packages the tests start themselves: redis-server (tests/shared_cache.rs runs a real one
# per test) and promtool (from `prometheus`, below). Installed when missing (CI runs as root on
# Debian); the package lists are refreshed only when they do not know the package yet.
sudo=()
[[ $(id -u) == 0 ]] || sudo=(sudo -n)
install_debian_package() {
  if ! command -v apt-get >/dev/null; then
    echo "scripts/test.sh: $2 not found and no apt-get: install $1" >&2
    exit 1
  fi
  apt-cache show "$1" >/dev/null 2>&1 || "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$1" >/dev/null
}
command -v redis-server >/dev/null || install_debian_package redis-server redis-server
# Unit tests of the library and the binary, and every integration test in tests/. Not
# `--all-targets`: that adds `--benches`, which *runs* the benchmarks (harness = false) as
# unoptimised binaries, minutes of work that prove nothing.
cargo test --lib --bins --tests
cargo test --doc
# The benchmarks (benches/*.rs) are compiled as `cargo bench` compiles them, so they cannot rot,
# but not run. `--bench '*'` leaves out the lib and bin rebuilt as (empty) benchmark harnesses.
cargo bench --no-run --bench '*'
# The Prometheus rules in deploy/prometheus/: the example config and the rules it loads are
# valid, and the rules' unit tests pass.
command -v promtool >/dev/null || install_debian_package prometheus promtool
promtool check config deploy/prometheus/prometheus.yml
promtool test rules deploy/prometheus/memu-proxy.rules.test.yml
if [[ ${1:-} != --fast ]]; then
  scripts/e2e.sh
fi
