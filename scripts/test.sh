#!/usr/bin/env bash
# Runs every test of the project: formatting, lints, Rust unit and black-box tests, and the conformance
# suites that drive the real binary with the official SDKs. Installs or starts what they need.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# Build folders outside the clone so that repeated CI runs on one machine build incrementally.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchyard/target}"
export SWITCHYARD_HOME="${SWITCHYARD_HOME:-$HOME/.cache/switchyard/home}"
venv="${SWITCHYARD_VENV:-$HOME/.cache/switchyard/venv}"
mkdir -p "$CARGO_TARGET_DIR" "$SWITCHYARD_HOME"

say "system packages"
"$root/scripts/install-build-deps.sh"

say "python clients (tests/requirements.txt)"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
req_stamp="$venv/.requirements.sha256"
want=$(sha256sum tests/requirements.txt | cut -d' ' -f1)
if [ "$(cat "$req_stamp" 2>/dev/null)" != "$want" ]; then
  "$venv/bin/pip" install -q --disable-pip-version-check -r tests/requirements.txt
  echo "$want" > "$req_stamp"
fi

say "node clients (tests/node/package.json)"
if command -v npm >/dev/null 2>&1; then
  (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
else
  printf '\033[1;33m!!! npm is not installed: the Node SDK conformance test WILL SKIP\033[0m\n'
fi

say "postgres and redis (the shared-state suite)"
# The servers on this machine when they run (started when installed but stopped); without them the
# shared-state tests say loudly that they skipped.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
if [ -z "${DATABASE_URL:-}" ]; then
  if ! port_open 5432 && command -v service >/dev/null 2>&1; then
    service postgresql start >/dev/null 2>&1 || true
    sleep 2
  fi
  if port_open 5432; then
    export DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
  fi
fi
if [ -z "${REDIS_URL:-}" ]; then
  if ! port_open 6379 && command -v redis-server >/dev/null 2>&1; then
    redis-server --daemonize yes --save "" --appendonly no >/dev/null 2>&1 || true
    sleep 1
  fi
  if port_open 6379; then
    export REDIS_URL="redis://127.0.0.1:6379"
  fi
fi
if [ -n "${DATABASE_URL:-}" ] && [ -n "${REDIS_URL:-}" ]; then
  echo "DATABASE_URL and REDIS_URL set: the shared-state suite runs"
else
  printf '\033[1;33m!!! Postgres or Redis is not reachable: the shared-state suite (tests/shared_state.rs) WILL SKIP\033[0m\n'
fi

say "format and lints"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings

say "build"
cargo build --workspace --all-targets --locked
export SWITCHYARD_BIN="$CARGO_TARGET_DIR/debug/switchyard"
export MOCK_UPSTREAM_BIN="$CARGO_TARGET_DIR/debug/mock-upstream"

say "default models"
"$SWITCHYARD_BIN" pull --defaults

say "rust tests (unit, property, black-box)"
cargo nextest run --workspace --locked --no-fail-fast

say "conformance: official SDKs against the real binary"
"$venv/bin/python" -m pytest -q tests/conformance "$@"

say "benchmark harness (smoke: a few seconds, debug build, no figures)"
./bench/run.sh --smoke

say "all tests passed"
