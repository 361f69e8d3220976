"""Timed reference loop for `just bench-generate`: reference_decode.py's greedy decode of the
stories260K ONNX model with onnxruntime in Python (BOS alone, one token per run with the KV
cache, 256 positions), and the prefill of a prompt in one run, timed separately.

Usage: python3 reference_timing.py MODEL_DIR THREADS PROMPT
Prints one JSON object: tokens/s of prefill and decode (medians of several runs).
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

here = Path(sys.argv[1])
threads = int(sys.argv[2])
prompt = sys.argv[3]
options = ort.SessionOptions()
options.intra_op_num_threads = threads
sess = ort.InferenceSession(str(here / "model.onnx"), options, providers=["CPUExecutionProvider"])
tok = Tokenizer.from_file(str(here / "tokenizer.json"))
kv_inputs = [i for i in sess.get_inputs() if i.name.startswith("past_key_values.")]
kv_heads, head_dim = kv_inputs[0].shape[1], kv_inputs[0].shape[3]
out_names = [o.name for o in sess.get_outputs()]


def empty_past():
    return {i.name: np.zeros((1, kv_heads, 0, head_dim), np.float32) for i in kv_inputs}


def decode(steps=256):
    """reference_decode.py's loop; returns the tokens generated."""
    past = empty_past()
    token, generated = 1, []
    for pos in range(steps):
        feed = {
            "input_ids": np.array([[token]], np.int64),
            "attention_mask": np.ones((1, pos + 1), np.int64),
            "position_ids": np.array([[pos]], np.int64),
            **past,
        }
        outputs = dict(zip(out_names, sess.run(None, feed)))
        token = int(np.argmax(outputs["logits"][0, -1]))
        if token in (1, 2):
            break
        generated.append(token)
        past = {name: outputs[name.replace("past_key_values.", "present.")] for name in past}
    return generated


def prefill(ids):
    """The whole prompt in one run, and the next token from its last position."""
    n = len(ids)
    feed = {
        "input_ids": np.array([ids], np.int64),
        "attention_mask": np.ones((1, n), np.int64),
        "position_ids": np.arange(n, dtype=np.int64)[None, :],
        **empty_past(),
    }
    outputs = dict(zip(out_names, sess.run(None, feed)))
    return int(np.argmax(outputs["logits"][0, -1]))


ids = [1] + tok.encode(prompt, add_special_tokens=False).ids
decode(64)  # warm-up
prefill(ids)

prefill_rates = []
for _ in range(30):
    t0 = time.perf_counter()
    prefill(ids)
    prefill_rates.append(len(ids) / (time.perf_counter() - t0))

decode_rates = []
completion = 0
for _ in range(7):
    t0 = time.perf_counter()
    completion = len(decode())
    decode_rates.append(completion / (time.perf_counter() - t0))

print(json.dumps({
    "threads": threads,
    "prompt_tokens": len(ids),
    "prefill_tokens_per_s": float(np.median(prefill_rates)),
    "completion_tokens": completion,
    "decode_tokens_per_s": float(np.median(decode_rates)),
    "onnxruntime": ort.__version__,
}))
