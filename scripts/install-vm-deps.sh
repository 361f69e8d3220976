#!/usr/bin/env bash
# Installs what the package build and the VM tests need on the host (Debian/Ubuntu), only
# what is missing: QEMU (software emulation is enough), debootstrap for the guest image,
# cryptsetup-bin, lintian for the package, jq for the host's API checks and e2fsprogs. Uses
# sudo when not root. Installing qemu-system-x86 may replace a newer qemu-utils from backports
# with the release's own; the tests need neither version in particular.
set -euo pipefail

packages=(qemu-system-x86 swtpm debootstrap cryptsetup-bin lintian jq e2fsprogs curl python3 xz-utils)

sudo=()
[[ "$(id -u)" == 0 ]] || sudo=(sudo)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
