//! Documents: upload (202, durable), statuses, the original back, duplicates, limits, bad
//! files that fail alone with a reason, deletion.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::Setup;
use crate::util::{Kb, doc, problem};

#[test]
fn upload_is_queued_indexed_and_given_back_unchanged() {
    let kb = Kb::start();
    kb.collection(&kb.alice, json!({"name": "docs"}));
    let original = std::fs::read(doc("docling/docx/sources/word_sample.docx")).unwrap();
    let resp = kb.upload_bytes(
        &kb.alice,
        "docs",
        "word_sample.docx",
        original.clone(),
        None,
    );
    assert_eq!(resp.status(), 202);
    let location = resp.headers()["location"].to_str().unwrap().to_string();
    let body: Value = resp.json().unwrap();
    assert_eq!(body["duplicate"], false);
    assert_eq!(body["format"], "docx");
    assert_eq!(body["size"], original.len());
    assert_eq!(location, format!("/api/v1/documents/{}", body["id"]));
    let id = body["id"].as_i64().unwrap();

    let indexed = kb.indexed(&kb.alice, id);
    assert!(indexed["chunks"].as_i64().unwrap() >= 1, "{indexed}");
    assert_eq!(indexed["collection"], "docs");
    assert_eq!(indexed["uploaded_by"], "alice");

    let content = kb.get(&kb.alice, &format!("/api/v1/documents/{id}/content"));
    assert_eq!(content.status(), 200);
    assert_eq!(
        content.headers()["content-type"],
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    );
    assert_eq!(content.bytes().unwrap().to_vec(), original);

    // The same bytes again, under another name: nothing new, the existing document.
    let again = kb.upload_bytes(&kb.alice, "docs", "copy.docx", original, None);
    assert_eq!(again.status(), 200);
    let again: Value = again.json().unwrap();
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["id"], id);

    let page: Value = kb
        .get(&kb.alice, "/api/v1/collections/docs/documents")
        .json()
        .unwrap();
    assert_eq!(page["documents"].as_array().unwrap().len(), 1);
    let coll: Value = kb
        .get(&kb.alice, "/api/v1/collections/docs")
        .json()
        .unwrap();
    assert_eq!(coll["counts"]["documents"], 1);
    assert_eq!(coll["counts"]["by_status"]["indexed"], 1);
    assert_eq!(coll["counts"]["chunks"], indexed["chunks"]);
    assert_eq!(coll["index"]["vectors"], indexed["chunks"]);
    assert_eq!(coll["index"]["text_chunks"], indexed["chunks"]);
}

#[test]
fn bad_uploads_are_refused_and_store_nothing() {
    let kb = Kb::start_with(Setup::new().with("[kb]\nmax_document_bytes = 100000"));
    kb.collection(&kb.alice, json!({"name": "docs"}));

    let (s, d) = problem(kb.upload_bytes(&kb.alice, "docs", "empty.txt", Vec::new(), None));
    assert_eq!(s, 422, "{d}");
    assert!(d.contains("empty"), "{d}");

    let big = vec![b'a'; 100_001];
    let (s, d) = problem(kb.upload_bytes(&kb.alice, "docs", "big.txt", big, None));
    assert_eq!(s, 413, "{d}");
    assert!(d.contains("100000"), "{d}");

    // Text named and labelled as a PDF: the bytes decide, and they disagree.
    let (s, d) = problem(kb.upload_bytes(
        &kb.alice,
        "docs",
        "report.pdf",
        b"just some words, not a PDF".to_vec(),
        Some("application/pdf"),
    ));
    assert_eq!(s, 415, "{d}");

    // Binary noise is no document.
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let (s, d) = problem(kb.upload_bytes(&kb.alice, "docs", "noise.bin", noise, None));
    assert_eq!(s, 415, "{d}");

    // RTF is not supported, and says so.
    let rtf = std::fs::read(doc("unstructured/language-docs/eng_spa_mult.rtf")).unwrap();
    let (s, d) = problem(kb.upload_bytes(&kb.alice, "docs", "x.rtf", rtf[..50_000].to_vec(), None));
    assert_eq!(s, 415, "{d}");

    // A form without a file part.
    let resp = kb
        .daemon
        .client()
        .post(kb.daemon.url("/api/v1/collections/docs/documents"))
        .bearer_auth(&kb.alice)
        .multipart(reqwest::blocking::multipart::Form::new().text("other", "x"))
        .send()
        .unwrap();
    let (s, d) = problem(resp);
    assert_eq!(s, 422, "{d}");
    // Not multipart at all.
    let (s, _) = problem(kb.call(
        Method::POST,
        &kb.alice,
        "/api/v1/collections/docs/documents",
        Some(json!({})),
    ));
    assert_eq!(s, 400);

    let coll: Value = kb
        .get(&kb.alice, "/api/v1/collections/docs")
        .json()
        .unwrap();
    assert_eq!(coll["counts"]["documents"], 0, "{coll}");
    // No blob was kept either.
    let blobs = walk_files(&kb.setup.data_dir().join("blobs"));
    assert!(blobs.is_empty(), "{blobs:?}");
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn broken_files_fail_alone_with_a_reason() {
    let kb = Kb::start();
    kb.collection(&kb.alice, json!({"name": "docs"}));
    let pdf = std::fs::read(doc("debian/fhs-3.0.pdf")).unwrap();
    let truncated = kb.upload_bytes(
        &kb.alice,
        "docs",
        "cut.pdf",
        pdf[..pdf.len() / 3].to_vec(),
        None,
    );
    assert_eq!(truncated.status(), 202);
    let truncated = truncated.json::<Value>().unwrap()["id"].as_i64().unwrap();
    let good = kb.upload(&kb.alice, "docs", "docling/md/sources/wiki.md");

    let failed = kb.settle(&kb.alice, truncated);
    assert_eq!(failed["status"], "failed", "{failed}");
    let reason = failed["error"]["reason"].as_str().unwrap();
    assert!(["truncated", "corrupt"].contains(&reason), "{failed}");
    assert!(!failed["error"]["message"].as_str().unwrap().is_empty());
    kb.indexed(&kb.alice, good);
    assert_eq!(kb.daemon.get("/healthz").status(), 200);
}

#[test]
fn deleting_a_document_removes_it_from_search() {
    let kb = Kb::start();
    kb.collection(&kb.alice, json!({"name": "docs"}));
    let id = kb.upload(&kb.alice, "docs", "debian/basic-defs.en.html");
    kb.indexed(&kb.alice, id);
    let query = json!({"query": "Debian", "mode": "text"});
    assert!(!kb.hits(&kb.alice, query.clone()).is_empty());
    let resp = kb.call(
        Method::DELETE,
        &kb.alice,
        &format!("/api/v1/documents/{id}"),
        None,
    );
    assert_eq!(resp.status(), 204);
    assert_eq!(
        kb.get(&kb.alice, &format!("/api/v1/documents/{id}"))
            .status(),
        404
    );
    assert!(kb.hits(&kb.alice, query).is_empty());
    // The index applier removes its entries within a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let coll: Value = kb
            .get(&kb.alice, "/api/v1/collections/docs")
            .json()
            .unwrap();
        if coll["index"]["vectors"] == 0 && coll["index"]["text_chunks"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "index entries left: {coll}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn unreferenced_blobs_are_swept_after_a_restart_and_referenced_ones_kept() {
    let mut kb = Kb::start();
    kb.collection(&kb.alice, json!({ "name": "docs" }));
    let resp = kb.upload_bytes(
        &kb.alice,
        "docs",
        "kept.txt",
        b"a document that stays".to_vec(),
        None,
    );
    let id = resp.json::<Value>().unwrap()["id"].as_i64().unwrap();
    kb.indexed(&kb.alice, id);
    kb.daemon.terminate();
    kb.daemon.wait_exit(std::time::Duration::from_secs(30));

    // What an upload killed between its file and its row leaves: a blob no row references,
    // written before this start. One written just now might be an upload in flight: kept.
    let sha = "ab".repeat(32);
    let stale = kb.setup.data_dir().join("blobs/ab/ab").join(&sha);
    std::fs::create_dir_all(stale.parent().unwrap()).unwrap();
    std::fs::write(&stale, b"orphan").unwrap();
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&stale)
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    kb.restart_stopped();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while stale.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the orphan blob was not swept"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let content = kb.get(&kb.alice, &format!("/api/v1/documents/{id}/content"));
    assert_eq!(content.status(), 200);
    assert_eq!(content.bytes().unwrap().as_ref(), b"a document that stays");
}
