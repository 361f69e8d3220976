#!/usr/bin/env bash
# `just bench-console`: the web console's first load in headless Chromium over loopback, beside
# the issue's budgets: bytes transferred (compressed, headers included) against 300 KB, and time
# until the sign-in form can be used against 500 ms. Needs `just deps` (Chromium, ui/'s npm
# packages) and `just fetch`. Not part of CI.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vendor="${VENDOR_DIR:-$repo/vendor}"
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
bin="$repo/target/release/sparkbrain"
work="$(mktemp -d)"
pid=""
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"; true; }
trap cleanup EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat > "$work/config.toml" <<TOML
data_dir = "$work/data"
[server]
bind = "127.0.0.1:$port"
[runtime]
onnxruntime_library = "$vendor/onnxruntime/libonnxruntime.so.1.31.1"
[models]
embedding_model = "$vendor/models/all-MiniLM-L6-v2/model.onnx"
embedding_tokenizer = "$vendor/models/all-MiniLM-L6-v2/tokenizer.json"
embedding_query_model = "$vendor/models/all-MiniLM-L6-v2/model.query-int8.onnx"
[log]
level = "warn"
TOML
password="bench-admin-password"
printf '%s\n' "$password" | "$bin" --config "$work/config.toml" user add admin --role admin --password-stdin >/dev/null
"$bin" --config "$work/config.toml" serve >"$work/daemon.log" 2>&1 & pid=$!
until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
  kill -0 "$pid" 2>/dev/null || { cat "$work/daemon.log"; exit 1; }
  sleep 0.05
done
result=$(node "$repo/benches/console/first_load.mjs" "http://127.0.0.1:$port" "$password" "${CONSOLE_BENCH_ROUNDS:-10}")
python3 - "$result" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
kb = r["first_load_bytes"] / 1000
print(f"console first load, median of {r['rounds']} fresh browser contexts (headless Chromium, loopback)")
print(f"  transferred   {kb:8.1f} KB in {r['first_load_requests']} requests | budget 300 KB | ratio {kb / 300:.2f}")
print(f"  interactive   {r['interactive_ms']:8.1f} ms | budget 500 ms | ratio {r['interactive_ms'] / 500:.2f}")
print(f"  sign in → Ask page ready {r['sign_in_to_ask_ms']:.1f} ms")
PY
