"""Prints 300 real queries as a JSON list: the Vaswani, Cranfield and CISI queries, then XQuAD
questions, in that order.

usage: queries.py SHARED_DIR"""
import json, re, sys

s = sys.argv[1] + "/data/retrieval"
q = [" ".join(t.split()) for t in re.findall(r"<title>(.*?)</title>", open(s + "/vaswani/query-text.trec").read(), re.S)]
q += [" ".join(t.split()) for t in re.findall(r"\.W\n(.*?)(?=\n\.I|\Z)", open(s + "/cranfield/cran.qry").read(), re.S)]
q += [" ".join(t.split()) for t in re.findall(r"\.W\n(.*?)(?=\n\.[IXTAB] |\n\.I|\Z)", open(s + "/cisi/CISI.QRY").read(), re.S)]
x = json.load(open(sys.argv[1] + "/data/qa/xquad/xquad.en.json"))
q += [qa["question"] for a in x["data"] for p in a["paragraphs"] for qa in p["qas"]]
print(json.dumps([t for t in q if t][:300]))
