#!/usr/bin/env bash
# Installs an otp-sidecar release on the host it runs on (a BIG-IP's Linux host, or any
# systemd machine). Run from the unpacked release folder, as root:
#     ./install.sh            install, keep an existing config
#     DESTDIR=/tmp/root ./install.sh   stage into a folder instead (for checking the package)
# The unit is chosen by the host's systemd (`systemctl --version`, or
# OTP_SIDECAR_SYSTEMD_VERSION=219 to choose for another host): 247 and newer get
# otp-sidecar.service (secrets through LoadCredential=) and otp-sidecar.socket; older ones
# (BIG-IP's host runs 219) get otp-sidecar.service.systemd219 as otp-sidecar.service, and a new
# config that names the secret files in its [credentials] table.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=${DESTDIR:-}
config=$root/config/otp-sidecar/otp-sidecar.toml

systemd_version=${OTP_SIDECAR_SYSTEMD_VERSION:-}
if [ -z "$systemd_version" ] && command -v systemctl >/dev/null 2>&1; then
  systemd_version=$(systemctl --version 2>/dev/null | head -1 | awk '{ print $2 }')
fi
case $systemd_version in
  '' | *[!0-9]*) legacy=no systemd_version=unknown ;; # no systemd here: the standard unit
  *) if [ "$systemd_version" -lt 247 ]; then legacy=yes; else legacy=no; fi ;;
esac

# The service's own user and group; the group also reads the config (and shares the socket:
# see the README).
if [ -z "$root" ]; then
  getent group otp-sidecar >/dev/null 2>&1 || groupadd --system otp-sidecar
  if ! id otp-sidecar >/dev/null 2>&1; then
    useradd --system --gid otp-sidecar --no-create-home --home-dir /nonexistent \
      --shell /sbin/nologin otp-sidecar
  fi
fi
# Staged (DESTDIR) installs set the group only where it exists and we may.
group_ok=no
if [ "$(id -u)" = 0 ] && getent group otp-sidecar >/dev/null 2>&1; then group_ok=yes; fi

install -d "$root/usr/local/bin" "$root/etc/systemd/system" "$root/config/otp-sidecar" \
  "$root/usr/local/share/otp-sidecar" "$root/usr/local/share/doc/otp-sidecar"
install -m 0755 "$here/bin/otp-sidecar" "$root/usr/local/bin/otp-sidecar"
if [ "$legacy" = yes ]; then
  install -m 0644 "$here/systemd/otp-sidecar.service.systemd219" \
    "$root/etc/systemd/system/otp-sidecar.service"
else
  install -m 0644 "$here/systemd/otp-sidecar.service" "$here/systemd/otp-sidecar.socket" \
    "$root/etc/systemd/system/"
fi

# The config: root:otp-sidecar 0640, so the service (User=otp-sidecar) reads it and cannot
# change it. An existing one is kept; one that an older install.sh left root:root is handed
# to the group.
if [ ! -e "$config" ]; then
  new=$(mktemp)
  if [ "$legacy" = yes ]; then # no LoadCredential=: the files are named in [credentials]
    sed -E 's/^# ((account_sid|api_key|api_secret)_file = )/\1/' "$here/otp-sidecar.toml" >"$new"
  else
    cp "$here/otp-sidecar.toml" "$new"
  fi
  install -m 0640 "$new" "$config"
  rm -f "$new"
  [ "$group_ok" = no ] || chown root:otp-sidecar "$config"
elif [ "$group_ok" = yes ] && [ "$(stat -c %G "$config")" = root ]; then
  chgrp otp-sidecar "$config"
  chmod g+r,o-rwx "$config"
  echo "install.sh: $config is now group otp-sidecar (the service could not read it)"
fi

cp -R "$here/irules" "$root/usr/local/share/otp-sidecar/"
# Where the units' Documentation= points.
install -m 0644 "$here/README.md" "$root/usr/local/share/doc/otp-sidecar/README.md"

unit=otp-sidecar.service
[ "$legacy" = no ] || unit="otp-sidecar.service.systemd219 as otp-sidecar.service"
echo "installed otp-sidecar $("$root/usr/local/bin/otp-sidecar" --version | cut -d' ' -f2)" \
  "with $unit (systemd $systemd_version)"
[ -z "$root" ] || exit 0
if [ "$legacy" = no ]; then
  cat <<'NEXT'
Next: put the Twilio secrets in root-only files (systemd hands them to the service through
LoadCredential=); paste each, then Ctrl-D:
    install -m 0600 -o root -g root /dev/stdin /config/otp-sidecar/account_sid
    install -m 0600 -o root -g root /dev/stdin /config/otp-sidecar/api_key
    install -m 0600 -o root -g root /dev/stdin /config/otp-sidecar/api_secret
edit /config/otp-sidecar/otp-sidecar.toml, then:
    systemctl daemon-reload && systemctl enable --now otp-sidecar
    otp-sidecar ping
    (or, for socket activation: systemctl enable --now otp-sidecar.socket)
NEXT
else
  cat <<'NEXT'
Next: this systemd has no LoadCredential=, so the service reads the Twilio secrets itself from
the files /config/otp-sidecar/otp-sidecar.toml names; paste each, then Ctrl-D:
    install -m 0400 -o otp-sidecar -g otp-sidecar /dev/stdin /config/otp-sidecar/account_sid
    install -m 0400 -o otp-sidecar -g otp-sidecar /dev/stdin /config/otp-sidecar/api_key
    install -m 0400 -o otp-sidecar -g otp-sidecar /dev/stdin /config/otp-sidecar/api_secret
edit /config/otp-sidecar/otp-sidecar.toml, then:
    runuser -u otp-sidecar -- otp-sidecar check --config /config/otp-sidecar/otp-sidecar.toml
    systemctl daemon-reload && systemctl enable --now otp-sidecar
    otp-sidecar ping
NEXT
fi
