"""Search latency over HTTP, one client, one request at a time, per mode, once the collection's
vector index has calibrated its search list for its size on real queries (the last 40 of the
list are asked first for that; the figures are at the size it chose). Prints JSON.

usage: http_latency.py BASE_URL API_KEY COLLECTION QUERIES_JSON"""
import json, sys, time

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
out = {"calibration": cal}
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
