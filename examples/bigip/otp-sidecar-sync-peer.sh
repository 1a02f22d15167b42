#!/usr/bin/env bash
# Copies otp-sidecar from this BIG-IP to its HA peer and checks it there. ConfigSync carries
# the iRules and the ILX plugin but none of these files: the release in /shared/otp-sidecar,
# the config and secrets in /config/otp-sidecar. Run as root on the unit that has them:
#     /shared/otp-sidecar/current/sync-peer.sh PEER [--restart]
# PEER is what ssh reaches the other unit by (its management address); root's ssh to it must
# work without a password prompt (a key). In order: the current release goes to
# /var/tmp/otp-sidecar-sync on the peer and its install.sh runs there (user, group, unit, the
# /config/startup line: what a fresh install does); then /config/otp-sidecar is copied with
# its owners and modes; then `otp-sidecar check` runs there as the service user. --restart
# restarts the peer's service afterwards (it is started by then if it was not running).
# OTP_SIDECAR_SSH replaces "ssh -o BatchMode=yes" (the tests use a stand-in that runs the
# command in another root).
set -euo pipefail
peer=${1:?usage: sync-peer.sh PEER [--restart]}
restart=${2:-}
ssh=${OTP_SIDECAR_SSH:-ssh -o BatchMode=yes}
home=${DESTDIR:-}/shared/otp-sidecar
version=$(readlink "$home/current") || { echo "sync-peer: no $home/current here" >&2; exit 1; }
on_peer() { $ssh "$peer" "$1"; }

echo "sync-peer: release $version to $peer"
tar -C "$home" -cf - "$version" |
  on_peer "rm -rf /var/tmp/otp-sidecar-sync && mkdir -p /var/tmp/otp-sidecar-sync && tar -C /var/tmp/otp-sidecar-sync -xf -"
on_peer "/var/tmp/otp-sidecar-sync/$version/install.sh && rm -rf /var/tmp/otp-sidecar-sync"

echo "sync-peer: /config/otp-sidecar (config and secrets) to $peer"
# By owner name: the peer's otp-sidecar user may have another uid.
tar -C "${DESTDIR:-}/config" -cf - otp-sidecar |
  on_peer "tar -C /config --same-owner --same-permissions -xf -"

echo "sync-peer: check on $peer"
on_peer "runuser -u otp-sidecar -- /shared/otp-sidecar/current/bin/otp-sidecar check --config /config/otp-sidecar/otp-sidecar.toml"
if [ "$restart" = --restart ]; then
  on_peer "systemctl restart otp-sidecar.service"
  echo "sync-peer: otp-sidecar restarted on $peer"
fi
