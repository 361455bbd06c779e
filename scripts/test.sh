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

say "all tests passed"
