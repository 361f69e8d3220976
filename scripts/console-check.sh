#!/usr/bin/env bash
# Rebuilds the web console from ui/ and fails when the result differs from the committed
# assets/console/ (the files the daemon embeds), so the binary never serves stale pages.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/console-build.sh"
cd "$repo"
stale="$(git status --porcelain --untracked-files=all -- assets/console)"
if [[ -n "$stale" ]]; then
    echo "assets/console/ does not match ui/: run \`just console\` and commit assets/console/" >&2
    echo "$stale" >&2
    exit 1
fi
echo "assets/console/ matches ui/"
