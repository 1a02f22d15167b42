#!/usr/bin/env bash
# A simulated BIG-IP host, built as root in a private mount namespace (unshare -m): a root
# folder with /usr bind-mounted read-only (as BIG-IP mounts it), its own copy of /etc (a
# volume's own), /VERSION saying BIG-IP, and /config and /shared bind-mounted from folders that
# outlive it, which is what a software upgrade keeps. systemd does not run in a chroot: a
# stand-in systemctl (fake-systemctl beside this script) says it is 219 and runs the unit as its
# ExecStart=, User= and RuntimeDirectory= say. The unit is checked against systemd 219's
# directives (.ci/check-systemd219) and with this host's systemd-analyze verify.
#     WORK=/tmp/dir OTP_SIDECAR_BIN=target/debug/otp-sidecar tests/appliance/bigip-host.sh
# Run by tests/daemon/appliance.rs. Says what it checks, one "ok" line each; fails on the first
# that does not hold.
set -euo pipefail
if [ -z "${OTP_SIM_INNER:-}" ]; then
  exec unshare -m --propagation private env OTP_SIM_INNER=1 "$0" "$@"
fi
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${WORK:?} bin=${OTP_SIDECAR_BIN:?}
persist=$work/persist
home=/shared/otp-sidecar
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

# --- the releases: N as built, N+1 the same binary under another version ----------------------
# The docs go in the package; a folder without them must not fail the layout.
version_n=$("$bin" --version | cut -d' ' -f2)
version_n1=$version_n-next
"$repo/.ci/package.sh" "$work/pkg-n" "$bin" "$version_n"
"$repo/.ci/package.sh" "$work/pkg-n1" "$bin" "$version_n1"

# --- what every volume shares: /config and /shared ----------------------------------------------
mkdir -p "$persist/config" "$persist/shared/images"
# The admin's own startup file, its last line without a newline: kept as it is.
printf '#!/bin/sh\n# the admin'"'"'s own boot step\ntrue' >"$persist/config/startup"
chmod 0755 "$persist/config/startup"
echo "not ours" >"$persist/shared/images/README"

make_root() { # DIR: a fresh volume
  local r=$1 l
  mkdir -p "$r"/{usr,proc,dev,tmp,run/systemd/system,var/log,var/tmp,config,shared,root,opt/fake-bin}
  chmod 1777 "$r/tmp"
  mount --bind /usr "$r/usr"
  mount -o remount,bind,ro "$r/usr"
  for l in bin sbin lib lib64 lib32 libx32; do
    if [ -L "/$l" ]; then ln -s "$(readlink "/$l")" "$r/$l"; elif [ -d "/$l" ]; then mkdir "$r/$l" && mount --bind "/$l" "$r/$l" && mount -o remount,bind,ro "$r/$l"; fi
  done
  cp -a /etc "$r/etc"
  # The host may have an otp-sidecar user from a real install: a BIG-IP volume has none.
  if grep -q '^otp-sidecar:' "$r/etc/passwd"; then chroot "$r" userdel otp-sidecar; fi
  if grep -q '^otp-sidecar:' "$r/etc/group"; then chroot "$r" groupdel otp-sidecar; fi
  rm -f "$r"/etc/systemd/system/otp-sidecar.* "$r"/etc/systemd/system/*.wants/otp-sidecar.*
  mount --rbind /dev "$r/dev"
  mount -t proc proc "$r/proc"
  mount --bind "$persist/config" "$r/config"
  mount --bind "$persist/shared" "$r/shared"
  printf 'Product: BIG-IP\nVersion: 15.1.10\nBuild: 0.0.15\nSequence: 15.1.10-0.0.15.0\nBASEBUILD: 0.0.15\nEdition: Point Release 0\n' >"$r/VERSION"
  install -m 0755 "$repo/tests/appliance/fake-systemctl" "$r/opt/fake-bin/systemctl"
}

in_root() { # ROOT COMMAND...: as a root shell on that host would
  local r=$1
  shift
  chroot "$r" /usr/bin/env -i HOME=/root PATH=/opt/fake-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$@"
}

# A listing of what an install may touch: path, type, mode, owner, and each file's checksum.
# Left out: /etc's shadow-utils backups (passwd-, group-, shadow-, gshadow-) and its lock
# file, which useradd and userdel rewrite as a matter of course, and the stand-in's own state.
tree_of() { # ROOT DIR...
  local r=$1
  shift
  (cd "$r" && for d in "$@"; do find "${d#/}" -xdev \( -path etc/.pwd.lock -o -path 'etc/*-' -o -path run/fake-systemd \) -prune -o \
    -printf '%p %y %m %u:%g %l\n'; done | sort) | while read -r path rest; do
    if [ -f "$r/$path" ] && [ ! -L "$r/$path" ]; then echo "$path $rest $(sha256sum <"$r/$path" | cut -c1-16)"; else echo "$path $rest"; fi
  done
}

check_as_service() { # ROOT
  in_root "$1" runuser -u otp-sidecar -- $home/current/bin/otp-sidecar check \
    --config /config/otp-sidecar/otp-sidecar.toml >/dev/null ||
    fail "otp-sidecar check as the service user failed in $1"
}

ping_version() { # ROOT: the release folder of the daemon that answers ping (N and N+1 are
  # one binary, so not what it says: where it was started from)
  "$bin" ping --unix "$1/run/otp-sidecar/otp.sock" --timeout-ms 3000 >/dev/null || return 0
  local runner daemon
  runner=$(cat "$1/run/fake-systemd/otp-sidecar.pid")
  daemon=$(ps -o pid= --ppid "$runner" | tr -d ' ' | head -1)
  readlink "/proc/${daemon:-$runner}/exe" | sed -n "s|^.*$home/\([^/]*\)/bin/otp-sidecar\$|\1|p"
}

unit_checks() { # ROOT
  local unit=$1/etc/systemd/system/otp-sidecar.service
  "$repo/.ci/check-systemd219" "$unit" || fail "the installed unit uses directives systemd 219 lacks"
  grep -qx "ExecStart=$home/current/bin/otp-sidecar serve --config /config/otp-sidecar/otp-sidecar.toml" "$unit" ||
    fail "the unit does not run $home/current: $(grep ExecStart= "$unit")"
  grep -qx 'StartLimitInterval=0' "$unit" || fail "the unit can run into the start limit"
  # This host's systemd-analyze, on a copy whose ExecStart= exists here.
  local copy=$work/verify/otp-sidecar.service said
  mkdir -p "$work/verify"
  sed "s|$home/current|$1$home/current|" "$unit" >"$copy"
  said=$(systemd-analyze verify "$copy" 2>&1 | grep -v 'please use MemoryMax= instead' || true)
  [ -z "$said" ] || fail "systemd-analyze verify: $said"
}

# === 1. install on a fresh BIG-IP volume =======================================================
r1=$work/volume-1
make_root "$r1"
start_persist=$(tree_of "$r1" config shared)
start_etc_1=$(tree_of "$r1" etc run)
mkdir -p "$r1/var/tmp/upload" && cp -a "$work/pkg-n" "$r1/var/tmp/upload/"
in_root "$r1" /var/tmp/upload/pkg-n/install.sh >"$work/install-1.log" 2>&1 ||
  fail "install.sh on the BIG-IP volume: $(cat "$work/install-1.log")"
ok "install.sh ran with /usr read-only"
[ "$(readlink "$persist/shared/otp-sidecar/current")" = "$version_n" ] || fail "current is not $version_n"
[ -x "$persist/shared/otp-sidecar/$version_n/bin/otp-sidecar" ] || fail "no binary under $home/$version_n"
# /usr is read-only here, as on BIG-IP: any write under it would have failed the install.
! touch "$r1/usr/.otp-sidecar-probe" 2>/dev/null || fail "/usr is writable in the simulation"
[ "$(grep -c 'otp-sidecar/current/boot.sh' "$persist/config/startup")" = 1 ] || fail "the startup line is not there once"
grep -q "the admin's own boot step" "$persist/config/startup" && head -1 "$persist/config/startup" | grep -q '^#!/bin/sh' ||
  fail "the admin's /config/startup was not kept"
grep -qx 'true' "$persist/config/startup" || fail "the admin's last line was run into ours"
grep -q '^otp-sidecar:' "$r1/etc/passwd" || fail "no otp-sidecar user"
[ "$(in_root "$r1" stat -c '%U:%G %a' /config/otp-sidecar/otp-sidecar.toml)" = "root:otp-sidecar 640" ] ||
  fail "config is $(in_root "$r1" stat -c '%U:%G %a' /config/otp-sidecar/otp-sidecar.toml)"
unit_checks "$r1"
ok "release in $home/$version_n, current link, config in /config/otp-sidecar, one startup line, unit for systemd 219"

# The secrets, as the guide says (made-up, of the right shape), and dry_run: nothing leaves.
for f in account_sid:AC0123456789abcdef0123456789abcdef api_key:SK0123456789abcdef0123456789abcdef api_secret:not-a-real-secret; do
  printf '%s\n' "${f#*:}" | in_root "$r1" install -o otp-sidecar -g otp-sidecar -m 0400 /dev/stdin "/config/otp-sidecar/${f%%:*}"
done
sed -i '1i dry_run = true' "$persist/config/otp-sidecar/otp-sidecar.toml"
check_as_service "$r1"
ok "check passes as the otp-sidecar user"
in_root "$r1" systemctl start otp-sidecar.service || fail "the unit does not start: $(cat "$r1/var/log/otp-sidecar.log")"
[ "$(ping_version "$r1")" = "$version_n" ] || fail "ping does not answer $version_n"
ok "the unit starts; ping answers $version_n"

# The boot hook on a plain reboot: everything is there, nothing changes.
before=$(tree_of "$r1" config shared etc run)
in_root "$r1" /config/startup >/dev/null || fail "/config/startup failed on a plain reboot"
in_root "$r1" /config/startup >/dev/null
after=$(tree_of "$r1" config shared etc run)
[ "$before" = "$after" ] || fail "the boot hook changed things when run again: $(diff <(echo "$before") <(echo "$after"))"
ok "the boot hook, run twice, changes nothing"
in_root "$r1" systemctl stop otp-sidecar.service

# === 2. a software upgrade: a new volume keeps /config and /shared only =========================
r2=$work/volume-2
make_root "$r2"
# The new BIG-IP version has one more system user than the old one: the uid otp-sidecar had
# is taken, so its secrets' owner must follow by name, not by number.
old_uid=$(stat -c %u "$persist/config/otp-sidecar/api_secret")
if ! grep -q ":x:$old_uid:" "$r2/etc/passwd"; then
  in_root "$r2" useradd --system --no-create-home --uid "$old_uid" --shell /sbin/nologin f5-new-daemon
fi
start_etc_2=$(tree_of "$r2" etc run)
[ ! -e "$r2/etc/systemd/system/otp-sidecar.service" ] && ! grep -q '^otp-sidecar:' "$r2/etc/passwd" ||
  fail "the new volume is not fresh"
in_root "$r2" /config/startup >"$work/boot-2.log" 2>&1 || fail "/config/startup after the upgrade: $(cat "$work/boot-2.log")"
grep -q '^otp-sidecar:' "$r2/etc/passwd" || fail "the boot hook did not recreate the user"
[ -e "$r2/etc/systemd/system/otp-sidecar.service" ] || fail "the boot hook did not recreate the unit"
[ -L "$r2/etc/systemd/system/multi-user.target.wants/otp-sidecar.service" ] || fail "the unit is not enabled"
unit_checks "$r2"
[ "$(in_root "$r2" stat -c %U /config/otp-sidecar/api_secret)" = otp-sidecar ] ||
  fail "after the upgrade the secrets belong to $(in_root "$r2" stat -c %U /config/otp-sidecar/api_secret)"
check_as_service "$r2"
[ "$(ping_version "$r2")" = "$version_n" ] || fail "after the upgrade the service is not running $version_n"
ok "after the upgrade /config/startup recreated user, unit and secrets' owner; check passes; the service runs"

# === 3. N+1 beside N, then back ==================================================================
mkdir -p "$r2/var/tmp/upload" && cp -a "$work/pkg-n1" "$r2/var/tmp/upload/"
in_root "$r2" /var/tmp/upload/pkg-n1/install.sh >"$work/install-n1.log" 2>&1 ||
  fail "install.sh of N+1: $(cat "$work/install-n1.log")"
[ "$(readlink "$persist/shared/otp-sidecar/current")" = "$version_n1" ] || fail "current is not $version_n1"
[ "$(readlink "$persist/shared/otp-sidecar/previous")" = "$version_n" ] || fail "previous is not $version_n"
[ -x "$persist/shared/otp-sidecar/$version_n/bin/otp-sidecar" ] || fail "N was not kept beside N+1"
[ "$(ping_version "$r2")" = "$version_n1" ] || fail "the service was not restarted on $version_n1"
ok "N+1 installed beside N, current switched, the running service restarted on it"
in_root "$r2" $home/current/install.sh rollback >"$work/rollback.log" 2>&1 || fail "rollback: $(cat "$work/rollback.log")"
[ "$(readlink "$persist/shared/otp-sidecar/current")" = "$version_n" ] || fail "rollback did not switch to $version_n"
[ "$(ping_version "$r2")" = "$version_n" ] || fail "rollback did not restart on $version_n"
check_as_service "$r2"
ok "rollback: current is $version_n again, restarted, check passes"

# === 4. the HA peer: another volume of its own, reached by a stand-in for ssh =====================
peer=$work/peer
persist_main=$persist
persist=$work/persist-peer
mkdir -p "$persist/config" "$persist/shared"
make_root "$peer"
persist=$persist_main
# The peer as unit A's ssh sees it: its root, mounted where A's chroot can reach it.
mkdir -p "$r2/opt/peer-root"
mount --rbind "$peer" "$r2/opt/peer-root"
cat >"$work/peer-ssh" <<SSH
#!/bin/sh
# ssh PEER COMMAND, as root on the simulated peer
shift
exec chroot /opt/peer-root /usr/bin/env -i HOME=/root PATH=/opt/fake-bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin sh -c "\$1"
SSH
chmod +x "$work/peer-ssh"
cp "$work/peer-ssh" "$r2/opt/peer-ssh"
in_root "$r2" env OTP_SIDECAR_SSH=/opt/peer-ssh $home/current/sync-peer.sh bigip-b --restart >"$work/sync.log" 2>&1 ||
  fail "sync-peer: $(cat "$work/sync.log")"
[ "$(readlink "$work/persist-peer/shared/otp-sidecar/current")" = "$version_n" ] || fail "the peer has no current $version_n"
cmp -s "$work/persist-peer/config/otp-sidecar/otp-sidecar.toml" "$persist/config/otp-sidecar/otp-sidecar.toml" ||
  fail "the peer's config differs"
[ "$(in_root "$peer" stat -c '%U %a' /config/otp-sidecar/api_secret)" = "otp-sidecar 400" ] || fail "the peer's secrets are not the service's"
[ "$(ping_version "$peer")" = "$version_n" ] || fail "the peer's service does not answer"
in_root "$peer" systemctl stop otp-sidecar.service
ok "sync-peer: release, config and secrets on the peer, check passed there, its service answers"

# === 5. uninstall: back to where it started ========================================================
in_root "$r2" $home/current/install.sh uninstall --purge >"$work/uninstall.log" 2>&1 || fail "uninstall: $(cat "$work/uninstall.log")"
end_persist=$(tree_of "$r2" config shared)
end_etc=$(tree_of "$r2" etc run)
[ "$start_persist" = "$end_persist" ] || fail "uninstall left /config or /shared changed: $(diff <(echo "$start_persist") <(echo "$end_persist"))"
[ "$start_etc_2" = "$end_etc" ] || fail "uninstall left /etc or /run changed: $(diff <(echo "$start_etc_2") <(echo "$end_etc"))"
ok "uninstall --purge: /config, /shared, /etc and /run as they were before the install"
: "$start_etc_1"
