"""Search latency over HTTP, one client, one request at a time, per mode, once the collection's
vector index has calibrated its search list for its size on real queries (the last 40 of the
list are asked first for that; the figures are at the size it chose) and its text index has
merged its segments to about one per core (the daemon does that once a collection has been
quiet for 30 s). Prints JSON.

usage: http_latency.py BASE_URL API_KEY COLLECTION QUERIES_JSON"""
import json, os, sys, time

import requests

base, key, coll, queries = sys.argv[1], sys.argv[2], sys.argv[3], json.load(open(sys.argv[4]))
s = requests.Session()
s.headers["Authorization"] = f"Bearer {key}"
for q in queries[-40:]:
    s.post(f"{base}/api/v1/search", json={"query": q, "collections": [coll], "top_k": 10, "mode": "vector"})
deadline = time.time() + 600
while True:
    state = s.get(f"{base}/api/v1/collections/{coll}").json()["index"]
    cal = state.get("calibration")
    if cal and cal["vectors"] * 10 >= state["vectors"] * 9 and cal["queries"] >= 32:
        break
    assert time.time() < deadline, f"no calibration after 600 s: {state}"
    time.sleep(0.5)
# The merge may keep a small segment beside one per core, so this waits a while, not forever.
deadline = time.time() + 90
while state.get("text_segments", 1) > os.cpu_count() and time.time() < deadline:
    time.sleep(0.5)
    state = s.get(f"{base}/api/v1/collections/{coll}").json()["index"]
out = {"calibration": cal, "text_segments": state.get("text_segments")}
for mode in ("text", "vector", "hybrid"):
    times = []
    for i, q in enumerate(queries):
        t = time.perf_counter()
        r = s.post(f"{base}/api/v1/search", json={"query": q, "collections": [coll], "top_k": 10, "mode": mode})
        elapsed = (time.perf_counter() - t) * 1000
        assert r.status_code == 200, r.text
        if i >= 10:
            times.append(elapsed)
    times.sort()
    out[mode] = {"p50_ms": times[len(times) // 2], "p99_ms": times[int(len(times) * 0.99) - 1]}
print(json.dumps(out))
