#!/usr/bin/env bash
# Idle footprint of `sparkbrain serve`: startup-to-ready time and resident memory with an empty
# store and the embedding model loaded, against the size of the model file itself.
#
# Goals: ready in under 1 s; idle RSS above the model's own size under 60 MB.
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
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
model_bytes="$(stat -c %s "$model")"

ready_ms=()
rss_kb=()
for i in $(seq 1 "$runs"); do
  rm -rf "$work/data"
  cat > "$work/config.toml" <<TOML
data_dir = "$work/data"
[server]
bind = "127.0.0.1:$port"
[runtime]
onnxruntime_library = "$lib"
[models]
embedding_model = "$model"
embedding_tokenizer = "$vendor/models/all-MiniLM-L6-v2/tokenizer.json"
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

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
ready="$(median "${ready_ms[@]}")"
rss="$(median "${rss_kb[@]}")"
model_mb="$(awk -v b="$model_bytes" 'BEGIN {printf "%.1f", b/1048576}')"
rss_mb="$(awk -v k="$rss" 'BEGIN {printf "%.1f", k/1024}')"
above_mb="$(awk -v k="$rss" -v b="$model_bytes" 'BEGIN {printf "%.1f", (k*1024-b)/1048576}')"
ratio="$(awk -v k="$rss" -v b="$model_bytes" 'BEGIN {printf "%.2f", k*1024/b}')"

echo "sparkbrain idle benchmark: $runs runs, median (runs: ready ${ready_ms[*]} ms; rss ${rss_kb[*]} kB)"
printf '%-34s %12s %14s %8s\n' "metric" "measured" "baseline" "ratio"
printf '%-34s %10s MB %11s MB %7sx\n' "idle RSS vs model file size" "$rss_mb" "$model_mb" "$ratio"
printf '%-34s %10s MB %11s MB %8s\n' "RSS above the model (goal < 60)" "$above_mb" "60.0" "$(awk -v a="$above_mb" 'BEGIN {printf "%.2f", a/60}')"
printf '%-34s %10s ms %11s ms %8s\n' "start to ready (goal < 1000)" "$ready" "1000" "$(awk -v r="$ready" 'BEGIN {printf "%.2f", r/1000}')"
