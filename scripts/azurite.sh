#!/bin/sh
# Run Azurite's blob service locally without Docker, the same release the tests use.
#
#   scripts/azurite.sh [PORT]        (default 10000; data in ./.azurite)
#
# Then use CDC_STORAGE_CONNECTION_STRING=UseDevelopmentStorage=true (port 10000) or
#   DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=<well-known key>;BlobEndpoint=http://127.0.0.1:PORT/devstoreaccount1;
# The handler pins x-ms-version 2025-11-05, which this release accepts, so no
# --skipApiVersionCheck is needed. AZURITE_BIN overrides the binary.
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
port=${1:-10000}
version=3.37.0
bin=${AZURITE_BIN:-}
if [ -z "$bin" ]; then
  if [ -x "$root/node_modules/.bin/azurite-blob" ]; then
    bin="$root/node_modules/.bin/azurite-blob"
  else
    prefix="$root/.azurite-npm"
    bin="$prefix/node_modules/.bin/azurite-blob"
    mkdir -p "$prefix"
    # Same lock as the test harness (tests/common/azurite.rs).
    flock "$prefix/.install.lock" sh -c "test -x '$bin' || npm install --no-save --no-audit --no-fund --loglevel=error --prefix '$prefix' azurite@$version"
  fi
fi
mkdir -p "$root/.azurite"
exec "$bin" --blobHost 127.0.0.1 --blobPort "$port" --location "$root/.azurite" --loose --disableTelemetry
