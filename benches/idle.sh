#!/usr/bin/env bash
# Idle footprint of `sparkbrain serve`: startup-to-ready time and resident memory with an empty
# store and the embedding model loaded, against the size of the model file itself.
#
# Goals: ready in under 1 s; idle RSS above the model's own size under 60 MB.
# Both runtime.memory_mode settings are measured.
# Usage: bash benches/idle.sh [RUNS]   (release build; needs `just fetch`)
set -euo pipefail

runs="${1:-5}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vendor="${VENDOR_DIR:-$repo/vendor}"
model="$vendor/models/all-MiniLM-L6-v2/model.onnx"
lib="$vendor/onnxruntime/libonnxruntime.so.1.31.1"
[[ -f "$model" && -f "$lib" ]] || { echo "vendor/ is incomplete: run \`just fetch\`" >&2; exit 1; }

cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
bin="$repo/target/release/sparkbrain"
work="$(mktemp -d)"
trap '[[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
model_bytes="$(stat -c %s "$model")"

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k/1024}'; }

# measure MODE: sets ready (ms) and rss (kB), medians over $runs starts.
measure() {
  local mode="$1" ready_ms=() rss_kb=() i start_ns end_ns
  for i in $(seq 1 "$runs"); do
    rm -rf "$work/data"
    cat > "$work/config.toml" <<TOML
data_dir = "$work/data"
[server]
bind = "127.0.0.1:$port"
[runtime]
onnxruntime_library = "$lib"
memory_mode = "$mode"
[models]
embedding_model = "$model"
embedding_tokenizer = "$vendor/models/all-MiniLM-L6-v2/tokenizer.json"
embedding_query_model = "$vendor/models/all-MiniLM-L6-v2/model.query-int8.onnx"
[log]
level = "warn"
format = "terminal"
TOML
    start_ns="$(date +%s%N)"
    env -u JOURNAL_STREAM -u NOTIFY_SOCKET "$bin" serve --config "$work/config.toml" 2>"$work/log" &
    pid=$!
    until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; do
      kill -0 "$pid" 2>/dev/null || { cat "$work/log" >&2; exit 1; }
      sleep 0.002
    done
    end_ns="$(date +%s%N)"
    ready_ms+=("$(( (end_ns - start_ns) / 1000000 ))")
    sleep 2 # let start-up allocations settle
    rss_kb+=("$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")")
    kill -TERM "$pid"
    wait "$pid" || true
    pid=
  done
  ready="$(median "${ready_ms[@]}")"
  rss="$(median "${rss_kb[@]}")"
  echo "$mode: ready ${ready_ms[*]} ms; rss ${rss_kb[*]} kB" >&2
}

model_kb=$(( model_bytes / 1024 ))
measure compact; c_ready=$ready; c_rss=$rss
measure fast; f_ready=$ready; f_rss=$rss

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a/b}'; }
echo
echo "sparkbrain idle benchmark: median of $runs starts; model file $(mb "$model_kb") MB"
printf '%-40s %12s %12s %8s\n' "metric (memory_mode)" "measured" "baseline" "ratio"
for m in compact fast; do
  if [[ $m == compact ]]; then r=$c_ready; k=$c_rss; else r=$f_ready; k=$f_rss; fi
  above=$(( k - model_kb ))
  printf '%-40s %9s MB %9s MB %7sx\n' "idle RSS vs model file ($m)" "$(mb "$k")" "$(mb "$model_kb")" "$(ratio "$k" "$model_kb")"
  printf '%-40s %9s MB %9s MB %8s\n' "RSS above model, goal < 60 ($m)" "$(mb "$above")" "60.0" "$(ratio "$above" 61440)"
  printf '%-40s %9s ms %9s ms %8s\n' "start to ready, goal < 1000 ($m)" "$r" "1000" "$(ratio "$r" 1000)"
done
printf '%-40s %9s MB %9s MB %7sx\n' "idle RSS compact vs fast" "$(mb "$c_rss")" "$(mb "$f_rss")" "$(ratio "$c_rss" "$f_rss")"
