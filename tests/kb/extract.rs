//! Document extraction: quality against ground truth, every shared document, and the sandbox
//! (zip bombs, damaged and encrypted PDFs, timeouts, crashes) through the real binary.

use std::collections::HashMap;
use std::io::Write;
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sparkbrain::kb::extract::sandbox::extract_isolated;
use sparkbrain::kb::extract::{
    Document, ExtractError, FailureReason, Format, Limits, extract, sniff,
};

const EXE: &str = env!("CARGO_BIN_EXE_sparkbrain");
const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Helpers

/// `$SPARKBRAIN_SHARED/data/docs`, or `<repo>/../shared/data/docs`; the tests need them (CI has
/// them) and fail rather than pass without checking anything.
fn docs_dir() -> PathBuf {
    let root = std::env::var_os("SPARKBRAIN_SHARED").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared"),
        PathBuf::from,
    );
    let docs = root.join("data/docs");
    assert!(
        docs.is_dir(),
        "the shared test documents are missing at {} (set SPARKBRAIN_SHARED)",
        docs.display()
    );
    docs
}

fn sniff_file(path: &Path) -> Result<Format, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let name = path.file_name().and_then(|n| n.to_str());
    sniff(&bytes[..bytes.len().min(8192)], name, None).map_err(|e| e.to_string())
}

/// Tokens: lowercase runs of alphanumeric characters, counted.
fn tokens(text: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for token in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|t| !t.is_empty())
    {
        *counts.entry(token.to_lowercase()).or_insert(0) += 1;
    }
    counts
}

/// (precision, recall, F1) of the multiset overlap.
fn f1(got: &str, want: &str) -> (f64, f64, f64) {
    let (got, want) = (tokens(got), tokens(want));
    let overlap: usize = got
        .iter()
        .map(|(t, &n)| n.min(want.get(t).copied().unwrap_or(0)))
        .sum();
    let total = |m: &HashMap<String, usize>| m.values().sum::<usize>().max(1) as f64;
    let precision = overlap as f64 / total(&got);
    let recall = overlap as f64 / total(&want);
    let f1 = if overlap == 0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    (precision, recall, f1)
}

/// Ground-truth Markdown reduced to its text: comments (`<!-- image -->`), image references,
/// link targets, table rules and `#`, `|`, `**` markup removed.
fn strip_markdown(md: &str) -> String {
    let mut text = String::with_capacity(md.len());
    let mut rest = md;
    while let Some(start) = rest.find("<!--") {
        text.push_str(&rest[..start]);
        rest = rest[start..]
            .find("-->")
            .map_or("", |end| &rest[start + end + 3..]);
    }
    text.push_str(rest);

    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let trimmed = line.trim();
        let is_rule =
            trimmed.starts_with('|') && trimmed.chars().all(|c| matches!(c, '|' | '-' | ':' | ' '));
        if is_rule {
            continue;
        }
        out.push_str(&strip_links(line));
        out.push('\n');
    }
    out.replace("**", " ").replace(['#', '|'], " ")
}

/// `![alt](url)` → nothing, `[text](url)` → `text`.
fn strip_links(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(open) = rest.find('[') {
        let image = open > 0 && rest[..open].ends_with('!');
        let close = rest[open..].find("](").map(|c| open + c);
        let end = close.and_then(|c| rest[c..].find(')').map(|e| c + e));
        match (close, end) {
            (Some(close), Some(end)) => {
                let before = if image {
                    &rest[..open - 1]
                } else {
                    &rest[..open]
                };
                out.push_str(before);
                if !image {
                    out.push_str(&rest[open + 1..close]);
                }
                rest = &rest[end + 1..];
            }
            _ => {
                out.push_str(&rest[..=open]);
                rest = &rest[open + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A minimal PDF with Helvetica text: per page, (x, y, size, text) runs.
fn simple_pdf(pages: &[Vec<(f64, f64, f64, String)>]) -> Vec<u8> {
    let n = pages.len();
    let kids: Vec<String> = (0..n).map(|i| format!("{} 0 R", 4 + 2 * i)).collect();
    let mut objects = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        format!("<< /Type /Pages /Kids [{}] /Count {n} >>", kids.join(" ")),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_string(),
    ];
    for (i, runs) in pages.iter().enumerate() {
        let mut content = String::new();
        for (x, y, size, text) in runs {
            content.push_str(&format!(
                "BT /F1 {size} Tf 1 0 0 1 {x} {y} Tm ({text}) Tj ET\n"
            ));
        }
        objects.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R >>",
            5 + 2 * i
        ));
        objects.push(format!(
            "<< /Length {} >>\nstream\n{content}endstream",
            content.len()
        ));
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, obj) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{obj}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for offset in offsets {
        out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

/// A PDF of `pages` pages, each with a heading and a few paragraphs.
fn report_pdf(pages: usize) -> Vec<u8> {
    let pages: Vec<Vec<(f64, f64, f64, String)>> = (1..=pages)
        .map(|p| {
            let mut runs = vec![(72.0, 720.0, 18.0, format!("Section {p}"))];
            for line in 0..30 {
                runs.push((
                    72.0,
                    690.0 - 14.0 * line as f64,
                    10.0,
                    format!("Line {line} of page {p} says something about quarterly results."),
                ));
            }
            runs
        })
        .collect();
    simple_pdf(&pages)
}

fn write_temp(bytes: &[u8], suffix: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(suffix).tempfile().unwrap();
    file.write_all(bytes).unwrap();
    file.flush().unwrap();
    file
}

fn isolated(path: &Path, format: Format, limits: &Limits) -> Result<Document, ExtractError> {
    extract_isolated(
        Path::new(EXE),
        path,
        format,
        limits,
        Duration::from_secs(60),
        4 * GIB,
    )
}

// ---------------------------------------------------------------------------------------------
// Quality

/// Token F1 of our text against docling's ground truth, per source, with the goals.
#[test]
fn quality_against_docling_ground_truth() {
    let docs = docs_dir();
    let docling = docs.join("docling");
    let cases: &[(&str, &str, f64)] = &[
        (
            "docx/sources/lorem_ipsum.docx",
            "docx/groundtruth/lorem_ipsum.docx.md",
            0.90,
        ),
        (
            "docx/sources/word_sample.docx",
            "docx/groundtruth/word_sample.docx.md",
            0.90,
        ),
        (
            "odf/sources/text_document_01.odt",
            "odf/groundtruth/text_document_01.odt.md",
            0.90,
        ),
        (
            "html/sources/wiki_duck.html",
            "html/groundtruth/wiki_duck.html.md",
            0.90,
        ),
        ("md/sources/wiki.md", "md/groundtruth/wiki.md.md", 0.90),
        (
            "pdf/sources/2305.03393v1-pg9.pdf",
            "pdf/groundtruth/2305.03393v1-pg9.md",
            0.85,
        ),
        (
            "pdf/sources/multi_page.pdf",
            "pdf/groundtruth/multi_page.md",
            0.85,
        ),
    ];
    let mut misses = Vec::new();
    eprintln!(
        "{:<36} {:>9} {:>9} {:>9} {:>6}",
        "file", "precision", "recall", "F1", "goal"
    );
    for &(source, truth, goal) in cases {
        let path = docling.join(source);
        let format = sniff_file(&path).unwrap_or_else(|e| panic!("{source}: {e}"));
        let doc = extract(&path, format, &Limits::default())
            .unwrap_or_else(|e| panic!("{source}: {e:?}"));
        let truth = std::fs::read_to_string(docling.join(truth)).unwrap();
        let (p, r, f) = f1(&doc.text(), &strip_markdown(&truth));
        let name = Path::new(source).file_name().unwrap().to_string_lossy();
        eprintln!("{name:<36} {p:>9.3} {r:>9.3} {f:>9.3} {goal:>6.2}");
        if f < goal {
            misses.push(format!("{name}: F1 {f:.3} < {goal}"));
        }
    }
    assert!(misses.is_empty(), "below goal: {misses:?}");
}

#[test]
fn markdown_stripping_matches_the_metric() {
    let md = "# Title\n\n| a | b |\n| - | - |\n| **x** | [link](http://e.com/y) |\n![pic](i.png) <!-- image -->\n";
    let text = strip_markdown(md);
    assert_eq!(tokens(&text), tokens("Title a b x link"), "{text:?}");
    assert_eq!(f1("a b c", "a b c").2, 1.0);
    assert!((f1("a a b", "a b b").2 - 2.0 / 3.0).abs() < 1e-9);
}

/// Every shared document extracts, except what sniffing refuses by design (RTF).
#[test]
fn every_shared_document_extracts() {
    let docs = docs_dir();
    let mut failures = Vec::new();
    let mut count = 0;
    for entry in walkdir::WalkDir::new(&docs).sort_by_file_name() {
        let entry = entry.unwrap();
        if !entry.file_type().is_file() {
            continue;
        }
        let path = entry.path();
        let rel = path.strip_prefix(&docs).unwrap().display().to_string();
        let is_rtf = path.extension().is_some_and(|e| e == "rtf");
        count += 1;
        match sniff_file(path) {
            Err(e) if is_rtf && e.contains("RTF is not supported") => {
                eprintln!("{rel:<60} refused as expected: {e}");
            }
            Err(e) => failures.push(format!("{rel}: sniff: {e}")),
            Ok(format) if is_rtf => failures.push(format!("{rel}: RTF sniffed as {format}")),
            Ok(format) => {
                let started = Instant::now();
                match extract(path, format, &Limits::default()) {
                    Ok(doc) => {
                        let chars = doc.text().chars().count();
                        eprintln!(
                            "{rel:<60} {format:<8} {:>5} blocks {chars:>8} chars {:>6} ms  title {:?}",
                            doc.blocks.len(),
                            started.elapsed().as_millis(),
                            doc.title
                        );
                        if chars < 20 {
                            failures.push(format!("{rel}: only {chars} characters"));
                        }
                    }
                    Err(e) => failures.push(format!("{rel}: {format}: {e:?}")),
                }
            }
        }
    }
    assert!(count > 30, "only {count} documents found");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The seven-format "language docs" carry the same content: each format finds it.
#[test]
fn same_content_in_every_format() {
    let docs = docs_dir();
    let dir = docs.join("unstructured/language-docs");
    let reference = std::fs::read_to_string(dir.join("eng_spa_mult.txt")).unwrap();
    for ext in ["docx", "odt", "epub", "html", "md"] {
        let path = dir.join(format!("eng_spa_mult.{ext}"));
        let format = sniff_file(&path).unwrap();
        let doc = extract(&path, format, &Limits::default()).unwrap();
        let (_, _, score) = f1(&doc.text(), &reference);
        assert!(score > 0.9, "{ext}: F1 {score:.3} against the .txt");
    }
}

// ---------------------------------------------------------------------------------------------
// Sandbox

#[test]
fn sandboxed_pdf_round_trips() {
    let file = write_temp(&report_pdf(3), ".pdf");
    let doc = isolated(file.path(), Format::Pdf, &Limits::default()).unwrap();
    assert_eq!(doc.pages, Some(3));
    assert_eq!(doc.blocks[0].text, "Section 1");
    assert!(doc.blocks.iter().all(|b| b.page.is_some()));
    assert_eq!(doc.blocks.last().unwrap().page, Some(3));
    // The same answer as in-process: the JSON round trip loses nothing.
    assert_eq!(
        doc,
        extract(file.path(), Format::Pdf, &Limits::default()).unwrap()
    );
    let path = docs_dir().join("docling/pdf/sources/multi_page.pdf");
    let doc = isolated(&path, Format::Pdf, &Limits::default()).unwrap();
    assert_eq!(doc.pages, Some(5));
}

/// A DOCX-shaped zip whose document.xml expands past the limit.
#[test]
fn zip_bomb_is_refused() {
    let mut bytes = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut bytes);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        zip.start_file("[Content_Types].xml", options).unwrap();
        zip.write_all(b"<Types/>").unwrap();
        zip.start_file("word/document.xml", options).unwrap();
        zip.write_all(b"<w:document><w:body><w:p><w:r><w:t>")
            .unwrap();
        let chunk = vec![b'a'; MIB as usize];
        for _ in 0..64 {
            zip.write_all(&chunk).unwrap();
        }
        zip.write_all(b"</w:t></w:r></w:p></w:body></w:document>")
            .unwrap();
        zip.finish().unwrap();
    }
    let bytes = bytes.into_inner();
    assert!(
        bytes.len() < MIB as usize,
        "the bomb should be small: {}",
        bytes.len()
    );
    assert_eq!(
        sniff(&bytes[..8192.min(bytes.len())], Some("bomb.docx"), None),
        Ok(Format::Docx)
    );
    let file = write_temp(&bytes, ".docx");
    let limits = Limits {
        max_decompressed_bytes: 16 * MIB,
        ..Limits::default()
    };
    for result in [
        extract(file.path(), Format::Docx, &limits),
        isolated(file.path(), Format::Docx, &limits),
    ] {
        let err = result.unwrap_err();
        assert_eq!(err.reason, FailureReason::TooLarge, "{err:?}");
        assert!(
            err.message.contains("decompresses to more than 16 MiB"),
            "{err}"
        );
    }
}

/// Memory the address-space limit denies ends as TooLarge, naming memory, not as a crash.
#[test]
fn memory_limit_is_enforced() {
    let mut bytes = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut bytes);
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .large_file(true);
        zip.start_file("word/document.xml", options).unwrap();
        let chunk = vec![b' '; MIB as usize];
        for _ in 0..512 {
            zip.write_all(&chunk).unwrap();
        }
        zip.finish().unwrap();
    }
    let file = write_temp(&bytes.into_inner(), ".docx");
    // The executable's mappings count against the limit too; leave it 96 MiB of heap.
    let exe_size = std::fs::metadata(EXE).unwrap().len();
    let limits = Limits {
        max_decompressed_bytes: 4 * GIB,
        ..Limits::default()
    };
    let err = extract_isolated(
        Path::new(EXE),
        file.path(),
        Format::Docx,
        &limits,
        Duration::from_secs(60),
        exe_size + 96 * MIB,
    )
    .unwrap_err();
    assert_eq!(err.reason, FailureReason::TooLarge, "{err:?}");
    assert!(err.message.contains("memory"), "{err}");
}

#[test]
fn truncated_pdf_is_reported() {
    let pdf = report_pdf(4);
    let file = write_temp(&pdf[..pdf.len() * 2 / 3], ".pdf");
    let err = isolated(file.path(), Format::Pdf, &Limits::default()).unwrap_err();
    assert_eq!(err.reason, FailureReason::Truncated, "{err:?}");
    let real = std::fs::read(docs_dir().join("docling/pdf/sources/multi_page.pdf")).unwrap();
    let file = write_temp(&real[..real.len() / 2], ".pdf");
    let err = isolated(file.path(), Format::Pdf, &Limits::default()).unwrap_err();
    assert_eq!(err.reason, FailureReason::Truncated, "{err:?}");
}

/// qpdf (installed by scripts/install-deps.sh) encrypts: with a user password the PDF is
/// refused as Encrypted; with only an owner password (restrictions) it still reads.
#[test]
fn encrypted_pdf_is_reported() {
    let plain = write_temp(&report_pdf(2), ".pdf");
    let dir = tempfile::tempdir().unwrap();
    let qpdf = |user: &str, out: &Path| {
        let status = std::process::Command::new("qpdf")
            .args(["--encrypt", user, "owner-secret", "256", "--"])
            .arg(plain.path())
            .arg(out)
            .status()
            .expect("qpdf is missing: run scripts/install-deps.sh");
        // 0: fine, 3: succeeded with warnings.
        assert!(matches!(status.code(), Some(0 | 3)), "qpdf: {status}");
    };
    let locked = dir.path().join("locked.pdf");
    qpdf("user-secret", &locked);
    let err = isolated(&locked, Format::Pdf, &Limits::default()).unwrap_err();
    assert_eq!(err.reason, FailureReason::Encrypted, "{err:?}");
    assert!(err.message.contains("password"), "{err}");

    let restricted = dir.path().join("restricted.pdf");
    qpdf("", &restricted);
    let doc = isolated(&restricted, Format::Pdf, &Limits::default()).unwrap();
    assert_eq!(doc.blocks[0].text, "Section 1");
}

#[test]
fn timeout_kills_the_child() {
    let file = write_temp(&report_pdf(200), ".pdf");
    let started = Instant::now();
    let err = extract_isolated(
        Path::new(EXE),
        file.path(),
        Format::Pdf,
        &Limits::default(),
        Duration::from_millis(1),
        4 * GIB,
    )
    .unwrap_err();
    assert_eq!(err.reason, FailureReason::Timeout, "{err:?}");
    assert!(err.message.contains("took longer than 1 s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// Hostile and broken inputs, in every format, in the sandbox and in-process: errors, never
/// panics.
#[test]
fn hostile_input_never_panics() {
    let pdf = report_pdf(2);
    let mut docx = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut docx);
        zip.start_file(
            "word/document.xml",
            zip::write::SimpleFileOptions::default(),
        )
        .unwrap();
        zip.write_all(
            b"<w:document><w:body><w:p><w:r><w:t>Hello</w:t></w:r></w:p></w:body></w:document>",
        )
        .unwrap();
        zip.finish().unwrap();
    }
    let docx = docx.into_inner();
    let mut inputs: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("nul bytes", vec![0; 4096]),
        ("pdf header only", b"%PDF-1.7\n".to_vec()),
        ("zip header only", b"PK\x03\x04".to_vec()),
        ("deep html", "<div>".repeat(3_000).into_bytes()),
        ("deep markdown", ">".repeat(100_000).into_bytes()),
        ("deep list", "- ".repeat(50_000).into_bytes()),
    ];
    // Deterministic corruption: flip bytes through the middle of real files.
    for (name, base) in [("pdf", &pdf), ("docx", &docx)] {
        for seed in 1..=12usize {
            let mut bytes = base.clone();
            let len = bytes.len();
            for k in 0..8 {
                let at = (seed * 7919 + k * 104_729) % len;
                bytes[at] ^= 0x5A;
            }
            inputs.push((
                if name == "pdf" {
                    "flipped pdf"
                } else {
                    "flipped docx"
                },
                bytes,
            ));
        }
        inputs.push((name, base[..base.len() / 3].to_vec()));
    }
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    for (i, (name, bytes)) in inputs.iter().enumerate() {
        let file = write_temp(bytes, "");
        for format in Format::ALL {
            let outcome = catch_unwind(|| {
                let limits = Limits::default();
                let sandboxed = extract_isolated(
                    Path::new(EXE),
                    file.path(),
                    format,
                    &limits,
                    Duration::from_secs(20),
                    2 * GIB,
                );
                if let Err(e) = &sandboxed {
                    assert_ne!(
                        e.reason,
                        FailureReason::Internal,
                        "{name} as {format}: {e:?}"
                    );
                }
                // In-process too, for the formats whose parsers are bounded by Limits.
                if format != Format::Pdf {
                    let _ = extract(file.path(), format, &limits);
                }
            });
            assert!(outcome.is_ok(), "input {i} ({name}) as {format} panicked");
        }
    }
    // Missing files and directories: errors, not panics.
    for path in [missing.as_path(), dir.path()] {
        for format in Format::ALL {
            assert!(extract(path, format, &Limits::default()).is_err());
            assert!(isolated(path, format, &Limits::default()).is_err());
        }
    }
}
