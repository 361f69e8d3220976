#!/usr/bin/env bash
# Installs the Debian packages named as arguments that are not installed yet (apt-get update
# only when something is missing); uses sudo when not root. Shared by install-deps.sh and
# install-vm-deps.sh.
set -euo pipefail

sudo=()
[[ "$(id -u)" == 0 ]] || sudo=(sudo)

missing=()
for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
