#!/usr/bin/env bash
# Installs what `cargo bench --bench loopback` needs beyond Rust: nginx (Debian `nginx-light`),
# used as the caching-proxy baseline. Idempotent: does nothing when /usr/sbin/nginx exists.
set -euo pipefail

if [[ -x /usr/sbin/nginx ]]; then
    echo "nginx already installed: $(/usr/sbin/nginx -v 2>&1)"
    exit 0
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y --no-install-recommends nginx-light
# The package may start a system nginx on :80; the bench runs its own instance and does not need it.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet nginx 2>/dev/null; then
    $SUDO systemctl stop nginx || true
fi
echo "installed: $(/usr/sbin/nginx -v 2>&1)"
