#!/usr/bin/env bash
# Builds the bundled connectors and runs the host on its embedded defaults:
# SQLite in ./data, simulated telephony, plugins from ./plugins, on
# http://127.0.0.1:8080. Extra arguments go to `leansync serve`.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/build-plugins.sh
exec cargo run --release --locked -p leansync-host --bin leansync -- serve "$@"
