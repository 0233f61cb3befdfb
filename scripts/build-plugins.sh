#!/usr/bin/env bash
# Builds the bundled connectors (plugins/) and the test plugins
# (tests/plugins/) for wasm32-wasip2 and places each component next to its
# plugin.toml, the layout the host loads. A no-op on an unchanged tree.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "==> rustup target add wasm32-wasip2"
  rustup target add wasm32-wasip2
fi

# The three guest workspaces share one target directory, so their common
# dependencies (wit-bindgen, serde, ...) are built and stored once.
GUEST_TARGET="${LEANSYNC_GUEST_TARGET:-$PWD/target/guests}"

build() { # workspace dir, then the glob of its plugin manifests
  local ws=$1 pattern=$2
  echo "==> building $ws (wasm32-wasip2, release)"
  (cd "$ws" && CARGO_TARGET_DIR="$GUEST_TARGET" cargo build --locked --quiet --target wasm32-wasip2 --release)
  for manifest in $pattern; do
    local dir name component crate src
    dir=$(dirname "$manifest")
    name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$manifest" | head -1)
    component=$(sed -n 's/^component *= *"\(.*\)"/\1/p' "$manifest" | head -1)
    crate=$(basename "$dir" | tr '-' '_')
    src="$GUEST_TARGET/wasm32-wasip2/release/$crate.wasm"
    if [ ! -f "$src" ]; then
      echo "error: $src was not built for plugin $name" >&2
      exit 1
    fi
    # Copy only when changed, so a running host's hot reload sees real changes only.
    if ! cmp -s "$src" "$dir/$component"; then
      cp "$src" "$dir/$component.tmp" && mv "$dir/$component.tmp" "$dir/$component"
    fi
    printf '    %-20s %s (%s bytes)\n' "$name" "$dir/$component" "$(stat -c %s "$dir/$component")"
  done
}

build plugins 'plugins/*/plugin.toml'
build tests/plugins 'tests/plugins/*/plugin.toml'
build examples/hello-connector 'examples/hello-connector/plugin.toml'
