#!/usr/bin/env bash
# Installs what building and testing sparkbrain needs beyond Rust, on Debian/Ubuntu:
# system packages (libsystemd for sd_notify, openssl for the TLS tests, qpdf to make encrypted
# PDFs in the extraction tests, poppler-utils' pdftotext as the extraction benchmark's reference,
# dbus-daemon for the private bus the host-services tests run a stand-in systemd on, cryptsetup
# and e2fsprogs for the volume tests, systemd's systemd-analyze to score the unit's sandbox in
# tests/packaging.rs) and the
# Python package the tests use to parse /metrics. Installs only what is missing; uses sudo when
# not root.
set -euo pipefail

PROMETHEUS_CLIENT_VERSION=0.26.0
packages=(pkg-config libsystemd-dev openssl ca-certificates curl qpdf poppler-utils dbus-daemon cryptsetup-bin e2fsprogs systemd)

bash "$(dirname "${BASH_SOURCE[0]}")/apt-install-missing.sh" "${packages[@]}"

# The tests parse /metrics with prometheus_client and check model outputs against onnxruntime
# (and the fixtures in tests/fixtures/requirements.txt) run from Python.
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! python3 -c "import prometheus_client, onnxruntime, tokenizers, sklearn, skl2onnx, onnx, openai, tritonclient.http" 2>/dev/null; then
    echo "installing the Python packages the tests use"
    PIP_BREAK_SYSTEM_PACKAGES=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore \
        python3 -m pip install --quiet "prometheus_client==${PROMETHEUS_CLIENT_VERSION}" \
        -r "$repo/tests/fixtures/requirements.txt"
fi
