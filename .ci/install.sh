#!/usr/bin/env bash
# Installs an otp-sidecar release on the host it runs on (a BIG-IP's Linux host, or any
# systemd machine), switches between installed releases, and removes it. As root:
#     ./install.sh                    install this release folder's release (keeps the config)
#     ./install.sh rollback [VERSION] back to the release before (or VERSION), restarted
#     ./install.sh uninstall [--purge] remove what install added (--purge: /config/otp-sidecar too)
#     DESTDIR=/tmp/root ./install.sh  stage into a folder instead (for checking the package)
#
# Two layouts. On a BIG-IP host (its /VERSION says "Product: BIG-IP"; OTP_SIDECAR_LAYOUT=bigip
# or =linux overrides the guess) nothing goes under /usr, which is read-only there, and only
# /config and /shared survive a software upgrade:
#     /shared/otp-sidecar/VERSION/       each release, side by side (bin/, systemd/, boot.sh …)
#     /shared/otp-sidecar/current        link to the running one; `previous` to the one before
#     /config/otp-sidecar/               the config and the secrets (in the UCS archive)
#     /config/startup                    one added line: /shared/otp-sidecar/current/boot.sh
#     /etc/systemd/system/otp-sidecar.service, the otp-sidecar user and group: made by boot.sh,
#                                        again at every boot (an upgrade leaves them behind)
# Anywhere else: /usr/local/bin/otp-sidecar, /usr/local/share/{otp-sidecar,doc/otp-sidecar},
# the unit in /etc/systemd/system, the config in /config/otp-sidecar.
# The unit is chosen by the host's systemd (`systemctl --version`, or
# OTP_SIDECAR_SYSTEMD_VERSION=219 to choose for another host): 247 and newer get
# otp-sidecar.service (secrets through LoadCredential=) and otp-sidecar.socket; older ones
# (BIG-IP's host runs 219) get otp-sidecar.service.systemd219 as otp-sidecar.service, and a new
# config that names the secret files in its [credentials] table.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# The functions shared with the boot hook (otp_root, otp_home, otp_legacy, otp_systemctl …).
# shellcheck source=../examples/bigip/otp-sidecar-boot.sh
. "$here/boot.sh"
root=$otp_root
config=$root$otp_config
startup=$root/config/startup
startup_line="$otp_home/current/boot.sh  # otp-sidecar: recreates its user and unit after an upgrade"

layout=${OTP_SIDECAR_LAYOUT:-}
if [ -z "$layout" ]; then
  if grep -qs '^Product: *BIG-IP' "$root/VERSION"; then layout=bigip; else layout=linux; fi
fi
case $layout in bigip | linux) ;; *) echo "install.sh: OTP_SIDECAR_LAYOUT is bigip or linux" >&2; exit 2 ;; esac
systemd_version=$(otp_systemd_version)
if otp_legacy; then legacy=yes; else legacy=no; fi

release_version() { # DIR
  if [ -s "$1/VERSION" ]; then cat "$1/VERSION"; else "$1/bin/otp-sidecar" --version | cut -d' ' -f2; fi
}

active() { # is the service running (as far as systemd says)?
  [ -z "$root" ] && [ -d /run/systemd/system ] || return 1
  systemctl is-active --quiet otp-sidecar.service 2>/dev/null
}

# The config: root:otp-sidecar 0640, so the service (User=otp-sidecar) reads it and cannot
# change it. An existing one is kept; one that an older install.sh left root:root is handed
# to the group.
install_config() {
  local group_ok=no new
  if [ "$(id -u)" = 0 ] && otp_has group otp-sidecar; then group_ok=yes; fi
  install -d "$root/config/otp-sidecar"
  if [ ! -e "$config" ]; then
    new=$(mktemp)
    if [ "$legacy" = yes ]; then # no LoadCredential=: the files are named in [credentials]
      sed -E 's/^# ((account_sid|api_key|api_secret)_file = )/\1/' "$here/otp-sidecar.toml" >"$new"
    else
      cp "$here/otp-sidecar.toml" "$new"
    fi
    install -m 0640 "$new" "$config"
    rm -f "$new"
    [ "$group_ok" = no ] || chgrp otp-sidecar "$config"
  elif [ "$group_ok" = yes ] && [ "$(stat -c %G "$config")" = root ]; then
    chgrp otp-sidecar "$config"
    chmod g+r,o-rwx "$config"
    echo "install.sh: $config is now group otp-sidecar (the service could not read it)"
  fi
}

# /config/startup runs the boot hook: the line is added once, after whatever is there.
add_startup_line() {
  if [ ! -e "$startup" ]; then
    install -d "$root/config"
    printf '#!/bin/sh\n' >"$startup"
    chmod 0755 "$startup"
    : >"$root$otp_home/.startup-created" # so uninstall removes the file it made
  fi
  grep -qxF "$startup_line" "$startup" && return 0
  # A last line without its newline must not swallow ours (uninstall takes the newline back).
  if [ -s "$startup" ] && [ -n "$(tail -c1 "$startup")" ]; then
    printf '\n' >>"$startup"
    : >"$root$otp_home/.startup-newline-added"
  fi
  printf '%s\n' "$startup_line" >>"$startup"
}

remove_startup_line() {
  [ -e "$startup" ] || return 0
  if [ -e "$root$otp_home/.startup-created" ] && [ "$(grep -cvxF -e "$startup_line" -e '#!/bin/sh' "$startup")" = 0 ]; then
    rm -f "$startup"
    return 0
  fi
  local kept
  kept=$(mktemp)
  grep -vxF "$startup_line" "$startup" >"$kept" || true
  if [ -e "$root$otp_home/.startup-newline-added" ]; then
    printf '%s' "$(cat "$kept")" >"$startup" # in place: the admin's owner and mode stay
  else
    cat "$kept" >"$startup"
  fi
  rm -f "$kept"
}

# `current` (and `previous`) point at VERSION, atomically.
switch_to() { # VERSION
  local home=$root$otp_home old
  old=$(readlink "$home/current" 2>/dev/null || true)
  if [ -n "$old" ] && [ "$old" != "$1" ]; then
    ln -sfn "$old" "$home/.previous.new" && mv -T "$home/.previous.new" "$home/previous"
  fi
  ln -sfn "$1" "$home/.current.new" && mv -T "$home/.current.new" "$home/current"
}

# After a switch: the unit for the new release, and a restart if the service was running
# (SIGTERM drains: every call in flight is answered before the old process exits).
restart_if_running() { # WAS_ACTIVE
  "$root$otp_home/current/boot.sh" --prepare >/dev/null
  if [ "$1" = yes ]; then
    otp_systemctl restart otp-sidecar.service
    echo "install.sh: otp-sidecar $(release_version "$root$otp_home/current") restarted"
  fi
}

install_bigip() {
  local version home=$root$otp_home dest was=no
  version=$(release_version "$here")
  dest=$home/$version
  ! active || was=yes
  install -d -m 0755 "$home"
  if [ "$(cd "$dest" 2>/dev/null && pwd -P)" != "$(cd "$here" && pwd -P)" ]; then
    rm -rf "$home/.$version.new" "$home/.$version.old"
    cp -a "$here/." "$home/.$version.new"
    [ ! -e "$dest" ] || mv -T "$dest" "$home/.$version.old"
    mv -T "$home/.$version.new" "$dest"
    rm -rf "$home/.$version.old"
  fi
  switch_to "$version"
  add_startup_line
  "$dest/boot.sh" --prepare >/dev/null # the user and group first: the config's group
  install_config
  echo "installed otp-sidecar $version in $otp_home/$version (current) with $(otp_unit_file)" \
    "as otp-sidecar.service (systemd $systemd_version); /config/startup runs its boot hook"
  if [ "$was" = yes ]; then
    otp_systemctl restart otp-sidecar.service
    echo "install.sh: otp-sidecar $version restarted; the release before is $(readlink "$home/previous" 2>/dev/null || echo none)"
  fi
}

install_linux() {
  local was=no
  ! active || was=yes
  otp_ensure_user
  install -d "$root/usr/local/bin" "$root/etc/systemd/system" \
    "$root/usr/local/share/otp-sidecar" "$root/usr/local/share/doc/otp-sidecar"
  install -m 0755 "$here/bin/otp-sidecar" "$root/usr/local/bin/otp-sidecar"
  if [ "$legacy" = yes ]; then
    install -m 0644 "$here/systemd/otp-sidecar.service.systemd219" \
      "$root/etc/systemd/system/otp-sidecar.service"
  else
    install -m 0644 "$here/systemd/otp-sidecar.service" "$here/systemd/otp-sidecar.socket" \
      "$root/etc/systemd/system/"
  fi
  install_config
  cp -R "$here/irules" "$root/usr/local/share/otp-sidecar/"
  # Where the units' Documentation= points.
  install -m 0644 "$here/README.md" "$root/usr/local/share/doc/otp-sidecar/README.md"
  local unit=otp-sidecar.service
  [ "$legacy" = no ] || unit="otp-sidecar.service.systemd219 as otp-sidecar.service"
  echo "installed otp-sidecar $(release_version "$here") with $unit (systemd $systemd_version)"
  if [ "$was" = yes ]; then
    otp_systemctl daemon-reload
    otp_systemctl restart otp-sidecar.service
  fi
}

next_steps() {
  local bin=/usr/local/bin/otp-sidecar
  [ "$layout" = linux ] || bin=$otp_home/current/bin/otp-sidecar
  if [ "$legacy" = no ]; then
    cat <<NEXT
Next: put the Twilio secrets in root-only files (systemd hands them to the service through
LoadCredential=); paste each, then Ctrl-D:
    install -m 0600 -o root -g root /dev/stdin /config/otp-sidecar/account_sid
    install -m 0600 -o root -g root /dev/stdin /config/otp-sidecar/api_key
    install -m 0600 -o root -g root /dev/stdin /config/otp-sidecar/api_secret
edit /config/otp-sidecar/otp-sidecar.toml, then:
    systemctl daemon-reload && systemctl enable --now otp-sidecar
    $bin ping
    (or, for socket activation: systemctl enable --now otp-sidecar.socket)
NEXT
  else
    cat <<NEXT
Next: this systemd has no LoadCredential=, so the service reads the Twilio secrets itself from
the files /config/otp-sidecar/otp-sidecar.toml names; paste each, then Ctrl-D:
    install -m 0400 -o otp-sidecar -g otp-sidecar /dev/stdin /config/otp-sidecar/account_sid
    install -m 0400 -o otp-sidecar -g otp-sidecar /dev/stdin /config/otp-sidecar/api_key
    install -m 0400 -o otp-sidecar -g otp-sidecar /dev/stdin /config/otp-sidecar/api_secret
edit /config/otp-sidecar/otp-sidecar.toml, then:
    runuser -u otp-sidecar -- $bin check --config /config/otp-sidecar/otp-sidecar.toml
    systemctl daemon-reload && systemctl enable --now otp-sidecar
    $bin ping
NEXT
  fi
}

rollback() { # [VERSION]
  [ "$layout" = bigip ] || { echo "install.sh: rollback needs the BIG-IP layout (releases side by side)" >&2; exit 2; }
  local home=$root$otp_home target=${1:-} was=no
  [ -n "$target" ] || target=$(readlink "$home/previous" 2>/dev/null || true)
  if [ -z "$target" ] || [ ! -x "$home/$target/bin/otp-sidecar" ]; then
    echo "install.sh: no release ${target:-before this one} in $otp_home (there: $(cd "$home" && ls -d [0-9]* 2>/dev/null | tr '\n' ' '))" >&2
    exit 1
  fi
  ! active || was=yes
  switch_to "$target"
  echo "install.sh: current is now $target (previous: $(readlink "$home/previous" 2>/dev/null || echo none))"
  restart_if_running "$was"
}

uninstall() { # [--purge]
  local purge=no
  [ "${1:-}" != --purge ] || purge=yes
  otp_systemctl stop otp-sidecar.service otp-sidecar.socket 2>/dev/null || true
  rm -f "$root/etc/systemd/system/otp-sidecar.service" "$root/etc/systemd/system/otp-sidecar.socket" \
    "$root/etc/systemd/system/multi-user.target.wants/otp-sidecar.service" \
    "$root/etc/systemd/system/sockets.target.wants/otp-sidecar.socket"
  rmdir "$root/etc/systemd/system/multi-user.target.wants" "$root/etc/systemd/system/sockets.target.wants" 2>/dev/null || true
  otp_systemctl daemon-reload
  if [ "$layout" = bigip ]; then
    remove_startup_line
    rm -rf "$root$otp_home"
  else
    rm -f "$root/usr/local/bin/otp-sidecar"
    rm -rf "$root/usr/local/share/otp-sidecar" "$root/usr/local/share/doc/otp-sidecar"
  fi
  rm -rf "$root/run/otp-sidecar"
  if [ -z "$root" ] || [ -e "$root/etc/passwd" ]; then
    ! otp_has passwd otp-sidecar || userdel ${root:+"--root=$root"} otp-sidecar
    ! otp_has group otp-sidecar || groupdel ${root:+"--root=$root"} otp-sidecar
  fi
  if [ "$purge" = yes ]; then
    rm -rf "$root/config/otp-sidecar"
    echo "install.sh: otp-sidecar removed, with /config/otp-sidecar"
  else
    echo "install.sh: otp-sidecar removed; /config/otp-sidecar (config and secrets) kept: uninstall --purge removes it"
  fi
}

case ${1:-install} in
  install)
    if [ "$layout" = bigip ]; then install_bigip; else install_linux; fi
    [ -z "$root" ] || exit 0
    active || next_steps
    ;;
  rollback) rollback "${2:-}" ;;
  uninstall) uninstall "${2:-}" ;;
  *) sed -n '2,6p' "$0" >&2; exit 2 ;;
esac
