//! `sparkbrain ingest` and `sparkbrain search` against a running daemon, as an operator runs
//! them: a folder of real documents in, a summary out, hits printed.

use reqwest::Method;
use serde_json::{Value, json};

use crate::util::{Kb, doc};

#[test]
fn ingest_a_folder_then_search_it_from_the_shell() {
    let kb = Kb::start();
    let key: Value = kb
        .call(
            Method::POST,
            &kb.alice,
            "/api/v1/keys",
            Some(json!({"name": "shell"})),
        )
        .json()
        .unwrap();
    let key = key["key"].as_str().unwrap().to_string();

    // A folder with two readable documents, a hidden file (skipped), a duplicate and a file
    // the daemon refuses.
    let folder = tempfile::tempdir().unwrap();
    std::fs::copy(
        doc("docling/md/sources/wiki.md"),
        folder.path().join("wiki.md"),
    )
    .unwrap();
    std::fs::copy(
        doc("docling/docx/sources/word_sample.docx"),
        folder.path().join("word.docx"),
    )
    .unwrap();
    std::fs::copy(
        doc("docling/md/sources/wiki.md"),
        folder.path().join("again.md"),
    )
    .unwrap();
    std::fs::write(
        folder.path().join(".hidden.txt"),
        "not for the knowledge base",
    )
    .unwrap();
    std::fs::copy(
        doc("unstructured/language-docs/eng_spa_mult.rtf"),
        folder.path().join("old.rtf"),
    )
    .unwrap();

    let out = kb
        .setup
        .command()
        .env("SPARKBRAIN_API_KEY", &key)
        .args(["ingest", "--collection", "shelf", "--create"])
        .arg(folder.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // One file failed (RTF), so the command says so and exits 1.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("indexed:            2"), "{stdout}");
    assert!(stdout.contains("skipped duplicates: 1"), "{stdout}");
    assert!(stdout.contains("failed:             1"), "{stdout}");
    assert!(
        stdout.contains("old.rtf") && stdout.contains("RTF"),
        "{stdout}"
    );
    let coll: Value = kb
        .get(&kb.alice, "/api/v1/collections/shelf")
        .json()
        .unwrap();
    assert_eq!(coll["counts"]["documents"], 2, "{coll}");

    let out = kb
        .setup
        .command()
        .env("SPARKBRAIN_API_KEY", &key)
        .args([
            "search",
            "--collection",
            "shelf",
            "--mode",
            "text",
            "swimming in the lake",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("1. "), "{stdout}");
    assert!(stdout.contains("shelf"), "{stdout}");
    assert!(
        stdout.contains("**"),
        "highlighted words expected: {stdout}"
    );

    // Without a key the command says what to do.
    let out = kb
        .setup
        .command()
        .args(["search", "anything"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("SPARKBRAIN_API_KEY"));
}

#[test]
fn ask_from_the_shell_streams_the_answer_then_its_sources() {
    let kb = Kb::start_with(crate::util::with_stories(crate::common::Setup::new()));
    let key: Value = kb
        .call(
            Method::POST,
            &kb.alice,
            "/api/v1/keys",
            Some(json!({"name": "shell"})),
        )
        .json()
        .unwrap();
    let key = key["key"].as_str().unwrap().to_string();
    kb.collection(&kb.alice, json!({ "name": "notes" }));
    let resp = kb.upload_bytes(
        &kb.alice,
        "notes",
        "owls.txt",
        b"Owls hunt at night and sleep during the day.".to_vec(),
        None,
    );
    let id = resp.json::<Value>().unwrap()["id"].as_i64().unwrap();
    kb.indexed(&kb.alice, id);

    let ask = |args: &[&str]| {
        kb.setup
            .command()
            .env("SPARKBRAIN_API_KEY", &key)
            .arg("ask")
            .args(args)
            .output()
            .unwrap()
    };
    let out = ask(&["When do owls hunt?", "--collection", "notes"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (answer, sources) = stdout.split_once("\nSources:\n").expect("a sources list");
    // The streamed text is the answer the API gives whole (greedy decoding).
    let whole: Value = kb
        .call(
            Method::POST,
            &kb.alice,
            "/api/v1/ask",
            Some(json!({ "question": "When do owls hunt?", "collections": ["notes"] })),
        )
        .json()
        .unwrap();
    assert_eq!(
        answer.trim_end(),
        whole["answer"].as_str().unwrap().trim_end()
    );
    assert!(sources.contains("owls.txt"), "{sources}");
    assert!(sources.contains("notes · document"), "{sources}");

    let out = ask(&["x", "--collection", "missing"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("404") && stderr.contains("missing"),
        "{stderr}"
    );
}
