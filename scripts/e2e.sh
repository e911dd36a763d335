#!/usr/bin/env bash
# End-to-end suite: the real memU 0.1.8 server, the real memu-py SDKs and the real memu-cli cloud
# client through the proxy, to http and https upstreams, all on 127.0.0.1 with ports picked at run
# time (see e2e/conftest.py).
#
# Usage: scripts/e2e.sh [extra pytest args, e.g. -k users]        (from anywhere)
#
#   1. .venv-e2e      Python 3.11, e2e/requirements-py311.txt (memu-py 0.1.8 + memu-server, uvicorn,
#                     trustme, pytest)
#   2. .venv-e2e-312  Python 3.12 if available, e2e/requirements-py312.txt (memu-py 0.2.2, the /api/v2 SDK)
#   3. .venv-e2e-cli  Python 3.11, e2e/requirements-cli.txt (memu-cli 0.10.0, the cloud v4 client,
#                     trustme, pytest): its own venv, as its top-level `memu` package collides with memu-py's
#   4. cargo build --release; MEMU_PROXY_BIN=<target dir>/release/memu-proxy
#   5. pytest e2e/ with 3.11 (test_sdk.py, test_sdk_tls.py, test_cloud_v3.py; the others skip
#      themselves there), pytest e2e/test_sdk_v2.py with 3.12, pytest e2e/test_cloud_v4.py with the
#      memu-cli venv
#
# A venv is (re)created only when missing or broken, and pip runs only when the requirements file or
# the interpreter changed (a stamp in the venv), so a second run installs nothing.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")/.."
started=$SECONDS

VENV_311=.venv-e2e
VENV_312=.venv-e2e-312
VENV_CLI=.venv-e2e-cli
REQUIREMENTS_311=e2e/requirements-py311.txt
REQUIREMENTS_312=e2e/requirements-py312.txt
REQUIREMENTS_CLI=e2e/requirements-cli.txt

log() { printf 'e2e: %s\n' "$*"; }

# Prints the first candidate that runs and is Python $1 (major.minor); fails if none is.
find_python() {
  local want=$1 candidate
  shift
  for candidate in "$@"; do
    if "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$want'.split('.'))))" >/dev/null 2>&1; then
      printf '%s\n' "$candidate"
      return 0
    fi
  done
  return 1
}

# True if venv $1 has a working interpreter of Python $2.
venv_works() {
  [[ -x $1/bin/python ]] && "$1/bin/python" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$2'.split('.'))))" >/dev/null 2>&1
}

# True if every module named after venv $1 can be found by its interpreter.
venv_has() {
  local dir=$1
  shift
  "$dir/bin/python" -c 'import importlib.util as u, sys; sys.exit(not all(u.find_spec(m) for m in sys.argv[1:]))' "$@" \
    >/dev/null 2>&1
}

# ensure_venv DIR PYTHON VERSION REQUIREMENTS MODULE...: creates/repairs DIR and installs
# REQUIREMENTS unless its stamp says they are already installed and every MODULE is importable.
ensure_venv() {
  local dir=$1 python=$2 version=$3 requirements=$4
  shift 4
  local stamp=$dir/.e2e-requirements.stamp want
  want="$(sha256sum "$requirements" | cut -d' ' -f1) $("$python" -c 'import sys; print(sys.version.split()[0])')"
  if venv_works "$dir" "$version" && [[ -f $stamp && $(<"$stamp") == "$want" ]] && venv_has "$dir" "$@"; then
    log "$dir is up to date ($requirements unchanged): nothing to install"
    return
  fi
  if ! venv_works "$dir" "$version"; then
    log "creating $dir with $python"
    rm -rf "$dir"
    "$python" -m venv "$dir"
  fi
  log "installing $requirements into $dir"
  "$dir/bin/python" -m pip install --quiet --disable-pip-version-check -r "$requirements"
  printf '%s\n' "$want" >"$stamp"
}

# 1. Python 3.11: memu-py 0.1.8 (what Open-LLM-VTuber PR #272 pins) and the real memu-server.
if ! python311=$(find_python 3.11 python3.11 /root/.pyenv/versions/3.11.*/bin/python3.11 python3); then
  log "python3.11 not found: it is required (memu-py 0.1.8 and memu-server)" >&2
  exit 1
fi
ensure_venv "$VENV_311" "$python311" 3.11 "$REQUIREMENTS_311" memu.server pytest trustme

# 2. Python 3.12, optional: memu-py 0.2.2, the /api/v2 SDK.
if python312=$(find_python 3.12 /root/.pyenv/versions/3.12.*/bin/python3.12 python3.12); then
  ensure_venv "$VENV_312" "$python312" 3.12 "$REQUIREMENTS_312" memu.sdk pytest
else
  python312=
  log "python3.12 not available: skipping memu-py 0.2.2 (/api/v2) scenarios"
fi

# 3. Python 3.11, its own venv: memu-cli 0.10.0 (the cloud v4 client).
ensure_venv "$VENV_CLI" "$python311" 3.11 "$REQUIREMENTS_CLI" memu.cloud pytest trustme

# 4. The proxy, built the normal way; cargo metadata knows the target dir (CARGO_TARGET_DIR or config).
log "building the proxy: cargo build --release"
cargo build --release
target_dir=$(cargo metadata --format-version 1 --no-deps \
  | "$VENV_311/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
export MEMU_PROXY_BIN=$target_dir/release/memu-proxy
log "MEMU_PROXY_BIN=$MEMU_PROXY_BIN"

# 5. The suites. pytest exit status 5 means "no tests selected", fine when extra args filter.
status=0
run_pytest() {
  local rc=0
  "$@" || rc=$?
  if ((rc == 5 && filtered)); then rc=0; fi
  if ((rc != 0)); then status=$rc; fi
}
filtered=$(($# > 0))
log "memu-py 0.1.8 scenarios (Python 3.11, real memu-server over http and https) and cloud v3 replay (https stand-in)"
run_pytest "$VENV_311/bin/python" -m pytest -q e2e/ "$@"
if [[ -n $python312 ]]; then
  log "memu-py 0.2.2 (/api/v2) scenarios (Python 3.12, stand-in upstream)"
  run_pytest "$VENV_312/bin/python" -m pytest -q e2e/test_sdk_v2.py "$@"
fi
log "memu-cli 0.10.0 cloud v4 scenarios (Python 3.11, https stand-in)"
run_pytest "$VENV_CLI/bin/python" -m pytest -q e2e/test_cloud_v4.py "$@"
log "finished in $((SECONDS - started))s (exit status $status)"
exit "$status"
