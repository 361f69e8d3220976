#!/usr/bin/env python3
"""Baselines for `just bench-serving`, on the same model, tokenizer settings and threads.

  inproc SENTENCES.json [N]    sentences/s of onnxruntime in process, best mode: length-sorted
                               batches of 32, tokenisation included, N sessions side by side
                               sharing the threads (default 1) (prints JSON)
  rawrun [MODEL]               p50/p99 of session.run for one 16-token input, on MiniLM or on
                               MODEL (a model taking input_ids alone) (prints JSON)
  fastapi PORT                 serve POST /embed {"text": …} with FastAPI + uvicorn, one worker,
                               session created once, sync endpoint (runs in FastAPI's threadpool)
"""

import json
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests" / "fixtures"))
import numpy as np  # noqa: E402
from embed_reference import load_tokenizer, make_session  # noqa: E402

THREADS = 2


def embed_batch(session, tokenizer, texts):
    enc = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in enc], dtype=np.int64)
    mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
    out = session.run(["last_hidden_state"], {
        "input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
    pooled = (out * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
    return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def inproc(path, sessions="1"):
    texts = json.loads(Path(path).read_text())
    count = int(sessions)
    tokenizer = load_tokenizer()
    runners = [make_session(threads=max(1, THREADS // count)) for _ in range(count)]
    order = sorted(range(len(texts)), key=lambda i: len(tokenizer.encode(texts[i]).ids))
    batches = [[texts[j] for j in order[i:i + 32]] for i in range(0, len(order), 32)]
    for session in runners:
        embed_batch(session, tokenizer, texts[:32])  # warm-up
    claim, taken = threading.Lock(), iter(range(len(batches)))

    def drain(session):
        # onnxruntime releases the GIL while it runs, so the sessions run side by side.
        while True:
            with claim:
                i = next(taken, None)
            if i is None:
                return
            embed_batch(session, tokenizer, batches[i])

    start = time.perf_counter()
    workers = [threading.Thread(target=drain, args=(s,)) for s in runners]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    print(json.dumps({"sentences_per_s": len(texts) / elapsed, "sessions": count}))


def rawrun(model=None):
    ids = np.array([[101] + [2000 + i for i in range(14)] + [102]], dtype=np.int64)
    if model:
        session, feed = make_session(model, threads=THREADS), {"input_ids": ids}
    else:
        session = make_session(threads=THREADS)
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    for _ in range(20):
        session.run(None, feed)
    times = []
    for _ in range(500):
        t = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    print(json.dumps({"p50_ms": statistics.median(times), "p99_ms": times[int(len(times) * 0.99) - 1]}))


def fastapi(port):
    from fastapi import FastAPI
    from pydantic import BaseModel
    import uvicorn

    session, tokenizer = make_session(threads=THREADS), load_tokenizer()
    app = FastAPI()

    class Body(BaseModel):
        text: str

    @app.post("/embed")
    def embed(body: Body):
        return {"embedding": embed_batch(session, tokenizer, [body.text])[0].tolist()}

    uvicorn.run(app, host="127.0.0.1", port=int(port), workers=1, log_level="warning")


if __name__ == "__main__":
    {"inproc": inproc, "rawrun": rawrun, "fastapi": fastapi}[sys.argv[1]](*sys.argv[2:])
