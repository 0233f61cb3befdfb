#!/usr/bin/env bash
# Runs the whole test suite on a fresh machine: installs what the tests need
# (wasm32-wasip2 target, Debian packages of the real peers), builds the
# connectors and test plugins, then runs every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/test-deps.sh
# A one-shot build gains nothing from incremental caches, which would more than
# double the size of target/ (a full disk broke a CI run). Developers who
# rebuild often can set CARGO_INCREMENTAL=1.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
./scripts/build-plugins.sh
cargo build --locked --workspace --all-targets
cargo test --locked --workspace "$@"
