#!/usr/bin/env bash
# GPU supervision cost with 8 GPUs sampled every second: the sampler's CPU time per sample and
# as a share of one core, the CPU time of one /metrics scrape, and the scrape latency p99 under
# 32 concurrent scrapers (wrk), each beside its goal as a ratio.
#
# The GPUs are the fake NVML library of the tests (tests/fixtures/fake_nvml), the stand-in for
# the driver this machine lacks: the daemon's code path is the one it runs on a DGX box, but
# the driver's own cost per call is not in these figures.
#
# Goals: sampler < 1% of one core; scrape p99 < 5 ms.
# Usage: bash benches/gpu.sh [SECONDS]   (release build; needs wrk and cc)
set -euo pipefail

seconds="${1:-30}"
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 1; }

cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
bin="$repo/target/release/sparkbrain"
work="$(mktemp -d)"
trap '[[ -n "${pid:-}" ]] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT

cc -shared -fPIC -O2 -o "$work/libnvidia-ml.so.1" "$repo/tests/fixtures/fake_nvml/fake_nvml.c" -lpthread
python3 "$repo/benches/gpu/scenario.py" 8 > "$work/scenario.json"

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
nvml_library = "$work/libnvidia-ml.so.1"
sample_interval_ms = 1000
system_bus = "off"
[log]
level = "warn"
format = "terminal"
TOML
"$bin" serve --config "$work/config.toml" > "$work/log" 2>&1 &
pid=$!
url="http://127.0.0.1:$port"
for _ in $(seq 1 200); do curl -sf "$url/healthz" >/dev/null && break; sleep 0.05; done

metric() { curl -sf "$url/metrics" | awk -v n="$1" '$1 == n {print $2}'; }
gpus="$(curl -sf "$url/metrics" | grep -c '^DCGM_FI_DEV_GPU_UTIL{' || true)"
[[ "$gpus" == 8 ]] || { echo "expected 8 GPUs in /metrics, saw $gpus" >&2; cat "$work/log" >&2; exit 1; }

# Sampler: its own thread CPU clock, as the daemon exports it, over $seconds of 1 s samples.
r0="$(metric sparkbrain_gpu_samples_total)"; c0="$(metric sparkbrain_gpu_sampler_cpu_seconds_total)"
sleep "$seconds"
r1="$(metric sparkbrain_gpu_samples_total)"; c1="$(metric sparkbrain_gpu_sampler_cpu_seconds_total)"

# Scrape CPU: the whole process's CPU time over sequential scrapes, less the sampler's share.
ticks="$(getconf CLK_TCK)"
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
p0="$(cpu)"; c2="$(metric sparkbrain_gpu_sampler_cpu_seconds_total)"
wrk -t1 -c1 -d10s "$url/metrics" > "$work/wrk1"
p1="$(cpu)"; c3="$(metric sparkbrain_gpu_sampler_cpu_seconds_total)"
scrapes="$(awk '/requests in/ {print $1}' "$work/wrk1")"

# Latency under 32 concurrent scrapers.
wrk -t2 -c32 -d"${seconds}s" --latency "$url/metrics" > "$work/wrk32"

python3 - "$r0" "$r1" "$c0" "$c1" "$p0" "$p1" "$c2" "$c3" "$ticks" "$scrapes" "$work/wrk32" <<'PY'
import re, sys
r0, r1, c0, c1, p0, p1, c2, c3, ticks, scrapes = (float(x) for x in sys.argv[1:11])
wrk = open(sys.argv[11]).read()
rounds = r1 - r0
per_sample_ms = (c1 - c0) / rounds * 1000 if rounds else float("nan")
core_pct = (c1 - c0) / rounds * 100 if rounds else float("nan")  # one round per second
scrape_cpu_ms = ((p1 - p0) / ticks - (c3 - c2)) / scrapes * 1000
def ms(text):
    v, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()
    return float(v) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]
p50 = ms(re.search(r"50%\s+(\S+)", wrk).group(1))
p99 = ms(re.search(r"99%\s+(\S+)", wrk).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk).group(1))
print(f"8 GPUs, {rounds:.0f} samples at 1 s")
print(f"{'figure':<36} {'measured':>10} {'goal':>10} {'ratio':>7}")
print(f"{'sampler, % of one core':<36} {core_pct:>10.4f} {1.0:>10.2f} {core_pct/1.0:>7.4f}")
print(f"{'sampler CPU per sample (8 GPUs), ms':<36} {per_sample_ms:>10.3f} {'':>10} {'':>7}")
print(f"{'CPU per scrape (sequential), ms':<36} {scrape_cpu_ms:>10.3f} {'':>10} {'':>7}  ({scrapes:.0f} scrapes)")
print(f"{'scrape p50, 32 concurrent, ms':<36} {p50:>10.3f} {'':>10} {'':>7}")
print(f"{'scrape p99, 32 concurrent, ms':<36} {p99:>10.3f} {5.0:>10.2f} {p99/5.0:>7.3f}  ({rps:.0f} scrapes/s)")
PY
