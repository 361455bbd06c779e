#!/usr/bin/env bash
# Builds (release) and starts Switchyard. With no arguments it serves the embedded default models
# (chat, completion, embeddings), fetching them into $SWITCHYARD_HOME on first start.
# Any arguments go to `switchyard serve` (for example `--config switchyard.toml`).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-build-deps.sh >/dev/null
cargo build --release --locked -p switchyard
exec "${CARGO_TARGET_DIR:-target}/release/switchyard" serve "$@"
