"""Drives a running sparkbrain daemon through the retrieval benchmark (see benches/retrieval.sh).

Ingests each corpus into its own collection, runs every judged query in the three search modes
and prints one table: nDCG@10, MAP and recall@100 (top 100 documents) per collection and mode,
the BM25 reference beside `text`, XQuAD recall@5, ingestion times and the goals.
"""
import argparse
import json
import os
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpora  # noqa: E402
import metrics  # noqa: E402

MODES = ("text", "vector", "hybrid")
# The README's BM25 figures (bm25s, Snowball English, English stop words, k1=1.2, b=0.75).
REFERENCE = {"vaswani": (0.4362, 0.2870), "cranfield": (0.3699, 0.3067), "cisi": (0.3935, 0.2194)}
DEPTH = 100  # documents ranked per query for MAP and recall
CHUNK_DEPTH = 200  # hits asked for, so that DEPTH distinct documents remain after deduplication
XQUAD_K = 5


class Problems:
    """Unexpected answers of the daemon, kept to be reported at the end."""

    def __init__(self):
        self.lock = threading.Lock()
        self.items = []
        self.count = 0

    def add(self, what, resp=None, exc=None):
        with self.lock:
            self.count += 1
            if len(self.items) < 20:
                if resp is not None:
                    self.items.append(f"{what} -> HTTP {resp.status_code}: {resp.text[:300]}")
                else:
                    self.items.append(f"{what} -> {type(exc).__name__}: {exc}")


class Client:
    def __init__(self, url, token, problems):
        self.url, self.token, self.problems = url.rstrip("/"), token, problems
        self.local = threading.local()

    def session(self):
        s = getattr(self.local, "s", None)
        if s is None:
            s = self.local.s = requests.Session()
            s.headers["Authorization"] = f"Bearer {self.token}"
        return s

    def call(self, method, path, ok=(200,), **kw):
        what = f"{method} {path}"
        try:
            resp = self.session().request(method, self.url + path, timeout=120, **kw)
        except requests.RequestException as e:
            self.problems.add(what, exc=e)
            return None
        if resp.status_code not in ok:
            self.problems.add(what + (f" {kw['json']}" if "json" in kw else ""), resp=resp)
            return None
        return resp


def sign_in(url, user, password):
    resp = requests.post(f"{url}/api/v1/auth/token", data={"username": user, "password": password}, timeout=30)
    resp.raise_for_status()
    token = resp.json()["access_token"]
    # An API key does not expire like the 15-minute access token.
    resp = requests.post(f"{url}/api/v1/keys", json={"name": "bench-retrieval"},
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
    resp.raise_for_status()
    return resp.json()["key"]


def ingest(client, name, docs, threads):
    """Uploads docs into a new collection and waits until none is pending.

    Returns ({corpus id: document id}, stats)."""
    if client.call("POST", "/api/v1/collections", ok=(201,), json={"name": name}) is None:
        raise SystemExit(f"cannot create collection {name}: {client.problems.items[-1:]}")
    mapping, dup, empty = {}, 0, []
    lock = threading.Lock()

    def upload(item):
        nonlocal dup
        cid, text = item
        files = {"file": (f"{cid}.txt", text.encode("utf-8"), "text/plain")}
        if not text.strip():
            # Two Cranfield records have no text: a refusal (4xx) of an empty file is fine.
            resp = client.session().post(f"{client.url}/api/v1/collections/{name}/documents", files=files, timeout=60)
            if resp.status_code >= 500:
                client.problems.add(f"upload of the empty {name} document {cid}.txt", resp=resp)
            if resp.status_code not in (200, 202):
                with lock:
                    empty.append((cid, resp.status_code))
                return
        else:
            resp = client.call("POST", f"/api/v1/collections/{name}/documents", ok=(200, 202), files=files)
            if resp is None:
                return
        body = resp.json()
        with lock:
            mapping[cid] = body["id"]
            if resp.status_code == 200 and body.get("duplicate"):
                dup += 1

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(upload, docs))
    uploaded = time.monotonic() - started
    last = None
    while True:
        resp = client.call("GET", f"/api/v1/collections/{name}")
        if resp is None:
            raise SystemExit(f"cannot read collection {name}")
        counts = resp.json()["counts"]
        by = counts["by_status"]
        pending = sum(by.get(s, 0) for s in ("queued", "extracting", "embedding"))
        if pending == 0:
            break
        now = time.monotonic()
        if last is None or now - last[0] > 30:
            if last is not None and last[1] == pending:
                print(f"  {name}: still {pending} pending after 30 s without progress: {by}", file=sys.stderr)
            last = (now, pending)
        time.sleep(0.5)
    took = time.monotonic() - started
    failed = by.get("failed", 0)
    failures = []
    if failed:
        resp = client.call("GET", f"/api/v1/collections/{name}/documents", params={"status": "failed", "limit": 20})
        if resp is not None:
            failures = [{k: d.get(k) for k in ("id", "filename", "error")} for d in resp.json()["documents"]]
    stats = {"docs": len(docs), "accepted": len(mapping), "duplicates": dup, "documents": counts["documents"],
             "by_status": by, "chunks": counts["chunks"], "upload_s": uploaded, "ingest_s": took,
             "rejected": [c for c, _ in docs if c not in mapping], "rejected_empty": empty, "failures": failures}
    return mapping, stats


def search(client, name, query, mode, chunks):
    """Distinct document ids of a search, best first (first hit of each document)."""
    resp = client.call("POST", "/api/v1/search",
                       json={"query": query, "collections": [name], "top_k": chunks, "mode": mode})
    if resp is None:
        return None, None
    body = resp.json()
    seen, out = set(), []
    for hit in body["hits"]:
        if hit["document"] not in seen:
            seen.add(hit["document"])
            out.append(hit["document"])
    return out, body.get("took_ms")


def evaluate(client, name, queries, qrels, mapping, threads):
    """{mode: {"ndcg", "map", "recall", "failed", "ms"}} over the judged queries."""
    # A document id stands for every corpus id whose text it holds (duplicates): a retrieved
    # document is expanded to all of them, in corpus order, as a run over the corpus would list them.
    members = {}
    for cid, did in mapping.items():
        members.setdefault(did, []).append(cid)
    judged = [(qid, text) for qid, text in queries if qid in qrels]
    jobs = [(qid, text, mode) for qid, text in judged for mode in MODES]

    def run(job):
        qid, text, mode = job
        docs, ms = search(client, name, text, mode, CHUNK_DEPTH)
        if docs is None:
            return qid, mode, None, ms
        ranking = [cid for did in docs for cid in members.get(did, [])][:DEPTH]
        return qid, mode, ranking, ms

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(run, jobs))
    out = {}
    for mode in MODES:
        rows = [(qid, r, ms) for qid, m, r, ms in results if m == mode]
        runs = [(qid, r or []) for qid, r, _ in rows]
        out[mode] = {
            "queries": len(runs),
            "failed": sum(1 for _, r, _ in rows if r is None),
            "ndcg": statistics.fmean(metrics.ndcg(r, qrels[q], 10) for q, r in runs),
            "map": statistics.fmean(metrics.average_precision(r, qrels[q]) for q, r in runs),
            "recall": statistics.fmean(metrics.recall(r, qrels[q], DEPTH) for q, r in runs),
            "ms": statistics.median([ms for _, _, ms in rows if ms is not None] or [float("nan")]),
        }
    return out


def evaluate_xquad(client, questions, mapping, threads):
    jobs = [(q, pid, mode) for _, q, pid in questions for mode in MODES]

    def run(job):
        q, pid, mode = job
        docs, ms = search(client, "xquad", q, mode, 4 * XQUAD_K)
        if docs is None:
            return mode, None, ms
        return mode, mapping.get(pid) in docs[:XQUAD_K], ms

    with ThreadPoolExecutor(threads) as pool:
        results = list(pool.map(run, jobs))
    out = {}
    for mode in MODES:
        rows = [(ok, ms) for m, ok, ms in results if m == mode]
        out[mode] = {"questions": len(rows), "failed": sum(1 for ok, _ in rows if ok is None),
                     "recall5": sum(1 for ok, _ in rows if ok) / len(rows),
                     "ms": statistics.median([ms for _, ms in rows if ms is not None] or [float("nan")])}
    return out


def report(ir, xq, ingestion, problems, setup):
    print()
    print(f"sparkbrain retrieval benchmark ({setup})")
    print("Top 100 distinct documents per query (first hit of each document, from 200 chunk hits);")
    print("cranfield graded (grades 1,2,3,4,-1 -> gains 4,3,2,1,0), vaswani and cisi binary; judged queries only.")
    head = "{:<10} {:<7} {:>4} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>9}"
    print(head.format("collection", "mode", "qs", "nDCG@10", "BM25 ref", "diff", "MAP", "BM25 ref", "diff",
                      "R@100", "median ms"))
    for name, res in ir.items():
        ref_ndcg, ref_map = REFERENCE[name]
        for mode in MODES:
            r = res[mode]
            ref = (f"{ref_ndcg:.4f}", f"{r['ndcg'] - ref_ndcg:+.4f}", f"{ref_map:.4f}", f"{r['map'] - ref_map:+.4f}") \
                if mode == "text" else ("", "", "", "")
            print(head.format(name, mode, r["queries"], f"{r['ndcg']:.4f}", ref[0], ref[1], f"{r['map']:.4f}",
                              ref[2], ref[3], f"{r['recall']:.4f}", f"{r['ms']:.1f}"))
    if xq:
        for mode in MODES:
            r = xq[mode]
            print(head.format("xquad", mode, r["questions"], "", "", "", "", "", "",
                              f"R@5 {r['recall5']:.4f}", f"{r['ms']:.1f}"))
    print()
    print("ingestion (upload with 8 clients until no document is queued, extracting or embedding):")
    for name, s in ingestion.items():
        extra = []
        if s["duplicates"]:
            extra.append(f"{s['duplicates']} duplicate texts")
        if s["rejected"]:
            extra.append(f"{len(s['rejected'])} not accepted at upload ("
                         + ", ".join(f"{c}.txt empty -> HTTP {code}" for c, code in s["rejected_empty"][:5])
                         + ")")
        print(f"  {name:<10} {s['docs']:>6} docs -> {s['documents']:>6} documents, {s['chunks']:>6} chunks, "
              f"{s['ingest_s']:7.1f} s ({s['docs'] / s['ingest_s']:.0f} docs/s; uploads done at {s['upload_s']:.1f} s), "
              f"status {json.dumps(s['by_status'], sort_keys=True)}" + (f"; {', '.join(extra)}" if extra else ""))
        for f in s["failures"][:5]:
            print(f"    failed: {json.dumps(f)[:300]}")
    print()
    print("goals:")
    if ir:
        oks = [abs(res["text"]["ndcg"] - REFERENCE[n][0]) <= 0.02 for n, res in ir.items()]
        detail = ", ".join(f"{n} {res['text']['ndcg'] - REFERENCE[n][0]:+.4f}" for n, res in ir.items())
        print(f"  [{'met' if all(oks) else 'MISSED'}] text within +-0.02 nDCG@10 of the BM25 reference "
              f"({sum(oks)}/{len(oks)}: {detail})")
        wins = []
        for n, res in ir.items():
            best = max(res["text"]["ndcg"], res["vector"]["ndcg"])
            wins.append((n, res["hybrid"]["ndcg"] >= best, res["hybrid"]["ndcg"] - best,
                         res["hybrid"]["map"] >= max(res["text"]["map"], res["vector"]["map"])))
        n_ok = sum(1 for w in wins if w[1])
        verdict = "met" if n_ok >= 2 else "MISSED" if len(wins) == 3 or n_ok + 3 - len(wins) < 2 else "partial run"
        print(f"  [{verdict}] hybrid nDCG@10 >= the better single mode on at least two "
              f"of three collections ({n_ok}/{len(wins)}: "
              + ", ".join(f"{n} {d:+.4f}" for n, _, d, _ in wins)
              + f"; on MAP: {sum(1 for w in wins if w[3])}/{len(wins)})")
    if xq:
        meeting = [m for m in MODES if xq[m]["recall5"] >= 0.95]
        print(f"  [{'met' if meeting else 'MISSED'}] xquad recall@5 >= 0.95 "
              f"({'met by ' + ', '.join(meeting) if meeting else 'no mode'}; "
              + ", ".join(f"{m} {xq[m]['recall5']:.4f}" for m in MODES) + ")")
    failed = sum(r[m]["failed"] for r in ir.values() for m in MODES) + sum(xq[m]["failed"] for m in MODES if xq)
    print()
    if problems.count:
        print(f"daemon problems: {problems.count} unexpected answers ({failed} searches failed), first ones:")
        for p in problems.items:
            print(f"  {p}")
    else:
        print("daemon problems: none (every request answered as expected)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--user", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--shared", required=True)
    ap.add_argument("--collections", default="vaswani,cranfield,cisi,xquad")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--search-threads", type=int, default=4)
    ap.add_argument("--setup", default="")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()

    problems = Problems()
    client = Client(args.url, sign_in(args.url, args.user, args.password), problems)
    root = os.path.join(args.shared, "data", "retrieval")
    wanted = [c for c in args.collections.split(",") if c]
    ir, xq, ingestion = {}, None, {}
    for name in wanted:
        if name == "xquad":
            docs, questions = corpora.xquad(os.path.join(args.shared, "data", "qa", "xquad", "xquad.en.json"))
        else:
            docs, queries, qrels = corpora.COLLECTIONS[name](root)
        print(f"{name}: ingesting {len(docs)} documents…", file=sys.stderr)
        mapping, ingestion[name] = ingest(client, name, docs, args.threads)
        s = ingestion[name]
        print(f"{name}: {s['ingest_s']:.1f} s, {s['chunks']} chunks, {s['by_status']}", file=sys.stderr)
        if name == "xquad":
            print(f"{name}: {len(questions)} questions x {len(MODES)} modes…", file=sys.stderr)
            xq = evaluate_xquad(client, questions, mapping, args.search_threads)
        else:
            print(f"{name}: {sum(1 for q, _ in queries if q in qrels)} judged queries x {len(MODES)} modes…",
                  file=sys.stderr)
            ir[name] = evaluate(client, name, queries, qrels, mapping, args.search_threads)
    report(ir, xq, ingestion, problems, args.setup)
    if args.json:
        json.dump({"ir": ir, "xquad": xq, "ingestion": ingestion, "problems": problems.items}, open(args.json, "w"),
                  indent=2, default=str)
    return 1 if problems.count else 0


if __name__ == "__main__":
    sys.exit(main())
