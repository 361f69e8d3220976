"""Uploads the Vaswani corpus (one .txt per document) to a new collection with
`sparkbrain ingest`, the product's own uploader, and waits until every document is indexed.
Prints JSON: documents, chunks, seconds, chunks_per_s.

usage: ingest.py SPARKBRAIN CONFIG BASE_URL API_KEY COLLECTION CORPUS_FILE WORK_DIR"""
import json, os, re, subprocess, sys, time
from pathlib import Path

import requests

exe, config, base, key, coll, corpus, work = sys.argv[1:8]
H = {"Authorization": f"Bearer {key}"}
text = open(corpus, encoding="utf-8", errors="replace").read()
docs = re.findall(r"<DOC>\s*<DOCNO>\s*(\S+?)\s*</DOCNO>(.*?)</DOC>", text, re.S)
folder = Path(work) / "corpus"
folder.mkdir(parents=True, exist_ok=True)
for docno, body in docs:
    (folder / f"{docno}.txt").write_text(" ".join(body.split()), encoding="utf-8")

start = time.time()
# Eight uploads in flight, as the earlier client had; the CLI returns once all are uploaded and
# the wait for indexing is measured here, so the upload phase shows on its own.
subprocess.run(
    [exe, "--config", config, "ingest", str(folder), "--collection", coll, "--create",
     "--jobs", "8", "--no-wait"],
    check=True, env={**os.environ, "SPARKBRAIN_API_KEY": key}, stdout=subprocess.DEVNULL)
uploaded = time.time() - start
session = requests.Session()
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
