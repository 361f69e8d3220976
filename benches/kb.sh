#!/usr/bin/env bash
# `just bench-kb`: the knowledge base's speed, each figure beside its baseline.
#   1. Ingestion: chunks/s from upload to indexed over the Vaswani corpus (11,429 documents,
#      uploaded by `sparkbrain ingest` with 8 uploads in flight), against the embedding model's raw batch throughput (onnxruntime in process, batches of 32)
#      on the same texts.
#   2. Search latency p50/p99 per mode (text, vector, hybrid), in process and over HTTP, at each
#      size of KB_BENCH_SIZES (default 10000 100000 1000000 chunks; the corpus is grown by
#      repetition with new ids, vectors blended with other real ones; see kb/grow.py), with the vector path's recall@10
#      against exact search and its queries/s beside FAISS HNSW on the same vectors.
#   3. Start-up: time from start to ready with the indexes of each size on disk.
# Needs `just fetch`; installs the Python packages it uses. Not part of CI. The 1M step takes
# a long while (building the indexes once); KB_BENCH_SIZES="10000 100000" is quicker.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vendor="${VENDOR_DIR:-$repo/vendor}"
shared="${SHARED_DIR:-$repo/../shared}"
sizes="${KB_BENCH_SIZES:-10000 100000 1000000}"
scalar="${KB_BENCH_SCALAR:-bf16}"
# The knowledge base wants the embedding model in "fast" mode: "compact" (the default, for a
# small idle footprint) adds ~50 ms to every run, which a one-sentence query embedding feels.
memory_mode="${KB_BENCH_MEMORY_MODE:-fast}"
# One embedding session per core: an ingestion's batches run side by side (see
# models.embedding_instances in the default configuration).
instances="${KB_BENCH_INSTANCES:-$(nproc)}"

python3 -c "import faiss, numpy, requests, onnxruntime, tokenizers" 2>/dev/null ||
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet -r "$repo/benches/kb/requirements.txt"
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"
cargo bench --no-run --quiet --bench kb_search --manifest-path "$repo/Cargo.toml" 2>/dev/null

work="${KB_BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$work"
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; [[ -z "${KB_BENCH_DIR:-}" ]] && rm -rf "$work"; true; }
source "$repo/benches/daemon.sh"
trap cleanup EXIT
write_config "$config" "$work/data" "$memory_mode" "$instances" <<TOML
[kb]
vector_scalar = "$scalar"
TOML

# Real queries: the three retrieval collections' and the first XQuAD questions, 300 in all.
python3 "$repo/benches/kb/queries.py" "$shared" > "$work/queries.json"

if [[ ! -f "$work/data/sparkbrain.db" ]]; then
  printf '%s\n' "bench-admin-password" | sb user add admin --role admin --password-stdin >/dev/null
fi
start
echo "start-up (empty): $ready s" >&2
key=$(admin_key bench-admin-password)

if [[ -n "${KB_BENCH_SKIP_INGEST:-}" ]]; then
  # Reusing KB_BENCH_DIR from an earlier run: its collection is there already.
  stop
else
echo "== 1. ingestion" >&2
ingest=$(python3 "$repo/benches/kb/ingest.py" "$bin" "$config" "$base" "$key" vaswani "$shared/data/retrieval/vaswani/corpus/doc-text.trec" "$work")
stop
python3 - "$work/data/sparkbrain.db" "$work/texts.json" <<'PY'
import json, sqlite3, sys
json.dump([r[0] for r in sqlite3.connect(sys.argv[1]).execute("SELECT text FROM chunks ORDER BY id")], open(sys.argv[2], "w"))
PY
# The raw yardstick, both ways: one session on every core, and one single-thread session per
# core side by side; the ratio is taken against the faster.
raw_one=$(python3 "$repo/benches/serving/baselines.py" inproc "$work/texts.json" 1)
raw_each=$(python3 "$repo/benches/serving/baselines.py" inproc "$work/texts.json" "$(nproc)")
python3 - "$ingest" "$raw_one" "$raw_each" "$instances" <<'PY'
import json, sys
i, one, each = (json.loads(a) for a in sys.argv[1:4])
best = max(one["sentences_per_s"], each["sentences_per_s"])
print(f"ingestion: {i['documents']} documents, {i['chunks']} chunks in {i['seconds']:.1f} s "
      f"(uploads done after {i['upload_seconds']:.1f} s, {i['failed']} failed), {sys.argv[4]} embedding sessions")
print(f"  raw embedding: one session {one['sentences_per_s']:.1f} texts/s, "
      f"{each['sessions']} sessions side by side {each['sentences_per_s']:.1f} texts/s")
print(f"  pipeline {i['chunks_per_s']:.1f} chunks/s | raw embedding {best:.1f} texts/s | "
      f"ratio {i['chunks_per_s'] / best:.2f} (goal >= 0.85)")
PY
fi

for size in $sizes; do
  echo "== 2. ${size} chunks" >&2
  python3 "$repo/benches/kb/grow.py" "$work/data/sparkbrain.db" vaswani "$size"
  start
  replay=$ready
  http=$(python3 "$repo/benches/kb/http_latency.py" "$base" "$key" vaswani "$work/queries.json")
  stop
  mkdir -p "$work/vectors"
  inproc=$(cargo bench --quiet --bench kb_search --manifest-path "$repo/Cargo.toml" -- "$work/config.toml" vaswani "$work/queries.json" "$work/vectors" 2>/dev/null)
  dims=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["dimensions"])' "$inproc")
  faiss=$(python3 "$repo/benches/kb/faiss_hnsw.py" "$work/vectors" "$dims")
  rm -rf "$work/vectors"
  start
  startup=$ready
  stop
  python3 - "$size" "$replay" "$startup" "$http" "$inproc" "$faiss" <<'PY'
import json, sys
size, replay, startup = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
http, inproc, faiss = (json.loads(a) for a in sys.argv[4:7])
lat = inproc["latency_in_process"]
print(f"\n{inproc['chunks']} chunks ({size} asked), {inproc['usearch']['scalar']} vectors, kernels {inproc['usearch']['acceleration']}, kb open in process {inproc['open_ms']:.0f} ms")
print(f"  start-up to ready: {startup:.2f} s (goal <= 3 s at 1M); first start after growing (index build): {replay:.0f} s")
print("  mode     in-process p50/p99 ms   HTTP p50/p99 ms")
for m in ("text", "vector", "hybrid"):
    print(f"  {m:<8} {lat[m]['p50_ms']:8.2f} {lat[m]['p99_ms']:8.2f}    {http[m]['p50_ms']:8.2f} {http[m]['p99_ms']:8.2f}")
print("  (goal at 1M: hybrid over HTTP p50 <= 10 ms, p99 <= 50 ms)")
c = http["calibration"]
print(f"  the daemon's calibration: ef {c['expansion_search']} for recall@10 {c['recall']:.3f} on {c['probes']} probes, {c['queries']} of them real queries "
      f"(target {c['target']}); these latencies are at that ef, over {http['text_segments']} text index segment(s)")
print(f"  vector path, one thread, one query at a time (FAISS HNSW build {faiss['build_seconds']:.0f} s):")
import math
def faiss_at(recall):
    """FAISS's queries/s at this recall, log-linear between its two neighbouring points;
    None outside the recall range its sweep covers."""
    pts = sorted((f["recall_at_10"], f["queries_per_s"]) for f in faiss["sweep"])
    for (r0, q0), (r1, q1) in zip(pts, pts[1:]):
        if r0 <= recall <= r1:
            w = 0.0 if r1 == r0 else (recall - r0) / (r1 - r0)
            return math.exp(math.log(q0) + w * (math.log(q1) - math.log(q0)))
    return None
print("  ef   usearch recall  q/s      FAISS recall  q/s      ratio | FAISS q/s at usearch's recall  ratio (goal >= 1)")
for u, f in zip(inproc["usearch"]["sweep"], faiss["sweep"]):
    at = faiss_at(u["recall_at_10"])
    same = f"{at:8.0f}                       {u['queries_per_s'] / at:.2f}" if at else "   (outside FAISS's sweep)"
    print(f"  {u['ef']:<4} {u['recall_at_10']:.3f}  {u['queries_per_s']:8.0f}   {f['recall_at_10']:.3f}  {f['queries_per_s']:8.0f}   {u['queries_per_s'] / f['queries_per_s']:.2f}  | {same}")
PY
done
