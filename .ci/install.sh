#!/usr/bin/env bash
# Installs an otp-sidecar release on the host it runs on (a BIG-IP's Linux host, or any
# systemd machine). Run from the unpacked release folder, as root:
#     ./install.sh            install, keep an existing config
#     DESTDIR=/tmp/root ./install.sh   stage into a folder instead (for checking the package)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=${DESTDIR:-}
install -d "$root/usr/local/bin" "$root/etc/systemd/system" "$root/config/otp-sidecar" \
  "$root/usr/local/share/otp-sidecar"
install -m 0755 "$here/bin/otp-sidecar" "$root/usr/local/bin/otp-sidecar"
install -m 0644 "$here/systemd/otp-sidecar.service" "$here/systemd/otp-sidecar.socket" \
  "$root/etc/systemd/system/"
# The service's own user; the group is the one the socket is shared with (see the README).
if [ -z "$root" ] && ! id otp-sidecar >/dev/null 2>&1; then
  useradd --system --no-create-home --home-dir /nonexistent --shell /sbin/nologin otp-sidecar
fi
if [ ! -e "$root/config/otp-sidecar/otp-sidecar.toml" ]; then
  install -m 0640 "$here/otp-sidecar.toml" "$root/config/otp-sidecar/otp-sidecar.toml"
fi
cp -R "$here/irules" "$root/usr/local/share/otp-sidecar/"
echo "installed otp-sidecar $("$root/usr/local/bin/otp-sidecar" --version | cut -d' ' -f2)"
if [ -z "$root" ]; then
  cat <<'NEXT'
Next: put the Twilio secrets in /config/otp-sidecar/{account_sid,api_key,api_secret} (mode 0600),
edit /config/otp-sidecar/otp-sidecar.toml, then:
    otp-sidecar check --config /config/otp-sidecar/otp-sidecar.toml
    systemctl daemon-reload && systemctl enable --now otp-sidecar
    (or, for socket activation: systemctl enable --now otp-sidecar.socket)
NEXT
fi
