#!/usr/bin/env bash
# Builds the web console: bundles ui/src into assets/console/ with ui/'s pinned packages
# (installed by `just deps`).
set -euo pipefail

ui="$(cd "$(dirname "${BASH_SOURCE[0]}")/../ui" && pwd)"
[[ -d "$ui/node_modules/esbuild" ]] || { echo "ui/node_modules is missing: run \`just deps\`" >&2; exit 1; }
(cd "$ui" && npm run --silent build)
