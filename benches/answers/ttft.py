"""Time to first token of /api/v1/ask against its parts, on an indexed collection.

For each query: the latency of the same retrieval alone (POST /api/v1/search, hybrid, top 5),
the time to the first streamed `delta` of POST /api/v1/ask (client side), and the generator's
own time from prompt to first text (`first_token_ms` of the `done` event: the prompt's prefill
plus one decoding step). Prints JSON with the p50/p99 of each.

usage: ttft.py BASE_URL API_KEY COLLECTION QUERIES_JSON [N]"""
import json, statistics, sys, time

import requests

base, key, coll, queries = sys.argv[1:5]
n = int(sys.argv[5]) if len(sys.argv) > 5 else 100
H = {"Authorization": f"Bearer {key}"}
qs = json.load(open(queries))[:n]
s = requests.Session()


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p * len(xs) + 0.5)) - 1))]


search, ttft, first, prompt_tokens = [], [], [], []
for q in qs:
    t = time.perf_counter()
    r = s.post(f"{base}/api/v1/search", json={"query": q, "collections": [coll], "top_k": 5, "mode": "hybrid"}, headers=H)
    r.raise_for_status()
    search.append((time.perf_counter() - t) * 1000)

    t = time.perf_counter()
    r = s.post(f"{base}/api/v1/ask", json={"question": q, "collections": [coll], "top_k": 5, "max_tokens": 8, "stream": True},
               headers=H, stream=True)
    r.raise_for_status()
    event, got_first = None, False
    for line in r.iter_lines(decode_unicode=True):
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            if event == "delta" and not got_first:
                ttft.append((time.perf_counter() - t) * 1000)
                got_first = True
            elif event == "done":
                done = json.loads(line[5:])
                first.append(done["first_token_ms"])
                prompt_tokens.append(done["usage"]["prompt_tokens"])
            elif event == "error":
                raise RuntimeError(line)
    r.close()

out = {name: {"p50_ms": statistics.median(xs), "p99_ms": pct(xs, 0.99)}
       for name, xs in (("search", search), ("ask_ttft", ttft), ("first_token", first))}
out["queries"] = len(qs)
out["prompt_tokens_p50"] = statistics.median(prompt_tokens)
print(json.dumps(out))
