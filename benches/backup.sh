#!/usr/bin/env bash
# `just bench-backup`: backup and restore throughput, each beside `tar | zstd` of the same files
# on the same disk. The knowledge base: the Vaswani corpus ingested through the API and grown to
# BACKUP_BENCH_CHUNKS chunks (default 100,000; see kb/grow.py), plus BACKUP_BENCH_BLOB_MB of DOCX
# reports with photos (default 1,100 MB in 10 MB files, incompressible, as photos are).
#   1. Backup while the daemon serves (POST /api/v1/backups), MB/s of data read, against
#      `tar -c | zstd -3` of the database, blobs and indexes.
#   2. Restore (`sparkbrain backup restore` with the daemon stopped) plus start-up to ready, with
#      the indexes in the archive and with them rebuilt from the database; against
#      `zstd -d | tar -x` of the yardstick archive.
# Needs `just fetch`. Not part of CI. Takes ~15 minutes on 2 cores.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
vendor="${VENDOR_DIR:-$repo/vendor}"
shared="${SHARED_DIR:-$repo/../shared}"
chunks="${BACKUP_BENCH_CHUNKS:-100000}"
blob_mb="${BACKUP_BENCH_BLOB_MB:-1100}"

python3 -c "import numpy, requests" 2>/dev/null ||
  PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --quiet -r "$repo/benches/kb/requirements.txt"
command -v zstd >/dev/null || bash "$repo/scripts/apt-install-missing.sh" zstd
cargo build --release --quiet --manifest-path "$repo/Cargo.toml"

# On the disk the data lives on, not a tmpfs: the yardstick is the disk.
work="${BACKUP_BENCH_DIR:-$(mktemp -d -p /var/tmp)}"
mkdir -p "$work"
cleanup() { [[ -n "$pid" ]] && kill "$pid" 2>/dev/null; [[ -z "${BACKUP_BENCH_DIR:-}" ]] && rm -rf "$work"; true; }
source "$repo/benches/daemon.sh"
trap cleanup EXIT
write_config "$config" "$work/data" fast "$(nproc)" </dev/null
seconds() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$1" "$(date +%s.%N)"; }

if [[ ! -f "$work/data/sparkbrain.db" ]]; then
  printf '%s\n' "bench-admin-password" | sb user add admin --role admin --password-stdin >/dev/null
  start
  key=$(admin_key bench-admin-password)
  echo "== building the knowledge base" >&2
  python3 "$repo/benches/kb/ingest.py" "$base" "$key" vaswani "$shared/data/retrieval/vaswani/corpus/doc-text.trec" >/dev/null
  python3 "$repo/benches/backup/make_docx.py" "$work/reports" "$((blob_mb / 10))" 10
  curl -sf -X POST "$base/api/v1/collections" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d '{"name":"reports"}' >/dev/null
  for f in "$work"/reports/*.docx; do
    curl -sf -o /dev/null -X POST "$base/api/v1/collections/reports/documents" -H "Authorization: Bearer $key" -F "file=@$f"
  done
  rm -rf "$work/reports"
  stop
  python3 "$repo/benches/kb/grow.py" "$work/data/sparkbrain.db" vaswani "$chunks" "$work/data/blobs" >&2
fi
start
echo "first start (index build): $ready s" >&2
key=$(admin_key bench-admin-password)
until [[ "$(curl -sf "$base/api/v1/collections/reports" -H "Authorization: Bearer $key" | python3 -c 'import json,sys; s=json.load(sys.stdin)["counts"]["by_status"]; print(all(k in ("indexed", "failed") for k, v in s.items() if v))' 2>/dev/null)" == True ]]; do sleep 1; done

# What both copy: the database, the blobs the documents reference, and the indexes.
data_bytes=$(du -sb --apparent-size "$work/data/sparkbrain.db" "$work/data/blobs" "$work/data/kb" | awk '{s+=$1} END {print s}')
# Both read from the page cache: one pass over the files first.
tar -C "$work/data" -cf - sparkbrain.db blobs kb >/dev/null
sync

echo "== 1. backup" >&2
rm -rf "$work/archives" "$work/yard.tar.zst"
mkdir -p "$work/archives"
t0=$(date +%s.%N)
tar -C "$work/data" -cf - sparkbrain.db blobs kb | zstd -3 -q -o "$work/yard.tar.zst"
sync
yard_backup=$(seconds "$t0")
t0=$(date +%s.%N)
created=$(curl -sf -X POST "$base/api/v1/backups" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d "{\"target\": \"$work/archives\"}")
ours_backup=$(seconds "$t0")
archive=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["location"])' "$created")
t0=$(date +%s.%N)
rebuild=$(curl -sf -X POST "$base/api/v1/backups" -H "Authorization: Bearer $key" -H 'Content-Type: application/json' -d "{\"target\": \"$work/archives-rebuild\", \"indexes\": \"rebuild\"}")
ours_backup_rebuild=$(seconds "$t0")
archive_rebuild=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["location"])' "$rebuild")
stop

echo "== 2. restore" >&2
# Each restore, the yardstick's too, goes into a folder just emptied, after a sync.
rm -rf "$work/data"
sync
t0=$(date +%s.%N)
mkdir -p "$work/data"
zstd -d -q -c "$work/yard.tar.zst" | tar -C "$work/data" -xf -
sync
yard_restore=$(seconds "$t0")
restore() {
  rm -rf "$work/data"
  sync
  local t0; t0=$(date +%s.%N)
  sb backup restore "$1" --yes >/dev/null
  restore_s=$(seconds "$t0")
  start
  stop
}
restore "$archive"; include_restore=$restore_s; include_ready=$ready
restore "$archive_rebuild"; rebuild_restore=$restore_s; rebuild_ready=$ready

python3 - "$data_bytes" "$created" "$rebuild" "$yard_backup" "$ours_backup" "$ours_backup_rebuild" \
  "$yard_restore" "$include_restore" "$include_ready" "$rebuild_restore" "$rebuild_ready" "$(stat -c %s "$work/yard.tar.zst")" <<'PY'
import json, sys
a = sys.argv[1:]
data = int(a[0]); created, rebuild = json.loads(a[1]), json.loads(a[2])
yb, ob, obr, yr, ir, iready, rr, rready = (float(x) for x in a[3:11])
yard_size = int(a[11])
mb = data / 1e6
print(f"knowledge base: {created['documents']} documents, {created['chunks']} chunks, {mb:.0f} MB of database, blobs and indexes")
print(f"archive: {created['size_bytes'] / 1e6:.0f} MB (tar | zstd -3: {yard_size / 1e6:.0f} MB); without indexes {rebuild['size_bytes'] / 1e6:.0f} MB")
print("backup (daemon serving)      seconds   MB/s   ratio to tar | zstd (goal >= 0.8)")
print(f"  tar | zstd -3              {yb:7.1f} {mb / yb:7.0f}")
print(f"  sparkbrain, indexes in     {ob:7.1f} {mb / ob:7.0f}   {yb / ob:.2f}")
print(f"  sparkbrain, indexes out    {obr:7.1f} {mb / obr:7.0f}   {yb / obr:.2f}")
print("restore                      unpack s   start-up to ready s   total s   MB/s (unpack)")
print(f"  zstd -d | tar -x           {yr:8.1f}")
print(f"  sparkbrain, indexes in     {ir:8.1f}   {iready:8.2f}            {ir + iready:7.1f}   {mb / ir:6.0f}   ratio {yr / ir:.2f}")
print(f"  sparkbrain, rebuilt        {rr:8.1f}   {rready:8.2f}            {rr + rready:7.1f}")
best = "indexes in the archive" if ir + iready <= rr + rready else "rebuilding the indexes"
print(f"faster to restore: {best}")
PY
