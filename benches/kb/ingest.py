"""Uploads the Vaswani corpus (one .txt per document) to a collection and waits until every
document is indexed. Prints JSON: documents, chunks, seconds, chunks_per_s.

usage: ingest.py BASE_URL API_KEY COLLECTION CORPUS_FILE"""
import json, re, sys, threading, time
from concurrent.futures import ThreadPoolExecutor

import requests

base, key, coll, corpus = sys.argv[1:5]
H = {"Authorization": f"Bearer {key}"}
text = open(corpus, encoding="utf-8", errors="replace").read()
docs = re.findall(r"<DOC>\s*<DOCNO>\s*(\S+?)\s*</DOCNO>(.*?)</DOC>", text, re.S)
session = requests.Session()

r = session.post(f"{base}/api/v1/collections", json={"name": coll}, headers=H)
assert r.status_code == 201, r.text


# One keep-alive connection per client thread, as a real uploader keeps.
local = threading.local()


def upload(item):
    docno, body = item
    files = {"file": (f"{docno}.txt", " ".join(body.split()).encode(), "text/plain")}
    if not hasattr(local, "session"):
        local.session = requests.Session()
    for _ in range(5):
        r = local.session.post(f"{base}/api/v1/collections/{coll}/documents", files=files, headers=H)
        if r.status_code in (200, 202):
            return r.json()["id"]
        time.sleep(0.5)
    raise RuntimeError(r.text)


start = time.time()
with ThreadPoolExecutor(8) as pool:
    list(pool.map(upload, docs))
uploaded = time.time() - start
while True:
    c = session.get(f"{base}/api/v1/collections/{coll}", headers=H).json()
    busy = sum(c["counts"]["by_status"].get(s, 0) for s in ("queued", "extracting", "embedding"))
    if busy == 0:
        break
    time.sleep(0.2)
seconds = time.time() - start
print(json.dumps({
    "documents": c["counts"]["documents"],
    "failed": c["counts"]["by_status"].get("failed", 0),
    "chunks": c["counts"]["chunks"],
    "upload_seconds": uploaded,
    "seconds": seconds,
    "chunks_per_s": c["counts"]["chunks"] / seconds,
}))
