#!/usr/bin/env bash
# otp-sidecar's boot hook on a BIG-IP host: /config/startup runs it at every boot (install.sh
# adds that one line). A software upgrade boots a new volume that keeps /config and /shared and
# nothing else, so this recreates what lives elsewhere — the otp-sidecar user and group, the
# systemd unit and its enablement, the socket's folder — and starts the service. After a plain
# reboot everything is still there and it changes nothing; run twice, the second run changes
# nothing either.
#     /shared/otp-sidecar/current/boot.sh             at boot: recreate, then start
#     /shared/otp-sidecar/current/boot.sh --prepare   recreate only (install.sh uses this)
# DESTDIR=/some/root runs it against a staging root (user and group only where that root has
# an /etc/passwd). install.sh sources this file for the functions below.
# Bash 4.2 (CentOS 7): no empty "${array[@]}" under set -u.

otp_root=${DESTDIR:-}
otp_home=/shared/otp-sidecar
otp_units=/etc/systemd/system
otp_config=/config/otp-sidecar/otp-sidecar.toml

otp_say() {
  echo "otp-sidecar: $*"
  if [ -z "$otp_root" ] && command -v logger >/dev/null 2>&1; then
    logger -t otp-sidecar-boot -- "$*" 2>/dev/null || true
  fi
}

# systemctl; nothing in a staging root, nor where systemd is not running (a container).
otp_systemctl() {
  [ -z "$otp_root" ] || return 0
  if [ -d /run/systemd/system ]; then
    systemctl "$@"
  else
    otp_say "systemd is not running here; skipped: systemctl $*"
  fi
}

# The host's systemd version (OTP_SIDECAR_SYSTEMD_VERSION chooses for another host), or unknown.
otp_systemd_version() {
  local v=${OTP_SIDECAR_SYSTEMD_VERSION:-}
  if [ -z "$v" ] && command -v systemctl >/dev/null 2>&1; then
    v=$(systemctl --version 2>/dev/null | head -1 | awk '{ print $2 }')
  fi
  case $v in
    '' | *[!0-9]*) echo unknown ;;
    *) echo "$v" ;;
  esac
}

# Before 247 (BIG-IP's host runs 219): no LoadCredential=, so the legacy unit.
otp_legacy() {
  local v
  v=$(otp_systemd_version)
  [ "$v" != unknown ] && [ "$v" -lt 247 ]
}

otp_unit_file() {
  if otp_legacy; then echo otp-sidecar.service.systemd219; else echo otp-sidecar.service; fi
}

otp_has() { # group|passwd NAME: in the root's own files when staged, else as the system sees it
  if [ -n "$otp_root" ]; then
    grep -q "^$2:" "$otp_root/etc/$1" 2>/dev/null
  else
    getent "$1" "$2" >/dev/null 2>&1
  fi
}

otp_id() { # group|passwd NAME: its number
  if [ -n "$otp_root" ]; then
    awk -F: -v n="$2" '$1 == n { print $3 }' "$otp_root/etc/$1" 2>/dev/null
  else
    getent "$1" "$2" 2>/dev/null | cut -d: -f3
  fi
}

otp_id_free() { # group|passwd NUMBER
  if [ -n "$otp_root" ]; then
    ! awk -F: -v n="$2" '$3 == n { found = 1 } END { exit !found }' "$otp_root/etc/$1"
  else
    ! getent "$1" "$2" >/dev/null 2>&1
  fi
}

# The otp-sidecar system user and group (a staging root without /etc/passwd gets none). The
# numbers they had are remembered in $otp_home/ids and taken again when free: the secrets in
# /config/otp-sidecar belong to them. When a new BIG-IP version took them, the files that
# belonged to the old numbers are handed to the new ones.
otp_ensure_user() {
  if [ -n "$otp_root" ] && [ ! -e "$otp_root/etc/passwd" ]; then return 0; fi
  local ids=$otp_root$otp_home/ids old_uid= old_gid= uid gid
  [ ! -s "$ids" ] || read -r old_uid old_gid <"$ids" || true
  if ! otp_has group otp-sidecar; then
    if [ -n "$old_gid" ] && otp_id_free group "$old_gid"; then
      groupadd ${otp_root:+"--root=$otp_root"} --system --gid "$old_gid" otp-sidecar
    else
      groupadd ${otp_root:+"--root=$otp_root"} --system otp-sidecar
    fi
  fi
  if ! otp_has passwd otp-sidecar; then
    if [ -n "$old_uid" ] && otp_id_free passwd "$old_uid"; then
      useradd ${otp_root:+"--root=$otp_root"} --system --uid "$old_uid" --gid otp-sidecar \
        --no-create-home --home-dir /nonexistent --shell /sbin/nologin otp-sidecar
    else
      useradd ${otp_root:+"--root=$otp_root"} --system --gid otp-sidecar \
        --no-create-home --home-dir /nonexistent --shell /sbin/nologin otp-sidecar
    fi
  fi
  uid=$(otp_id passwd otp-sidecar) gid=$(otp_id group otp-sidecar)
  if [ -d "$otp_root/config/otp-sidecar" ]; then
    if [ -n "$old_uid" ] && [ "$old_uid" != "$uid" ]; then
      find "$otp_root/config/otp-sidecar" -xdev -uid "$old_uid" -exec chown -h "$uid" {} +
    fi
    if [ -n "$old_gid" ] && [ "$old_gid" != "$gid" ]; then
      find "$otp_root/config/otp-sidecar" -xdev -gid "$old_gid" -exec chgrp -h "$gid" {} +
    fi
  fi
  if [ -d "$otp_root$otp_home" ] && [ "$(cat "$ids" 2>/dev/null)" != "$uid $gid" ]; then
    printf '%s %s\n' "$uid" "$gid" >"$ids"
  fi
}

# The config's unix_group (the group the daemon gives its socket, e.g. the ILX Node user's),
# which the service needs among its groups to hand the socket over.
otp_unix_group() {
  sed -nE 's/^[[:space:]]*unix_group[[:space:]]*=[[:space:]]*"([^"]+)".*/\1/p' \
    "$otp_root$otp_config" 2>/dev/null | tail -1
}

# The unit for this host, pointing at the `current` release under $otp_home.
otp_render_unit() { # RELEASE_DIR
  local group
  group=$(otp_unix_group)
  sed -e "s|/usr/local/bin/otp-sidecar|$otp_home/current/bin/otp-sidecar|g" \
    -e "s|^Documentation=.*|Documentation=file:$otp_home/current/docs/deploy-bigip.md|" \
    ${group:+-e "/^Group=/a SupplementaryGroups=$group"} \
    "$1/systemd/$(otp_unit_file)"
}

# Writes the unit when it differs and enables it; prints "changed" when it wrote anything.
otp_ensure_unit() { # RELEASE_DIR
  local unit=$otp_root$otp_units/otp-sidecar.service
  local wants=$otp_root$otp_units/multi-user.target.wants
  local new changed=
  new=$(mktemp)
  otp_render_unit "$1" >"$new"
  if ! cmp -s "$new" "$unit"; then
    install -d "$otp_root$otp_units"
    install -m 0644 "$new" "$unit"
    changed=changed
  fi
  rm -f "$new"
  if [ "$(readlink "$wants/otp-sidecar.service" 2>/dev/null)" != ../otp-sidecar.service ]; then
    install -d "$wants"
    ln -sfn ../otp-sidecar.service "$wants/otp-sidecar.service"
    changed=changed
  fi
  echo "$changed"
}

# The socket's folder (systemd's RuntimeDirectory= makes it too at each start; /run is a tmpfs).
otp_ensure_run_dir() {
  [ ! -d "$otp_root/run/otp-sidecar" ] || return 0
  if otp_has passwd otp-sidecar; then
    install -d -o "$(otp_id passwd otp-sidecar)" -g "$(otp_id group otp-sidecar)" -m 0750 \
      "$otp_root/run/otp-sidecar"
  fi
}

otp_boot_main() {
  set -euo pipefail
  local start=yes release=$otp_root$otp_home/current changed
  [ "${1:-}" != --prepare ] || start=no
  if [ ! -x "$release/bin/otp-sidecar" ]; then
    otp_say "no release at $otp_home/current: nothing to do"
    return 0
  fi
  otp_ensure_user
  changed=$(otp_ensure_unit "$release")
  otp_ensure_run_dir
  [ -z "$changed" ] || otp_systemctl daemon-reload
  if [ "$start" = yes ]; then
    # --no-block: /config/startup must not wait for the service to be ready.
    otp_systemctl start --no-block otp-sidecar.service
    otp_say "started $(cat "$release/VERSION" 2>/dev/null || echo '(unknown version)')"
  fi
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  otp_boot_main "$@"
fi
