#!/bin/sh
# otp-sidecar: a BIG-IP LTM external monitor for a pool of off-box otp-sidecar daemons.
#
# A plain `tcp` monitor marks a TLS member up as soon as it accepts a connection; this one asks
# the daemon itself: `otp-sidecar ping` over TLS (mutual TLS when a client certificate is
# given), which needs a TLS handshake the member's certificate passes and an RPC answer.
#
# How bigd runs it (F5 DevCentral, "A Brief Introduction To External Application Verification
# Monitors" and "LTM External Monitors: Troubleshooting"): $1 is the pool member's address,
# an IPv4 one in IPv6-mapped form (::ffff:192.0.2.10), $2 its port; the member is up when the
# script prints anything on stdout and down when it prints nothing (its exit status does not
# count, stderr is ignored). The monitor's user-defined variables reach it as environment
# variables:
#
#   OTP_SIDECAR_BIN   the otp-sidecar binary (default: otp-sidecar on PATH)
#   TLS_CA            the CA that signed the daemons' certificates (PEM); required
#   TLS_SERVER_NAME   the name their certificates carry (default: the member's address)
#   TLS_CLIENT_CERT   with TLS_CLIENT_KEY: the client certificate the daemons' --tls-client-ca
#   TLS_CLIENT_KEY    signed (mutual TLS)
#   TIMEOUT_MS        how long one ping may take (default 2000; keep it under the monitor's
#                     interval)
#   DOWN_WHEN_DEGRADED  1: also mark a member down when its daemon answers but its last
#                     exchange with Twilio failed (ping's exit 1). Default 0: a daemon that
#                     answers is up, as every member would otherwise go down together when
#                     Twilio does.
#
# `ping` needs no caller token. Nothing here prints a secret: ping's own output is dropped.

addr=${1#::ffff:}
port=$2
if [ -z "$addr" ] || [ -z "$port" ] || [ -z "$TLS_CA" ]; then
    echo "otp_sidecar_monitor: needs the member's address and port, and TLS_CA" >&2
    exit 1
fi
case $addr in
    *:*) target="[$addr]:$port" ;;
    *) target="$addr:$port" ;;
esac

set -- ping --tcp "$target" --timeout-ms "${TIMEOUT_MS:-2000}" --tls-ca "$TLS_CA"
if [ -n "$TLS_SERVER_NAME" ]; then
    set -- "$@" --tls-server-name "$TLS_SERVER_NAME"
fi
if [ -n "$TLS_CLIENT_CERT" ]; then
    set -- "$@" --tls-client-cert "$TLS_CLIENT_CERT" --tls-client-key "$TLS_CLIENT_KEY"
fi

"${OTP_SIDECAR_BIN:-otp-sidecar}" "$@" >/dev/null 2>&1
status=$?
if [ "$status" -eq 0 ] || { [ "$status" -eq 1 ] && [ "${DOWN_WHEN_DEGRADED:-0}" != 1 ]; }; then
    echo "up"
fi
exit 0
