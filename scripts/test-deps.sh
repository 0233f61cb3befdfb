#!/usr/bin/env bash
# Installs what the test suite needs when it is missing: the wasm32-wasip2
# target and the Debian packages of the real peers (PBX stand-in, SIP phones,
# CardDAV server, browser). Safe to run repeatedly; does nothing when all is there.
set -euo pipefail

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "==> rustup target add wasm32-wasip2"
  rustup target add wasm32-wasip2
fi

# command-or-file the package provides -> Debian package
declare -A need=(
  [/usr/sbin/kamailio]=kamailio
  [/usr/lib/x86_64-linux-gnu/kamailio/modules/presence.so]=kamailio-presence-modules
  [/usr/bin/sipp]=sip-tester
  [/usr/bin/baresip]=baresip
  [/usr/bin/radicale]=radicale
  [/usr/bin/chromium]=chromium
  [/usr/bin/chromedriver]=chromium-driver
  [/usr/bin/wrk]=wrk
)
missing=()
for path in "${!need[@]}"; do
  [ -e "$path" ] || missing+=("${need[$path]}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Tryton (the ERP the `tryton` connector is tested against) from PyPI into a
# venv under target/, pinned to the 7.0 LTS series; the tests build their
# SQLite database from it. Needs python3 with venv (Debian: python3-venv).
TRYTON_VENV="$(cd "$(dirname "$0")/.." && pwd)/target/py/tryton"
if [ ! -x "$TRYTON_VENV/bin/trytond" ]; then
  echo "==> python3 -m venv $TRYTON_VENV; pip install trytond trytond-party (7.0)"
  python3 -m venv "$TRYTON_VENV"
  "$TRYTON_VENV/bin/pip" install --quiet "trytond==7.0.59" "trytond-party==7.0.8" "trytond-country==7.0.1"
fi

# The guest toolchains of Python and JavaScript connectors (`leansync plugin
# new --lang python|js`), pinned: componentize-py (one self-contained wheel
# with its own CPython) into a venv, componentize-js (with jco) from npm.
# The tests put both bin folders on PATH; nothing is installed globally.
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY_GUEST="$ROOT/target/guest-tools/py"
if [ ! -x "$PY_GUEST/bin/componentize-py" ]; then
  echo "==> python3 -m venv $PY_GUEST; pip install componentize-py==0.25.1"
  python3 -m venv "$PY_GUEST"
  "$PY_GUEST/bin/pip" install --quiet "componentize-py==0.25.1"
fi
JS_GUEST="$ROOT/target/guest-tools/js"
if [ ! -x "$JS_GUEST/node_modules/.bin/componentize-js" ]; then
  echo "==> npm install --prefix $JS_GUEST @bytecodealliance/componentize-js@0.23.0"
  mkdir -p "$JS_GUEST"
  npm install --silent --no-audit --no-fund --prefix "$JS_GUEST" "@bytecodealliance/componentize-js@0.23.0" >/dev/null
fi
