#!/usr/bin/env bash
# Document extraction benchmark.
#
#   bash benches/extract.sh            (or: just bench-extract)
#
# 1. Quality: for each docling source, token F1 (precision, recall) of our text against the
#    ground-truth Markdown, with the same tokens and Markdown stripping as tests/kb/extract.rs.
# 2. PDF text against poppler's `pdftotext` (plain mode, no -layout) on the Debian PDFs: token
#    F1 of ours against theirs, and characters extracted per second for both (best of 3 runs,
#    wall clock, process start included for both).
#
# Uses `target/release/sparkbrain __extract` (built if missing) and pdftotext from
# poppler-utils (scripts/install-deps.sh). Test documents: $SPARKBRAIN_SHARED/data/docs, by
# default ../shared/data/docs next to the repository.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared="${SPARKBRAIN_SHARED:-$repo/../shared}"
docs="$shared/data/docs"
bin="$repo/target/release/sparkbrain"

[[ -d "$docs" ]] || { echo "no test documents at $docs (set SPARKBRAIN_SHARED)" >&2; exit 1; }
command -v pdftotext >/dev/null || { echo "pdftotext is missing: run scripts/install-deps.sh" >&2; exit 1; }
if [[ ! -x "$bin" || -n "$(find "$repo/src" -newer "$bin" -name '*.rs' -print -quit)" ]]; then
    (cd "$repo" && cargo build --release --quiet --bin sparkbrain)
fi

exec python3 - "$bin" "$docs" <<'PY'
import collections, json, re, subprocess, sys, time

bin_path, docs = sys.argv[1], sys.argv[2]
FORMATS = {".pdf": "pdf", ".docx": "docx", ".odt": "odt", ".html": "html", ".md": "markdown"}

def tokens(text):
    return collections.Counter(t.lower() for t in re.findall(r"[^\W_]+", text))

def f1(got, want):
    got, want = tokens(got), tokens(want)
    overlap = sum((got & want).values())
    if not overlap:
        return 0.0, 0.0, 0.0
    p, r = overlap / sum(got.values()), overlap / sum(want.values())
    return p, r, 2 * p * r / (p + r)

def strip_links(line):
    """`![alt](url)` -> nothing, `[text](url)` -> text; scanned like tests/kb/extract.rs does,
    so nested brackets (`[[ 1 ]](#cite_note-1)`) lose their target too."""
    out, rest = [], line
    while "[" in rest:
        open_ = rest.index("[")
        image = rest[:open_].endswith("!")
        close = rest.find("](", open_)
        end = rest.find(")", close) if close >= 0 else -1
        if close >= 0 and end >= 0:
            out.append(rest[:open_ - 1] if image else rest[:open_])
            if not image:
                out.append(rest[open_ + 1:close])
            rest = rest[end + 1:]
        else:
            out.append(rest[:open_ + 1])
            rest = rest[open_ + 1:]
    out.append(rest)
    return "".join(out)

def strip_markdown(md):
    md = re.sub(r"<!--.*?-->", "", md, flags=re.S)
    lines = [strip_links(l) for l in md.splitlines()
             if not (l.strip().startswith("|") and set(l.strip()) <= set("|-: "))]
    return "\n".join(lines).replace("**", " ").replace("#", " ").replace("|", " ")

def timed(cmd):
    """Best wall time of 3 runs, and the last run's stdout."""
    best, out = None, b""
    for _ in range(3):
        start = time.perf_counter()
        out = subprocess.run(cmd, check=True, capture_output=True).stdout
        elapsed = time.perf_counter() - start
        best = elapsed if best is None else min(best, elapsed)
    return best, out

def ours(path, fmt):
    seconds, out = timed([bin_path, "__extract", "--format", fmt, "--limits-json", "{}", path])
    reply = json.loads(out.decode().splitlines()[0])
    if "err" in reply:
        raise SystemExit(f"{path}: {reply['err']}")
    return seconds, "\n\n".join(b["text"] for b in reply["ok"]["blocks"])

print("== Quality: token F1 against docling ground truth ==")
print(f"{'file':<28} {'format':<9} {'precision':>9} {'recall':>7} {'F1':>6} {'goal':>5}")
cases = [
    ("docx/sources/lorem_ipsum.docx", "docx/groundtruth/lorem_ipsum.docx.md", 0.90),
    ("docx/sources/word_sample.docx", "docx/groundtruth/word_sample.docx.md", 0.90),
    ("odf/sources/text_document_01.odt", "odf/groundtruth/text_document_01.odt.md", 0.90),
    ("html/sources/wiki_duck.html", "html/groundtruth/wiki_duck.html.md", 0.90),
    ("md/sources/wiki.md", "md/groundtruth/wiki.md.md", 0.90),
    ("pdf/sources/2305.03393v1-pg9.pdf", "pdf/groundtruth/2305.03393v1-pg9.md", 0.85),
    ("pdf/sources/multi_page.pdf", "pdf/groundtruth/multi_page.md", 0.85),
]
for source, truth, goal in cases:
    ext = "." + source.rsplit(".", 1)[1]
    _, text = ours(f"{docs}/docling/{source}", FORMATS[ext])
    want = strip_markdown(open(f"{docs}/docling/{truth}", encoding="utf-8").read())
    p, r, f = f1(text, want)
    mark = "" if f >= goal else "  BELOW GOAL"
    print(f"{source.rsplit('/', 1)[1]:<28} {FORMATS[ext]:<9} {p:>9.3f} {r:>7.3f} {f:>6.3f} {goal:>5.2f}{mark}")

print()
print("== PDF: sparkbrain vs pdftotext (Debian PDFs) ==")
print(f"{'file':<22} {'pages':>5} {'F1 vs pdftotext':>15} {'ours chars/s':>13} {'pdftotext chars/s':>18}")
for name in ["debian-faq.en.pdf", "fhs-3.0.pdf", "maint-guide.en.pdf"]:
    path = f"{docs}/debian/{name}"
    our_s, our_text = ours(path, "pdf")
    their_s, their_out = timed(["pdftotext", "-enc", "UTF-8", path, "-"])
    their_text = their_out.decode("utf-8", "replace")
    pages = their_text.count("\f")
    _, _, f = f1(our_text, their_text)
    print(f"{name:<22} {pages:>5} {f:>15.3f} {len(our_text) / our_s:>13,.0f} {len(their_text) / their_s:>18,.0f}")
PY
