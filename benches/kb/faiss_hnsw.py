"""FAISS HNSW on the same vectors as sparkbrain's index (written by kb_search): HNSWFlat,
inner product, M=16, efConstruction=128, one thread, one query at a time; recall@10 against
the same exact answers. Prints JSON.

usage: faiss_hnsw.py DIR DIMENSIONS"""
import json, sys, time

import faiss
import numpy as np

d, dims = sys.argv[1], int(sys.argv[2])
base = np.fromfile(f"{d}/base.f32", dtype="<f4").reshape(-1, dims)
ids = np.fromfile(f"{d}/base.ids", dtype="<u8")
queries = np.fromfile(f"{d}/queries.f32", dtype="<f4").reshape(-1, dims)
truth = np.fromfile(f"{d}/truth.ids", dtype="<u8").reshape(-1, 10)
faiss.omp_set_num_threads(2)
index = faiss.IndexHNSWFlat(dims, 16, faiss.METRIC_INNER_PRODUCT)
index.hnsw.efConstruction = 128
t = time.time()
index.add(base)
build = time.time() - t
faiss.omp_set_num_threads(1)
sweep = []
for ef in (16, 32, 64, 128, 256, 384, 512, 768, 1024, 2048):
    index.hnsw.efSearch = ef
    t = time.perf_counter()
    hit = 0
    for q, tr in zip(queries, truth):
        _, found = index.search(q[None, :], 10)
        hit += len(set(ids[found[0][found[0] >= 0]]) & set(tr))
    secs = time.perf_counter() - t
    sweep.append({"ef": ef, "recall_at_10": hit / truth.size, "queries_per_s": len(queries) / secs})
print(json.dumps({"build_seconds": build, "sweep": sweep}))
