#!/usr/bin/env bash
# Measures the gap a login sees while otp-sidecar restarts (an upgrade, a rollback): pings the
# daemon's socket every 10 ms while RESTART runs, and prints how long no ping was answered.
#     otp-sidecar-restart-gap.sh [SOCKET] [RESTART COMMAND...]
# Defaults: /run/otp-sidecar/otp.sock and `systemctl restart otp-sidecar`. Sends nothing to
# Twilio (ping only). On BIG-IP: /shared/otp-sidecar/current/otp-sidecar-restart-gap.sh
set -euo pipefail
sock=${1:-/run/otp-sidecar/otp.sock}
shift || true
[ $# -gt 0 ] || set -- systemctl restart otp-sidecar
bin=${OTP_SIDECAR_BIN:-$(cd "$(dirname "$0")" && pwd)/bin/otp-sidecar}
now_ms() { date +%s%3N; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT
(
  end=$(($(now_ms) + 20000))
  while [ "$(now_ms)" -lt "$end" ] && [ ! -e "$log.stop" ]; do
    if "$bin" ping --unix "$sock" --timeout-ms 1000 >/dev/null 2>&1; then echo "$(now_ms) ok"; else echo "$(now_ms) down"; fi
    sleep 0.01
  done >"$log"
) &
pinger=$!
sleep 0.5
started=$(now_ms)
"$@"
restarted=$(now_ms)
sleep 1
touch "$log.stop"
wait "$pinger"
rm -f "$log.stop"
awk -v s="$started" -v r="$restarted" '
  $2 == "down" { if (!first) first = $1; last = $1; n++ }
  END {
    printf "restart command took %d ms\n", r - s
    if (n) printf "no answer for %d ms (%d pings failed, %d ms to %d ms after the restart began)\n", last - first, n, first - s, last - s
    else print "every ping was answered"
  }' "$log"
