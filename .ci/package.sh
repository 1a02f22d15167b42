#!/usr/bin/env bash
# Lays out an otp-sidecar release folder: DIR gets BIN as bin/otp-sidecar, both systemd units,
# the BIG-IP boot hook, the iRules and ILX forwarder, the example config, the docs and
# install.sh. .ci/release packs what this makes; the simulated BIG-IP test
# (tests/appliance/bigip-host.sh) installs it. VERSION (default: what BIN says it is) goes in
# DIR/VERSION, which install.sh names the release by.
#     .ci/package.sh DIR BIN [VERSION]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
dir=$1 bin=$2
version=${3:-$("$bin" --version | cut -d' ' -f2)}
rm -rf "$dir"
mkdir -p "$dir/bin" "$dir/systemd" "$dir/docs"
install -m 0755 "$bin" "$dir/bin/otp-sidecar"
cp "$repo/examples/systemd/otp-sidecar.service" "$repo/examples/systemd/otp-sidecar.socket" \
  "$repo/examples/systemd/otp-sidecar.service.systemd219" "$dir/systemd/"
install -m 0755 "$repo/examples/bigip/otp-sidecar-boot.sh" "$dir/boot.sh"
install -m 0755 "$repo/examples/bigip/otp-sidecar-sync-peer.sh" "$dir/sync-peer.sh"
install -m 0755 "$repo/examples/bigip/otp-sidecar-restart-gap.sh" "$dir/otp-sidecar-restart-gap.sh"
cp "$repo/examples/otp-sidecar.toml" "$dir/"
cp -R "$repo/irules" "$dir/"
cp "$repo/README.md" "$dir/"
cp "$repo"/docs/*.md "$dir/docs/"
install -m 0755 "$repo/.ci/install.sh" "$dir/install.sh"
printf '%s\n' "$version" >"$dir/VERSION"
