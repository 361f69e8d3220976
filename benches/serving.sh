#!/usr/bin/env bash
# `just bench-serving`: model serving against its baselines, on the same model, tokenizer settings
# and 2 intra-op threads (this machine's cores). Prints each figure beside its baseline and ratio.
#   1. /v1/embeddings, one sentence a request, at 1, 8, 32 and 128 concurrent clients (wrk),
#      against onnxruntime in process in its best mode (length-sorted batches of 32).
#   2. The same load against the original design's FastAPI + uvicorn server (one worker).
#   3. KServe /infer batch-1 latency against raw session.run (p50, p99).
# Needs `just fetch`; installs wrk and the Python packages it uses. Not part of CI.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
here="$repo/benches/serving"
vendor="${VENDOR_DIR:-$repo/vendor}"
duration="${BENCH_SECONDS:-10}"
shared="${SHARED_DIR:-$repo/../shared}"

command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null || sudo apt-get install -y -qq wrk >/dev/null; }
python3 -c "import fastapi, uvicorn, onnxruntime, tokenizers" 2>/dev/null ||
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet -r "$here/requirements.txt"
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
bin="$repo/target/release/sparkbrain"

work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Sentences: the Cranfield titles.
python3 - "$shared/data/retrieval/cranfield/cran.all.1400" "$work" <<'PY'
import json, re, sys
text = open(sys.argv[1]).read()
titles = [" ".join(t.split()) for t in re.findall(r"\.T\n(.*?)\n\.A", text, re.S)]
titles = [t for t in titles if t]
json.dump(titles, open(sys.argv[2] + "/sentences.json", "w"))
with open(sys.argv[2] + "/openai.jsonl", "w") as f:
    for t in titles:
        f.write(json.dumps({"model": "minilm", "input": t}) + "\n")
with open(sys.argv[2] + "/fastapi.jsonl", "w") as f:
    for t in titles:
        f.write(json.dumps({"text": t}) + "\n")
# A model that does next to nothing but answers a tensor as large as MiniLM's: /infer on it
# measures the serving path alone.
import numpy as np, onnx, os
from onnx import TensorProto, helper, numpy_helper
os.makedirs(sys.argv[2] + "/repo/echo/1")
consts = [numpy_helper.from_array(np.array([1, 16, 384], dtype=np.int64), "shape"),
          numpy_helper.from_array(np.array([2], dtype=np.int64), "axes")]
graph = helper.make_graph(
    [helper.make_node("Cast", ["input_ids"], ["f"], to=TensorProto.FLOAT),
     helper.make_node("Unsqueeze", ["f", "axes"], ["u"]),
     helper.make_node("Expand", ["u", "shape"], ["last_hidden_state"])],
    "echo", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 16])],
    [helper.make_tensor_value_info("last_hidden_state", TensorProto.FLOAT, [1, 16, 384])], consts)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
model.ir_version = 8
onnx.save(model, sys.argv[2] + "/repo/echo/1/model.onnx")
ids = [101] + [2000 + i for i in range(14)] + [102]
with open(sys.argv[2] + "/echo.jsonl", "w") as f:
    f.write(json.dumps({"inputs": [{"name": "input_ids", "shape": [1, 16], "datatype": "INT64", "data": ids}]}) + "\n")
with open(sys.argv[2] + "/infer.jsonl", "w") as f:
    f.write(json.dumps({"inputs": [
        {"name": n, "shape": [1, 16], "datatype": "INT64", "data": d}
        for n, d in (("input_ids", ids), ("attention_mask", [1] * 16), ("token_type_ids", [0] * 16))]}) + "\n")
PY

# The daemon, with MiniLM as a batching text model.
mkdir -p "$work/repo/minilm/1"
cp "$vendor/models/all-MiniLM-L6-v2/model.onnx" "$vendor/models/all-MiniLM-L6-v2/tokenizer.json" "$work/repo/minilm/1/"
cat > "$work/repo/minilm/config.pbtxt" <<'PBTXT'
name: "minilm"
platform: "onnxruntime_onnx"
max_batch_size: 32
input [
  { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "token_type_ids" data_type: TYPE_INT64 dims: [ -1 ] }
]
output [ { name: "last_hidden_state" data_type: TYPE_FP32 dims: [ -1, 384 ] } ]
dynamic_batching { max_queue_delay_microseconds: 2000 default_queue_policy { max_queue_size: 4096 } }
parameters { key: "task" value: { string_value: "embedding" } }
parameters { key: "max_length" value: { string_value: "256" } }
PBTXT
# The same model without batching or text task, for the batch-1 latency of /infer: a batching
# model would add its max_queue_delay to every lone request.
mkdir -p "$work/repo/minilm_direct/1"
cp "$vendor/models/all-MiniLM-L6-v2/model.onnx" "$work/repo/minilm_direct/1/"
sb_port="$(port)"
cat > "$work/config.toml" <<TOML
data_dir = "$work/data"
[server]
bind = "127.0.0.1:$sb_port"
[runtime]
onnxruntime_library = "$vendor/onnxruntime/libonnxruntime.so.1.31.1"
intra_op_threads = 2
[models]
embedding_model = "$vendor/models/all-MiniLM-L6-v2/model.onnx"
embedding_tokenizer = "$vendor/models/all-MiniLM-L6-v2/tokenizer.json"
embedding_query_model = "$vendor/models/all-MiniLM-L6-v2/model.query-int8.onnx"
[serving]
repository = "$work/repo"
memory_mode = "${MEMORY_MODE:-fast}"
[log]
level = "warn"
TOML
echo "bench-admin-password" | "$bin" user add bench --role admin --password-stdin --config "$work/config.toml" >/dev/null
env -u JOURNAL_STREAM "$bin" serve --config "$work/config.toml" 2>"$work/daemon.log" &
pids+=($!)
until curl -sf "http://127.0.0.1:$sb_port/readyz" >/dev/null; do sleep 0.1; done
token="$(curl -s -d 'username=bench&password=bench-admin-password' "http://127.0.0.1:$sb_port/api/v1/auth/token" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"

# wrk CONNECTIONS URL BODIES -> "rps p50_ms p99_ms non2xx"
load() {
  local out
  out="$(TOKEN="$4" BODIES_FILE="$3" wrk -t"$(( $1 < 2 ? 1 : 2 ))" -c"$1" -d"${duration}s" --timeout 30s --latency -s "$here/post.lua" "$2")"
  python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
def ms(label):
    m = re.search(r"\s" + label + r"\s+([\d.]+)(us|ms|s)", out)
    if not m:
        return float("nan")
    v, unit = float(m.group(1)), m.group(2)
    return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
errors = re.search(r"Socket errors:.*", out)
print(f"{rps:.1f} {ms('50%'):.2f} {ms('99%'):.2f} {int(non2xx.group(1)) if non2xx else 0}{' socket-errors' if errors else ''}")
PY
}

# This shared machine's speed drifts by up to ~15% within minutes, so every figure is taken
# next to its baseline: the in-process run right before each load point, FastAPI right after
# sparkbrain at the same load, and raw session.run alternating with /infer.
fa_port="$(port)"
python3 "$here/baselines.py" fastapi "$fa_port" 2>"$work/fastapi.log" &
pids+=($!)
until curl -sf -o /dev/null -X POST -H 'Content-Type: application/json' -d '{"text":"x"}' "http://127.0.0.1:$fa_port/embed"; do sleep 0.2; done
inproc_rate() { python3 "$here/baselines.py" inproc "$work/sentences.json" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["sentences_per_s"], 1))'; }
declare -A sb inproc fa
for c in 1 8 32 128; do
  echo "in-process baseline, then sparkbrain /v1/embeddings at $c clients…" >&2
  inproc[$c]="$(inproc_rate)"
  sb[$c]="$(load "$c" "http://127.0.0.1:$sb_port/v1/embeddings" "$work/openai.jsonl" "$token")"
  if [ "$c" -ge 32 ]; then
    echo "FastAPI at $c clients…" >&2
    fa[$c]="$(load "$c" "http://127.0.0.1:$fa_port/embed" "$work/fastapi.jsonl" "")"
  fi
done
rss_kb="$(awk '/^VmRSS/ {print $2}' "/proc/${pids[0]}/status")"
kill "${pids[1]}" 2>/dev/null || true

echo "KServe batch-1 latency, alternating with raw session.run…" >&2
cargo bench --quiet --manifest-path "$repo/Cargo.toml" --bench raw_run --no-run 2>/dev/null
raws=(); rust_raws=(); kserves=(); echo_raws=(); echo_kserves=()
for round in 1 2 3; do
  raws+=("$(python3 "$here/baselines.py" rawrun)")
  rust_raws+=("$(cargo bench --quiet --manifest-path "$repo/Cargo.toml" --bench raw_run -- \
    "$vendor/onnxruntime/libonnxruntime.so.1.31.1" "$vendor/models/all-MiniLM-L6-v2/model.onnx" 2>/dev/null)")
  kserves+=("$(duration=4 load 1 "http://127.0.0.1:$sb_port/v2/models/minilm_direct/infer" "$work/infer.jsonl" "$token")")
  echo_raws+=("$(python3 "$here/baselines.py" rawrun "$work/repo/echo/1/model.onnx")")
  echo_kserves+=("$(duration=3 load 1 "http://127.0.0.1:$sb_port/v2/models/echo/infer" "$work/echo.jsonl" "$token")")
done
median_raw() {
  python3 - "$@" <<'PY'
import json, statistics, sys
runs = [json.loads(a) for a in sys.argv[1:]]
print(json.dumps({k: statistics.median(r[k] for r in runs) for k in ("p50_ms", "p99_ms")}))
PY
}
median_load() {
  python3 - "$@" <<'PY'
import statistics, sys
runs = [a.split() for a in sys.argv[1:]]
print(" ".join(str(statistics.median(float(r[i]) for r in runs)) for i in range(3)) + " 0")
PY
}
raw="$(median_raw "${raws[@]}")"
rust_raw="$(median_raw "${rust_raws[@]}")"
kserve="$(median_load "${kserves[@]}")"
echo_raw="$(median_raw "${echo_raws[@]}")"
echo_kserve="$(median_load "${echo_kserves[@]}")"

python3 - "$raw" "$kserve" "$echo_raw" "$echo_kserve" "$rss_kb" "${inproc[1]}" "${inproc[8]}" "${inproc[32]}" "${inproc[128]}" "${sb[1]}" "${sb[8]}" "${sb[32]}" "${sb[128]}" "${fa[32]}" "${fa[128]}" "$rust_raw" <<'PY'
import json, sys
raw = json.loads(sys.argv[1]); kserve = sys.argv[2].split()
echo_raw = json.loads(sys.argv[3]); echo_kserve = sys.argv[4].split(); rss = int(sys.argv[5])
inproc = {c: float(v) for c, v in zip((1, 8, 32, 128), sys.argv[6:10])}
sb = {c: v.split() for c, v in zip((1, 8, 32, 128), sys.argv[10:14])}
fa = {c: v.split() for c, v in zip((32, 128), sys.argv[14:16])}
rust_raw = json.loads(sys.argv[16])
row = "{:<56} {:>10} {:>10} {:>9}"
print()
print("sparkbrain serving benchmark (2 intra-op threads, all-MiniLM-L6-v2 int8, Cranfield titles)")
print(row.format("metric", "measured", "baseline", "ratio"))
for c in (1, 8, 32, 128):
    rps = float(sb[c][0])
    print(row.format(f"1. /v1/embeddings sentences/s, {c} clients (vs in-process)", f"{rps:.1f}", f"{inproc[c]:.1f}", f"{rps / inproc[c]:.2f}"))
for c in (32, 128):
    s_rps, s_p99, s_err = float(sb[c][0]), float(sb[c][2]), sb[c][3]
    f_rps, f_p99, f_err = float(fa[c][0]), float(fa[c][2]), fa[c][3]
    print(row.format(f"2. throughput, {c} clients (vs FastAPI+uvicorn)", f"{s_rps:.1f}", f"{f_rps:.1f}", f"{s_rps / f_rps:.2f}"))
    print(row.format(f"2. p50 ms, {c} clients (vs FastAPI+uvicorn)", f"{float(sb[c][1]):.1f}", f"{float(fa[c][1]):.1f}", f"{float(sb[c][1]) / float(fa[c][1]):.2f}"))
    print(row.format(f"2. p99 ms, {c} clients (vs FastAPI+uvicorn)", f"{s_p99:.1f}", f"{f_p99:.1f}", f"{s_p99 / f_p99:.2f}"))
    print(row.format(f"2. non-200 answers, {c} clients (sparkbrain / FastAPI)", s_err, f_err, ""))
for q, key in ((1, "p50_ms"), (2, "p99_ms")):
    label = "p50" if q == 1 else "p99"
    got = float(kserve[q])
    print(row.format(f"3. KServe /infer batch-1 {label} ms (vs raw session.run)", f"{got:.2f}", f"{raw[key]:.2f}", f"+{got - raw[key]:.2f} ms"))
for key in ("p50_ms", "p99_ms"):
    label = key[:3]
    print(row.format(f"3. raw session.run {label} ms from Rust (vs from Python)", f"{rust_raw[key]:.2f}", f"{raw[key]:.2f}", f"{rust_raw[key] / raw[key]:.2f}"))
for q, key in ((1, "p50_ms"), (2, "p99_ms")):
    label = "p50" if q == 1 else "p99"
    got = float(echo_kserve[q])
    print(row.format(f"3. serving path alone: /infer {label} ms on a no-op model", f"{got:.2f}", f"{echo_raw[key]:.2f}", f"+{got - echo_raw[key]:.2f} ms"))
print(row.format("daemon RSS after the load, MB", f"{rss / 1024:.1f}", "", ""))
PY
