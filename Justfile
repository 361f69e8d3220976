# sparkbrain developer tasks. `just` lists them; CI runs `just lint` and `just test` (.ci/run).

set shell := ["bash", "-euo", "pipefail", "-c"]

# Where scripts/fetch-runtime.sh puts ONNX Runtime and the embedding model; tests read it too.
# An absolute path set in the environment wins; otherwise <repo>/vendor.
export VENDOR_DIR := env("VENDOR_DIR", justfile_directory() + "/vendor")

_default:
    @{{ just_executable() }} --justfile {{ justfile() }} --list

# Install the system and Python packages the build and the tests need (Debian/Ubuntu)
deps:
    bash scripts/install-deps.sh

# Download and verify the pinned ONNX Runtime library and embedding model into vendor/
fetch:
    bash scripts/fetch-runtime.sh

# Release build
build: deps
    cargo build --release

# Run the daemon locally with dev/config.toml (data in ./data)
run: deps fetch build
    mkdir -p data
    @echo "sparkbrain will listen on http://127.0.0.1:8470"
    @echo "create the first admin from another terminal with:"
    @echo "    target/release/sparkbrain user add admin --role admin --config dev/config.toml"
    target/release/sparkbrain serve --config dev/config.toml

# Run all tests (the test build includes the binary the integration tests start)
test: deps fetch
    if command -v cargo-nextest >/dev/null 2>&1; then cargo nextest run --no-fail-fast; else cargo test --no-fail-fast; fi

# Formatting check, clippy with warnings as errors, and the built console matching ui/
lint: deps
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings
    bash scripts/console-check.sh

# Build the web console from ui/ into assets/console/ (commit both; cargo embeds assets/console/)
console: deps
    bash scripts/console-build.sh

# Idle resource benchmark
bench-idle:
    bash benches/idle.sh

# Model-serving benchmark against in-process ONNX Runtime, FastAPI+uvicorn and raw session.run
bench-serving: fetch
    bash benches/serving.sh

# Search quality (nDCG@10, MAP, recall) on vaswani, cranfield, cisi and XQuAD, beside BM25 figures
bench-retrieval: fetch
    bash benches/retrieval.sh

# Document extraction: F1 against ground truth, and PDF text vs pdftotext (needs ../shared test documents)
bench-extract: deps
    bash benches/extract.sh

# Knowledge-base speed: ingestion against raw embedding, search latency and recall at 10k/100k/1M chunks against FAISS, start-up
bench-kb: fetch
    bash benches/kb.sh

# Backup and restore throughput (MB/s) for 100k chunks and 1.1 GB of blobs, beside tar | zstd; restore with indexes archived or rebuilt
bench-backup: fetch
    bash benches/backup.sh

# Web console: first-load bytes and time to interactive in headless Chromium, against 300 KB and 500 ms
bench-console: deps fetch
    bash benches/console.sh

# Text generation: tokens/s of the built-in ONNX generator on stories260K beside the Python reference loop, and /api/v1/ask time to first token
bench-generate: fetch
    bash benches/generate.sh

# Build the Debian package target/debian/sparkbrain_<version>_amd64.deb (installs cargo-deb when missing)
deb: deps fetch
    bash scripts/deb.sh

# Check the package with lintian (fails on errors and warnings; overrides in packaging/lintian-overrides)
lint-deb: deps fetch vm-deps
    lintian --fail-on error,warning "$(bash scripts/deb.sh | tail -n 1)"

# Install what the package checks and the VM tests need (qemu, debootstrap, lintian, ...)
vm-deps:
    bash scripts/install-vm-deps.sh

# Install, API, encrypted volume (unlocked through the console in Chromium), errors, backups and restore, and purge of the .deb in a Debian VM (root; QEMU TCG)
test-vm *DEB: deps vm-deps
    bash tests/vm/run.sh {{ DEB }}

# Write the man page to target/sparkbrain.1
man:
    mkdir -p target
    cargo run --quiet -- man > target/sparkbrain.1

# Format all code
fmt:
    cargo fmt --all

# GPU supervision cost with 8 fake GPUs: sampler CPU per sample, /metrics scrape CPU and p99 under 32 scrapers
bench-gpu:
    bash benches/gpu.sh

# On a GPU host: compare the daemon's inventory and samples with nvidia-smi's
gpu-check:
    bash scripts/gpu-check.sh
