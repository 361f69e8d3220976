#!/usr/bin/env bash
# On a machine with NVIDIA GPUs: runs the daemon against the real driver and compares its
# inventory and samples with nvidia-smi's (same UUIDs, memory within 1%, temperature within
# 2 °C, power within 5%). Exits non-zero on a mismatch. Needs no ONNX Runtime.
# Usage: bash scripts/gpu-check.sh   (or `just gpu-check`); GPU_CHECK_BIN=path uses a binary
# built elsewhere (a GPU host without the crates.io registry).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: this check needs a GPU host" >&2; exit 1; }
bin="${GPU_CHECK_BIN:-}"
if [[ -z "$bin" ]]; then
    cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
    bin="$repo/target/release/sparkbrain"
fi
work="$(mktemp -d)"
trap '[[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cat > "$work/config.toml" <<TOML
data_dir = "$work/data"
[server]
bind = "127.0.0.1:$port"
[runtime]
onnxruntime_library = "$work/no-onnxruntime.so"
[metrics]
public = true
[gpu]
sample_interval_ms = 500
[log]
level = "info"
format = "terminal"
TOML
"$bin" serve --config "$work/config.toml" > "$work/log" 2>&1 &
pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 200); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.05; done
printf 'admin-password-1\n' | "$bin" user add admin --role admin --password-stdin --config "$work/config.toml" >/dev/null
token="$(curl -sf -d username=admin -d password=admin-password-1 "$url/api/v1/auth/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"
sleep 3
echo "== nvidia-smi"
nvidia-smi --query-gpu=index,uuid,name,pci.bus_id,memory.total,temperature.gpu,power.draw,utilization.gpu --format=csv
for round in 1 2 3; do
  nvidia-smi --query-gpu=uuid,memory.total,temperature.gpu,power.draw --format=csv,noheader,nounits > "$work/smi.csv"
  curl -sf -H "Authorization: Bearer $token" "$url/api/v1/gpus" > "$work/gpus.json"
  echo "== round $round"
  python3 - "$work/smi.csv" "$work/gpus.json" <<'PY'
import json, sys
smi = [l.split(", ") for l in open(sys.argv[1]).read().strip().splitlines()]
ours = {g["uuid"]: g for g in json.load(open(sys.argv[2]))["gpus"]}
bad = 0
def check(what, ok, detail):
    global bad
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {detail}")
    bad += not ok
check("GPU count", len(smi) == len(ours), f"nvidia-smi {len(smi)}, sparkbrain {len(ours)}")
for uuid, mem_mib, temp, power in smi:
    g = ours.get(uuid)
    check(f"{uuid} known", g is not None, "same UUID")
    if g is None:
        continue
    s = g.get("sample") or {}
    ours_mib = g["memory_total_bytes"] / 2**20
    check(f"{uuid} memory", abs(ours_mib - float(mem_mib)) <= 0.01 * float(mem_mib), f"{ours_mib:.0f} vs {mem_mib} MiB")
    if temp.strip() not in ("[N/A]", "N/A"):
        check(f"{uuid} temperature", abs((s.get("gpu_temp_c") or -99) - float(temp)) <= 2, f"{s.get('gpu_temp_c')} vs {temp} C")
    if power.strip() not in ("[N/A]", "N/A"):
        p = s.get("power_watts") or 0.0
        check(f"{uuid} power", abs(p - float(power)) <= 0.05 * max(float(power), 1.0), f"{p:.1f} vs {power} W")
    print(f"     health {g['health']['health']} {g['health']['reasons']}")
sys.exit(1 if bad else 0)
PY
  sleep 1
done
echo "== /metrics (DCGM names)"
curl -sf "$url/metrics" | grep -E '^DCGM_FI_DEV_(GPU_UTIL|FB_USED|GPU_TEMP|POWER_USAGE)\{' | head -8
echo "== daemon log"
grep -E 'NVML|GPU|XID' "$work/log" | head -20
