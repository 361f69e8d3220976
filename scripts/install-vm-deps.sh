#!/usr/bin/env bash
# Installs what the package build and the VM tests need on the host (Debian/Ubuntu), only
# what is missing: QEMU (software emulation is enough), debootstrap for the guest image,
# cryptsetup-bin, lintian for the package, jq for the host's API checks and e2fsprogs. Uses
# sudo when not root. Installing qemu-system-x86 may replace a newer qemu-utils from backports
# with the release's own; the tests need neither version in particular.
set -euo pipefail

packages=(qemu-system-x86 swtpm debootstrap cryptsetup-bin lintian jq e2fsprogs curl python3 xz-utils)

bash "$(dirname "${BASH_SOURCE[0]}")/apt-install-missing.sh" "${packages[@]}"
