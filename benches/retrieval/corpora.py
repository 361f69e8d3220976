"""Parsers for the retrieval test collections under shared/data/retrieval and XQuAD.

Each collection loader returns (docs, queries, qrels):
  docs    -- list of (doc_id: str, text: str), text = title + "\n\n" + body
  queries -- list of (query_id: str, text: str)
  qrels   -- {query_id: {doc_id: gain}}; gain > 0 is relevant
"""
import json
import os
import re
from collections import defaultdict


def _fields(record):
    """Splits a SMART-style record (lines after `.I n`) into {".T": text, ".W": text, ...}."""
    out, key, buf = {}, None, []
    for line in record.split("\n"):
        m = re.match(r"^\.([A-Z])\s*$", line)
        if m:
            if key:
                out[key] = out.get(key, "") + "\n".join(buf)
            key, buf = "." + m.group(1), []
        else:
            buf.append(line)
    if key:
        out[key] = out.get(key, "") + "\n".join(buf)
    return out


def _records(path):
    """[(number, fields)] of a SMART file whose records start with `.I n`."""
    text = open(path, encoding="latin-1").read()
    parts = re.split(r"^\.I\s+(\d+)\s*$", text, flags=re.M)
    return [(int(parts[i]), _fields(parts[i + 1])) for i in range(1, len(parts), 2)]


def _clean(s):
    return " ".join(s.split())


def _join(title, body):
    title, body = _clean(title), _clean(body)
    return f"{title}\n\n{body}" if title and body else title or body


def cranfield(root):
    d = os.path.join(root, "cranfield")
    docs = [(str(n), _join(f.get(".T", ""), f.get(".W", ""))) for n, f in _records(os.path.join(d, "cran.all.1400"))]
    # The qrels number queries 1..225 in file order, not by their `.I`.
    queries = [(str(i + 1), _clean(f.get(".W", ""))) for i, (_, f) in enumerate(_records(os.path.join(d, "cran.qry")))]
    gains = {1: 4, 2: 3, 3: 2, 4: 1, -1: 0}
    qrels = defaultdict(dict)
    for line in open(os.path.join(d, "cranqrel")):
        p = line.split()
        if len(p) >= 3:
            qrels[p[0]][p[1]] = gains[int(p[2])]
    return docs, queries, dict(qrels)


def cisi(root):
    d = os.path.join(root, "cisi")
    # .A authors, .B source, .K/.C rare keyword/category lines and .X citations are not text.
    docs = [(str(n), _join(f.get(".T", ""), f.get(".W", ""))) for n, f in _records(os.path.join(d, "CISI.ALL"))]
    queries = [(str(n), _join(f.get(".T", ""), f.get(".W", ""))) for n, f in _records(os.path.join(d, "CISI.QRY"))]
    qrels = defaultdict(dict)
    for line in open(os.path.join(d, "CISI.REL")):
        p = line.split()
        if len(p) >= 2:
            qrels[p[0]][p[1]] = 1
    return docs, queries, dict(qrels)


def vaswani(root):
    d = os.path.join(root, "vaswani")
    text = open(os.path.join(d, "corpus", "doc-text.trec"), encoding="latin-1").read()
    docs = [(n.strip(), _clean(body)) for n, body in
            re.findall(r"<DOC>\s*<DOCNO>(.*?)</DOCNO>(.*?)</DOC>", text, re.S)]
    text = open(os.path.join(d, "query-text.trec"), encoding="latin-1").read()
    queries = [(n.strip(), _clean(t)) for n, t in
               re.findall(r"<top>\s*<num>(.*?)</num>\s*<title>(.*?)</title>", text, re.S)]
    qrels = defaultdict(dict)
    for line in open(os.path.join(d, "qrels")):
        p = line.split()
        if len(p) >= 4 and int(p[3]) > 0:
            qrels[p[0]][p[2]] = int(p[3])
    return docs, queries, dict(qrels)


def xquad(path):
    """([(p<index>, paragraph)], [(question id, question, p<index>)])."""
    data = json.load(open(path, encoding="utf-8"))["data"]
    docs, questions = [], []
    for article in data:
        for para in article["paragraphs"]:
            pid = f"p{len(docs)}"
            docs.append((pid, para["context"]))
            for qa in para["qas"]:
                questions.append((qa["id"], qa["question"], pid))
    return docs, questions


COLLECTIONS = {"vaswani": vaswani, "cranfield": cranfield, "cisi": cisi}
