#!/usr/bin/env bash
# Builds the Debian package: target/debian/sparkbrain_<version>_amd64.deb (under
# $CARGO_TARGET_DIR when that is set). Prints the package's path as the last line.
#
# 1. installs cargo-deb (pinned) when it is missing or another version;
# 2. fetches ONNX Runtime and the embedding model into $VENDOR_DIR (scripts/fetch-runtime.sh,
#    offline when they are already there);
# 3. builds the release binary and, with it, generates what is not committed: the shell
#    completions, the man page and /etc/sparkbrain/config.toml (the built-in defaults, every
#    setting commented out, so the file overrides nothing until an operator changes it);
# 4. stages those and the vendored files under <target>/release/deb-assets/, where the assets in
#    Cargo.toml's [package.metadata.deb] expect them, and runs cargo-deb.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
export VENDOR_DIR="${VENDOR_DIR:-$repo/vendor}"

log() { printf '[deb] %s\n' "$*"; }

if [[ "$(cargo deb --version 2>/dev/null)" != *"$CARGO_DEB_VERSION"* ]]; then
    log "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --locked --version "$CARGO_DEB_VERSION"
fi

bash scripts/fetch-runtime.sh

cargo build --release --locked
target="$(cargo metadata --format-version 1 --no-deps --locked |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
bin="$target/release/sparkbrain"
stage="$target/release/deb-assets"
rm -rf "$stage"
mkdir -p "$stage/completions" "$stage/onnxruntime" "$stage/models/all-MiniLM-L6-v2"

"$bin" completions bash >"$stage/completions/sparkbrain"
"$bin" completions zsh >"$stage/completions/_sparkbrain"
"$bin" completions fish >"$stage/completions/sparkbrain.fish"
# Debian wants manual pages compressed; -n leaves the timestamp out so builds are reproducible.
"$bin" man | gzip -9n >"$stage/sparkbrain.1.gz"

# The conffile: a header, then the built-in default with every setting commented out. Section
# headers stay, so uncommenting a key under its section is all a change takes.
{
    cat <<'EOF'
# /etc/sparkbrain/config.toml: sparkbrain's configuration.
#
# Every setting below is commented out and shows its built-in default; uncomment and change the
# ones you need (`sparkbrain config check` validates the file, `sparkbrain config default`
# prints the defaults again). The service reads this file when it starts:
#   systemctl restart sparkbrain
#
EOF
    "$bin" config default | sed -E 's/^([a-z_]+ *=.*)$/# \1/'
} >"$stage/config.toml"
"$bin" config check "$stage/config.toml" >/dev/null

cp "$VENDOR_DIR/onnxruntime/libonnxruntime.so.1.31.1" \
    "$VENDOR_DIR/onnxruntime/libonnxruntime_providers_shared.so" \
    "$VENDOR_DIR/onnxruntime/ThirdPartyNotices.txt" "$stage/onnxruntime/"
cp "$VENDOR_DIR/models/all-MiniLM-L6-v2/model.onnx" "$VENDOR_DIR/models/all-MiniLM-L6-v2/model.query-int8.onnx" \
    "$VENDOR_DIR/models/all-MiniLM-L6-v2/tokenizer.json" "$stage/models/all-MiniLM-L6-v2/"

# --no-build: the binary was built above, with the same profile the assets name.
deb="$(cargo deb --no-build --locked | tail -n 1)"
log "built $deb ($(du -h "$deb" | cut -f1))"
echo "$deb"
