#!/usr/bin/env bash
# A bounded mixed soak against the release binary while memU's faults rotate (benches/soak.rs):
# reads and memorize writes over 8 connections, memU healthy / slow / 503 / not JSON / wrong shape
# in turn, then the figures (reads answered / failed / wrong-shape, writes sent / forwarded /
# duplicated, read latency, RSS, panics). Exits non-zero if a read failed or had the wrong shape,
# a write was duplicated, or the proxy panicked. 127.0.0.1 only.
# Usage: scripts/soak.sh [SECONDS]     (default 60)
set -euo pipefail
cd "$(dirname "$0")/.."
SOAK_SECS=${1:-60} cargo bench --bench soak
