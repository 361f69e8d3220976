#!/usr/bin/env bash
# `just bench-generate`: the built-in ONNX generator's tokens/s on stories260K (../shared), beside
# the reference loop (benches/generate/reference_timing.py: reference_decode.py's loop in Python
# with onnxruntime, timed) in the same run, with the same intra-op threads:
#   prefill: a ~100-token prompt in one run; decode: greedy from BOS for 256 positions;
#   each at batch 1 and as 8 concurrent requests (aggregate; the reference has batch 1 only),
#   and 8 concurrent on two parallel sessions (sessions = 2, each with the same threads).
# Goals: decode at batch 1 >= 1.0x the reference; 8 concurrent >= 3x in aggregate.
# GEN_BENCH_THREADS sets the intra-op threads (default 1); GEN_BENCH_MEMORY_MODE=compact runs
# sparkbrain's side as the daemon's default runtime.memory_mode does (default: fast, onnxruntime's
# own defaults, as the reference has them). Needs `just fetch`. Not part of CI.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vendor="${VENDOR_DIR:-$repo/vendor}"
shared="${SHARED_DIR:-$repo/../shared}"
threads="${GEN_BENCH_THREADS:-1}"
model_dir="$shared/models/stories260k"
library="$vendor/onnxruntime/libonnxruntime.so.1.31.1"
prompt="Once upon a time, there was a little girl named Lily. She loved to play outside in the park with her friends. One day, she saw a big red ball under a tree. She wanted to play with it, but her mom said it was time to go home. Lily was sad, but she said goodbye to the ball and went home."

[[ -f "$model_dir/model.onnx" ]] || { echo "missing $model_dir/model.onnx (../shared)" >&2; exit 1; }
[[ -f "$library" ]] || { echo "missing $library: run 'just fetch'" >&2; exit 1; }
python3 -c "import numpy, onnxruntime, tokenizers" 2>/dev/null ||
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet -r "$repo/benches/generate/requirements.txt"
cargo bench --no-run --quiet --bench generate --manifest-path "$repo/Cargo.toml" 2>/dev/null

ours="$(cargo bench --quiet --bench generate --manifest-path "$repo/Cargo.toml" -- "$library" "$model_dir" "$threads" "$prompt")"
reference="$(python3 "$repo/benches/generate/reference_timing.py" "$model_dir" "$threads" "$prompt")"

OURS="$ours" REFERENCE="$reference" python3 - <<'PY'
import json, os
ours = json.loads(os.environ["OURS"])
ref = json.loads(os.environ["REFERENCE"])
b1, b8, s2 = ours["batch1"], ours["batch8"], ours["batch8_sessions2"]
print(f"stories260K generation, {ref['threads']} intra-op thread(s), onnxruntime {ref['onnxruntime']}, "
      f"sparkbrain memory_mode {ours['memory_mode']} (tokens/s, medians)")
print(f"{'':44} {'sparkbrain':>12} {'reference':>12} {'ratio':>7}")
rows = [
    (f"prefill, batch 1 ({b1['prompt_tokens']}-token prompt)", b1["prefill_tokens_per_s"], ref["prefill_tokens_per_s"], ""),
    (f"decode, batch 1 ({b1['completion_tokens']} tokens)", b1["decode_tokens_per_s"], ref["decode_tokens_per_s"], "goal >= 1.0x"),
    ("prefill, 8 concurrent (aggregate)", b8["prefill_tokens_per_s"], ref["prefill_tokens_per_s"], ""),
    ("decode, 8 concurrent (aggregate)", b8["decode_tokens_per_s"], ref["decode_tokens_per_s"], "goal >= 3x"),
    ("prefill, 8 concurrent, 2 sessions", s2["prefill_tokens_per_s"], ref["prefill_tokens_per_s"], ""),
    ("decode, 8 concurrent, 2 sessions", s2["decode_tokens_per_s"], ref["decode_tokens_per_s"], "goal >= 3x"),
]
for name, a, b, goal in rows:
    print(f"{name:44} {a:12.0f} {b:12.0f} {a / b:6.2f}x  {goal}")
print("(the reference runs one sequence at a time: its batch-1 figure is its figure for 8 requests)")
PY

# Time to first token of /api/v1/ask on a 10k-chunk collection, beside retrieval + prefill.
bash "$repo/benches/answers/ttft.sh"
