#!/usr/bin/env sh
# Starts Azurite's table service on 127.0.0.1 (port 10002 unless PORT is set),
# installing the pinned version in this folder first when it is missing or
# when an earlier install did not finish (npm writes its hidden lockfile last).
# Data lives in memory; pass --location DIR to keep it on disk instead.
# (The Rust launcher, durable_status::emulator, installs its own copy of this
# recipe in a per-user cache folder instead; see its docs.)
set -eu
cd "$(dirname "$0")"
if [ ! -f node_modules/azurite/dist/src/table/main.js ] || [ ! -f node_modules/.package-lock.json ]; then
  echo "Installing the pinned Azurite (npm ci)..." >&2
  npm ci --no-audit --no-fund >&2
fi
exec node table-server.js --port "${PORT:-10002}" "$@"
