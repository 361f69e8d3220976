"""Grows a collection to TARGET chunks by repeating its documents with new ids (the daemon
must be stopped): each copy's chunks keep their text with a copy marker, and get the original
vector blended with another real chunk's vector (weight 0.3 to 0.7, renormalised): a distinct
point among real embeddings, as a passage on two topics would be. (Gaussian noise instead
makes each original a tight cluster of near-equal copies, where "the exact top 10" is an
arbitrary pick and no approximate index can find it.) The copies are logged in index_changes,
so the daemon's next start replays them into the indexes.

With BLOBS (the data directory's blobs/ folder) each copy also gets its own original file, the
original's bytes plus the copy marker, stored under its SHA-256 as the daemon stores uploads:
what a backup of the grown collection has to carry.

usage: grow.py DB COLLECTION TARGET [BLOBS]"""
import hashlib, os, sqlite3, sys, time

import numpy as np

db, name, target = sys.argv[1], sys.argv[2], int(sys.argv[3])
blobs = sys.argv[4] if len(sys.argv) > 4 else None


def blob_path(sha):
    return os.path.join(blobs, sha[:2], sha[2:4], sha)


def copy_blob(sha, copy):
    """Stores the original's bytes plus a marker; returns the copy's SHA-256 and size."""
    with open(blob_path(sha), "rb") as f:
        data = f.read() + f"\n~copy{copy}\n".encode()
    new = hashlib.sha256(data).hexdigest()
    os.makedirs(os.path.dirname(blob_path(new)), exist_ok=True)
    with open(blob_path(new), "wb") as f:
        f.write(data)
    return new, len(data)

con = sqlite3.connect(db)
con.execute("PRAGMA synchronous=OFF")
(cid,) = con.execute("SELECT id FROM collections WHERE name = ?", (name,)).fetchone()
(have,) = con.execute(
    "SELECT COUNT(*) FROM chunks ch JOIN documents d ON d.id = ch.document_id WHERE d.collection_id = ?", (cid,)
).fetchone()
docs = con.execute(
    "SELECT id, filename, format, size, sha256, uploaded_by FROM documents WHERE collection_id = ? AND chunks > 0 "
    "AND filename NOT LIKE '%~copy%' ORDER BY id", (cid,)
).fetchall()
chunks = {}
for doc, seq, text, heading, ps, pe, cs, ce, vec in con.execute(
    "SELECT document_id, seq, text, heading, page_start, page_end, char_start, char_end, vector FROM chunks "
    "WHERE document_id IN (SELECT id FROM documents WHERE collection_id = ? AND filename NOT LIKE '%~copy%')", (cid,)
):
    chunks.setdefault(doc, []).append((seq, text, heading, ps, pe, cs, ce, np.frombuffer(vec, dtype="<f4")))
rng = np.random.default_rng(7)
pool = np.stack([c[7] for rows in chunks.values() for c in rows])
now = int(time.time() * 1000)
copy = con.execute("SELECT COUNT(*) FROM documents WHERE collection_id = ? AND filename LIKE '%~copy%'", (cid,)).fetchone()[0]
start = time.time()
con.execute("BEGIN")
while have < target:
    for doc, filename, fmt, size, sha, by in docs:
        if have >= target:
            break
        copy += 1
        rows = chunks.get(doc, [])
        if blobs:
            copy_sha, copy_size = copy_blob(sha, copy)
        else:
            copy_sha, copy_size = hashlib.sha256(f"{sha}{copy}".encode()).hexdigest(), size
        cur = con.execute(
            "INSERT INTO documents (collection_id, filename, format, size, sha256, status, chunks, uploaded_by, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, 'embedding', ?, ?, ?, ?)",
            (cid, f"{filename}~copy{copy}", fmt, copy_size, copy_sha, len(rows), by, now, now),
        )
        new = cur.lastrowid
        for seq, text, heading, ps, pe, cs, ce, vec in rows:
            v = vec + rng.uniform(0.3, 0.7) * pool[rng.integers(len(pool))]
            v /= np.linalg.norm(v)
            con.execute(
                "INSERT INTO chunks (document_id, seq, text, heading, page_start, page_end, char_start, char_end, vector) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (new, seq, f"{text} copy{copy}", heading, ps, pe, cs, ce, v.astype("<f4").tobytes()),
            )
        con.execute("INSERT INTO index_changes (collection_id, document_id, op) VALUES (?, ?, 'add')", (cid, new))
        have += len(rows)
        if copy % 50000 == 0:
            con.execute("COMMIT")
            con.execute("BEGIN")
con.execute("COMMIT")
print(f"grew {name} to {have} chunks in {time.time() - start:.0f} s", file=sys.stderr)
