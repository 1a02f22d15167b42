#!/usr/bin/env bash
# Runs the performance comparison: installs what it needs (nginx, wrk and redis-server from Debian, the
# official twilio npm package and msgpack-rpc-lite outside the repository), then
# `cargo bench --bench compare`. The table is printed and written to target/bench-compare.md.
# `benches/run.sh storm` runs the login storm instead (target/bench-storm.md); it needs only
# the npm packages.
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:-compare}
export OTP_SIDECAR_BENCH_DIR=${OTP_SIDECAR_BENCH_DIR:-$HOME/.cache/otp-sidecar-bench}
if [ "$bench" = compare ] && { ! command -v nginx >/dev/null || ! command -v wrk >/dev/null || ! command -v redis-server >/dev/null; }; then
  apt-get update -qq && apt-get install -y -qq nginx-light wrk redis-server
fi
mkdir -p "$OTP_SIDECAR_BENCH_DIR"
if [ ! -d "$OTP_SIDECAR_BENCH_DIR/node_modules/twilio" ]; then
  (cd "$OTP_SIDECAR_BENCH_DIR" &&
    { [ -f package.json ] || echo '{"name":"otp-sidecar-bench","private":true}' > package.json; } &&
    npm install --no-audit --no-fund --loglevel=error twilio@6.2.0 msgpack-rpc-lite@1.0.2)
fi
cargo bench --bench "$bench"
