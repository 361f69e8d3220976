#!/usr/bin/env bash
# Installs what building and testing sparkbrain needs beyond Rust, on Debian/Ubuntu:
# system packages (libsystemd for sd_notify, openssl for the TLS tests, qpdf to make encrypted
# PDFs in the extraction tests, poppler-utils' pdftotext as the extraction benchmark's reference,
# dbus-daemon for the private bus the host-services tests run a stand-in systemd on, cryptsetup
# and e2fsprogs for the volume tests, systemd's systemd-analyze to score the unit's sandbox in
# tests/packaging.rs, Node.js to build the console from ui/ and drive its browser tests, and
# Chromium for those tests) and the
# Python package the tests use to parse /metrics. Installs only what is missing; uses sudo when
# not root.
set -euo pipefail

PROMETHEUS_CLIENT_VERSION=0.26.0
packages=(pkg-config libsystemd-dev openssl ca-certificates curl qpdf poppler-utils dbus-daemon cryptsetup-bin e2fsprogs systemd nodejs chromium)

bash "$(dirname "${BASH_SOURCE[0]}")/apt-install-missing.sh" "${packages[@]}"
# Some nodejs packages bundle npm, Debian's does not.
command -v npm >/dev/null 2>&1 || bash "$(dirname "${BASH_SOURCE[0]}")/apt-install-missing.sh" npm

# The tests parse /metrics with prometheus_client and check model outputs against onnxruntime
# (and the fixtures in tests/fixtures/requirements.txt) run from Python.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! python3 -c "import prometheus_client, onnxruntime, tokenizers, sklearn, skl2onnx, onnx, openai, tritonclient.http, moto.server" 2>/dev/null; then
    echo "installing the Python packages the tests use"
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
        python3 -m pip install --quiet "prometheus_client==${PROMETHEUS_CLIENT_VERSION}" \
        -r "$repo/tests/fixtures/requirements.txt"
fi

# The console's npm packages (esbuild to build it, playwright-core for its browser tests),
# pinned by ui/package-lock.json.
if [[ ! "$repo/ui/node_modules/.package-lock.json" -nt "$repo/ui/package-lock.json" ]]; then
    echo "installing the console's npm packages"
    (cd "$repo/ui" && npm ci --no-audit --no-fund --loglevel=error)
fi
