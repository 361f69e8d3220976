#!/usr/bin/env bash
# `just bench-retrieval`: search quality of the knowledge base on classic test collections.
#   1. vaswani, cranfield and cisi (shared/data/retrieval) are each ingested into a collection of
#      a fresh daemon; every judged query runs in the text, vector and hybrid modes. nDCG@10, MAP
#      and recall@100 are computed here (trec_eval definitions), `text` beside the README's BM25.
#   2. XQuAD (English): the 240 paragraphs as documents, the 1190 questions as queries: recall@5.
# Prints one table with the goals and the ingestion time of each corpus. Needs `just fetch`;
# uses python3 with requests (installed if missing). Not part of CI. About 15 minutes on 2 cores.
# MEMORY_MODE=compact measures the daemon's default memory mode (embedding is then several times
# slower); the data directory is made with mktemp, so TMPDIR=/dev/shm takes fsync out of the
# ingestion time; BENCH_COLLECTIONS=cranfield,xquad runs a subset.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$repo/benches/retrieval"
vendor="${VENDOR_DIR:-$repo/vendor}"
shared="${SHARED_DIR:-$repo/../shared}"
memory_mode="${MEMORY_MODE:-fast}"
export PYTHONDONTWRITEBYTECODE=1  # no __pycache__ left in benches/retrieval

[ -d "$shared/data/retrieval" ] || { echo "no $shared/data/retrieval: set SHARED_DIR" >&2; exit 1; }
python3 -c "import requests" 2>/dev/null ||
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet requests
python3 "$here/metrics.py" >/dev/null
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
bin="$repo/target/release/sparkbrain"

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  done
  rm -rf "$work"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

sb_port="$(port)"
cat > "$work/config.toml" <<TOML
data_dir = "$work/data"
[server]
bind = "127.0.0.1:$sb_port"
[runtime]
onnxruntime_library = "$vendor/onnxruntime/libonnxruntime.so.1.31.1"
intra_op_threads = 2
memory_mode = "$memory_mode"
[models]
embedding_model = "$vendor/models/all-MiniLM-L6-v2/model.onnx"
embedding_tokenizer = "$vendor/models/all-MiniLM-L6-v2/tokenizer.json"
embedding_query_model = "$vendor/models/all-MiniLM-L6-v2/model.query-int8.onnx"
[log]
level = "warn"
TOML
echo "bench-admin-password" | "$bin" user add admin --role admin --password-stdin --config "$work/config.toml" >/dev/null
env -u JOURNAL_STREAM "$bin" serve --config "$work/config.toml" 2>"$work/daemon.log" &
pids+=($!)
for _ in $(seq 600); do
  curl -sf "http://127.0.0.1:$sb_port/readyz" >/dev/null && break
  kill -0 "${pids[0]}" 2>/dev/null || { echo "the daemon exited at start:" >&2; tail -n 40 "$work/daemon.log" >&2; exit 1; }
  sleep 0.1
done
curl -sf "http://127.0.0.1:$sb_port/readyz" >/dev/null || { echo "the daemon is not ready after 60 s:" >&2; tail -n 40 "$work/daemon.log" >&2; exit 1; }

status=0
python3 "$here/bench.py" --url "http://127.0.0.1:$sb_port" --user admin --password bench-admin-password \
  --shared "$shared" --collections "${BENCH_COLLECTIONS:-vaswani,cranfield,cisi,xquad}" \
  --setup "all-MiniLM-L6-v2, 2 intra-op threads, memory_mode $memory_mode, default [kb] settings" || status=$?
if ! kill -0 "${pids[0]}" 2>/dev/null; then
  echo "the daemon died during the benchmark; its log ends:" >&2
  tail -n 40 "$work/daemon.log" >&2
  exit 1
fi
if [ "$status" -ne 0 ] || grep -qiE '\b(ERROR|panicked)\b' "$work/daemon.log"; then
  echo >&2
  echo "daemon log (warnings and errors, last 40 lines):" >&2
  tail -n 40 "$work/daemon.log" >&2
fi
exit "$status"
