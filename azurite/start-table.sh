#!/usr/bin/env sh
# Starts Azurite's table service on 127.0.0.1 (port 10002 unless PORT is set),
# installing the pinned version first when it is missing.
# Data lives in memory; pass --location DIR to keep it on disk instead.
set -eu
cd "$(dirname "$0")"
if [ ! -f node_modules/azurite/dist/src/table/main.js ]; then
  echo "Installing the pinned Azurite (npm ci)..." >&2
  npm ci --no-audit --no-fund >&2
fi
exec node table-server.js --port "${PORT:-10002}" "$@"
