#!/usr/bin/env bash
# Time to first token of /api/v1/ask on a 10k-chunk collection (the Vaswani corpus, 11,429
# documents), with stories260K as the built-in generator, beside its parts measured in the
# same run: the retrieval alone (/api/v1/search, hybrid, top 5) and the generator's prefill
# (its time from prompt to first text). Goal: ask's p50 <= retrieval p50 + one prefill.
# Called by benches/generate.sh; needs `just fetch`. Prints one line of figures.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
vendor="${VENDOR_DIR:-$repo/vendor}"
shared="${SHARED_DIR:-$repo/../shared}"
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
bin="$repo/target/release/sparkbrain"
work="$(mktemp -d)"
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"; true; }
trap cleanup EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
base="http://127.0.0.1:$port"
cat > "$work/config.toml" <<TOML
data_dir = "$work/data"
[server]
bind = "127.0.0.1:$port"
[runtime]
onnxruntime_library = "$vendor/onnxruntime/libonnxruntime.so.1.31.1"
memory_mode = "fast"
[models]
embedding_model = "$vendor/models/all-MiniLM-L6-v2/model.onnx"
embedding_tokenizer = "$vendor/models/all-MiniLM-L6-v2/tokenizer.json"
embedding_query_model = "$vendor/models/all-MiniLM-L6-v2/model.query-int8.onnx"
[generators.stories]
kind = "onnx"
model = "$shared/models/stories260k/model.onnx"
context_length = 512
[log]
level = "warn"
format = "terminal"
TOML
printf '%s\n' "bench-admin-password" | "$bin" --config "$work/config.toml" user add admin --role admin --password-stdin >/dev/null
"$bin" --config "$work/config.toml" serve >>"$work/daemon.log" 2>&1 & pid=$!
until curl -sf "$base/readyz" >/dev/null 2>&1; do
  kill -0 "$pid" 2>/dev/null || { tail -20 "$work/daemon.log"; exit 1; }
  sleep 0.05
done
token=$(curl -sf -X POST "$base/api/v1/auth/token" -d username=admin -d password=bench-admin-password | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
key=$(curl -sf -X POST "$base/api/v1/keys" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' -d '{"name":"bench"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
python3 "$repo/benches/kb/ingest.py" "$base" "$key" vaswani "$shared/data/retrieval/vaswani/corpus/doc-text.trec" >/dev/null
python3 "$repo/benches/kb/queries.py" "$shared" > "$work/queries.json"
python3 "$repo/benches/answers/ttft.py" "$base" "$key" vaswani "$work/queries.json" 100 > "$work/ttft.json"
python3 - "$work/ttft.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
s, a, f = r["search"]["p50_ms"], r["ask_ttft"]["p50_ms"], r["first_token"]["p50_ms"]
print(f"ask time to first token on 11k chunks ({r['queries']} questions, prompt {r['prompt_tokens_p50']:.0f} tokens p50):")
print(f"  ask p50 {a:.1f} ms (p99 {r['ask_ttft']['p99_ms']:.1f}) | retrieval p50 {s:.1f} ms + prefill p50 {f:.1f} ms = {s + f:.1f} ms | "
      f"ratio {a / (s + f):.2f} (goal <= 1.0)")
PY
