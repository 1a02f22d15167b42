#!/usr/bin/env bash
# Installs the third-party clients the tests use as witnesses (pynvim, msgpack-rpc-lite)
# and the Prism mock for the OpenAPI conformance test, outside the repository.
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
echo "witnesses ready in $dir"
