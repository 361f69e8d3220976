//! Search over real documents: text, vector and hybrid find the document a phrase comes from,
//! with its page and a highlighted snippet; bad requests are refused precisely.

use serde_json::{Value, json};

use crate::util::{Kb, problem};

fn first_document(hits: &[Value]) -> i64 {
    hits.first()
        .and_then(|h| h["document"].as_i64())
        .expect("a hit")
}

#[test]
fn each_mode_finds_the_right_document_with_citations() {
    let mut kb = Kb::start();
    kb.collection(&kb.alice, json!({"name": "library"}));
    let pdf = kb.upload(&kb.alice, "library", "docling/pdf/sources/multi_page.pdf");
    let duck = kb.upload(&kb.alice, "library", "docling/html/sources/wiki_duck.html");
    let epub = kb.upload(
        &kb.alice,
        "library",
        "unstructured/language-docs/eng_spa_mult.epub",
    );
    let word = kb.upload(
        &kb.alice,
        "library",
        "docling/docx/sources/word_sample.docx",
    );
    for id in [pdf, duck, epub, word] {
        kb.indexed(&kb.alice, id);
    }
    let doc: Value = kb
        .get(&kb.alice, &format!("/api/v1/documents/{pdf}"))
        .json()
        .unwrap();
    assert_eq!(doc["pages"], 5, "{doc}");

    for mode in ["text", "vector", "hybrid"] {
        let hits = kb.hits(
            &kb.alice,
            json!({"query": "ducks are waterfowl birds", "mode": mode, "top_k": 5}),
        );
        assert_eq!(first_document(&hits), duck, "{mode}: {hits:?}");
        let query = "the typewriter patented by Christopher Latham Sholes";
        let hits = kb.hits(&kb.alice, json!({"query": query, "mode": mode, "top_k": 5}));
        assert_eq!(first_document(&hits), pdf, "{mode}: {hits:?}");
        let hit = &hits[0];
        // The typewriter's history is on the first page.
        assert_eq!(hit["page_start"], 1, "{hit}");
        assert_eq!(hit["collection"], "library");
        assert!(
            hit["chunk"]["text"].as_str().unwrap().contains("Sholes"),
            "{hit}"
        );
    }

    // The snippet marks the query's words.
    let query = json!({"query": "born free and equal in dignity", "mode": "text", "top_k": 3});
    let hits = kb.hits(&kb.alice, query);
    assert_eq!(first_document(&hits), epub, "{hits:?}");
    let snippet = &hits[0]["snippet"];
    let text = snippet["text"].as_str().unwrap();
    let marked: Vec<String> = snippet["highlights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            text[r[0].as_u64().unwrap() as usize..r[1].as_u64().unwrap() as usize].to_lowercase()
        })
        .collect();
    assert!(
        marked.iter().any(|w| w == "dignity" || w == "equal"),
        "{snippet}"
    );

    // Filters narrow the documents.
    let hits = kb.hits(
        &kb.alice,
        json!({"query": "ducks", "filters": {"documents": [word]}, "top_k": 5}),
    );
    assert!(hits.iter().all(|h| h["document"] == word), "{hits:?}");
    let hits = kb.hits(
        &kb.alice,
        json!({"query": "word processor", "filters": {"formats": ["pdf"]}}),
    );
    assert!(
        !hits.is_empty() && hits.iter().all(|h| h["document"] == pdf),
        "{hits:?}"
    );

    // After a restart everything is still found (the indexes were saved or replayed).
    kb.restart();
    let hits = kb.hits(
        &kb.alice,
        json!({"query": "ducks are waterfowl birds", "mode": "vector"}),
    );
    assert_eq!(first_document(&hits), duck);
}

#[test]
fn lost_indexes_are_rebuilt_from_the_database() {
    let mut kb = Kb::start();
    let c = kb.collection(&kb.alice, json!({"name": "library"}));
    let duck = kb.upload(&kb.alice, "library", "docling/html/sources/wiki_duck.html");
    let doc = kb.indexed(&kb.alice, duck);
    kb.daemon.terminate();
    kb.daemon.wait_exit(std::time::Duration::from_secs(30));
    let dir = kb
        .setup
        .data_dir()
        .join("kb/collections")
        .join(c["id"].as_i64().unwrap().to_string());
    std::fs::remove_dir_all(&dir).unwrap();
    kb.restart_stopped();
    let coll: Value = kb
        .get(&kb.alice, "/api/v1/collections/library")
        .json()
        .unwrap();
    assert_eq!(coll["index"]["vectors"], doc["chunks"], "{coll}");
    assert_eq!(coll["index"]["text_chunks"], doc["chunks"], "{coll}");
    for mode in ["text", "vector"] {
        let hits = kb.hits(
            &kb.alice,
            json!({"query": "ducks are waterfowl birds", "mode": mode}),
        );
        assert_eq!(first_document(&hits), duck, "{mode}");
    }
}

#[test]
fn bad_searches_are_refused_precisely() {
    let kb = Kb::start();
    kb.collection(&kb.alice, json!({"name": "library"}));
    let cases = [
        (json!({"query": "   "}), 422, "empty"),
        (json!({"query": "x", "top_k": 0}), 422, "top_k"),
        (json!({"query": "x", "top_k": 5000}), 422, "top_k"),
        (json!({"query": "x", "mode": "psychic"}), 422, "mode"),
        (
            json!({"query": "x", "collections": ["nowhere"]}),
            404,
            "nowhere",
        ),
        (
            json!({"query": "x", "filters": {"formats": ["exe"]}}),
            422,
            "exe",
        ),
        (json!({"query": "x".repeat(5000)}), 422, "longer"),
        (json!({"query": 42}), 422, "query"),
        (json!({"q": "x"}), 422, "q"),
    ];
    for (body, status, word) in cases {
        let (s, d) = problem(kb.search(&kb.alice, body.clone()));
        assert_eq!(s, status, "{body}: {d}");
        assert!(d.contains(word), "{body}: {d}");
    }
    // A query of stop words finds nothing in text mode rather than failing.
    assert!(
        kb.hits(&kb.alice, json!({"query": "the of and", "mode": "text"}))
            .is_empty()
    );
}

const PASSAGE: &str = "The lighthouse keeper climbed the spiral stairs every evening to light \
                       the lamp that warned ships away from the rocks.";

/// Indexes the passage and another one; returns the passage's document id.
fn index_passages(kb: &Kb) -> i64 {
    kb.collection(&kb.alice, json!({"name": "library"}));
    let other = "Granite forms when magma cools slowly deep underground, which gives its \
                 crystals time to grow large enough to see.";
    let mut ids = Vec::new();
    for (name, text) in [("keeper.txt", PASSAGE), ("granite.txt", other)] {
        let resp = kb.upload_bytes(&kb.alice, "library", name, text.into(), None);
        assert_eq!(resp.status(), 202, "{}", resp.text().unwrap_or_default());
        ids.push(resp.json::<Value>().unwrap()["id"].as_i64().unwrap());
    }
    for id in &ids {
        kb.indexed(&kb.alice, *id);
    }
    ids[0]
}

/// The vector search's best hit for the passage's own words: its document and score.
fn best_for_passage(kb: &Kb) -> (i64, f64) {
    let hits = kb.hits(
        &kb.alice,
        json!({"query": PASSAGE, "mode": "vector", "top_k": 2}),
    );
    assert_eq!(hits[0]["chunk"]["text"], PASSAGE, "{hits:?}");
    (
        first_document(&hits),
        hits[0]["score"].as_f64().expect("score"),
    )
}

/// Stops the daemon, sets `models.embedding_query_model` (TOML string) and starts it again.
fn restart_with_query_model(kb: &mut Kb, value: &str) {
    kb.daemon.terminate();
    kb.daemon.wait_exit(std::time::Duration::from_secs(30));
    let config = kb.setup.config_path();
    let text = std::fs::read_to_string(&config).unwrap();
    let query_model = crate::common::vendor()
        .join("models/all-MiniLM-L6-v2/model.query-int8.onnx")
        .display()
        .to_string();
    assert!(
        text.contains(&format!("{query_model:?}")),
        "config layout changed"
    );
    std::fs::write(&config, text.replace(&format!("{query_model:?}"), value)).unwrap();
    kb.restart_stopped();
}

/// Queries are embedded by the query model (int8 activations), documents by the embedding
/// model: a search for a passage's own words scores it a little below an exact match, and
/// exactly 1 once `models.embedding_query_model` is emptied and queries use the embedding model.
#[test]
fn queries_are_embedded_by_the_query_model_close_to_the_documents_vectors() {
    let mut kb = Kb::start();
    let passage = index_passages(&kb);
    let (doc, quantised) = best_for_passage(&kb);
    assert_eq!(doc, passage);
    assert!(
        (0.98..0.999).contains(&quantised),
        "the query model's vector should be close to, not equal to, the passage's: {quantised}"
    );

    restart_with_query_model(&mut kb, "\"\"");
    let (doc, exact) = best_for_passage(&kb);
    assert_eq!(doc, passage);
    assert!(exact > 0.9995, "the embedding model's own vector: {exact}");
}

/// A query model that does not take and give the embedding model's tensors (here ONNX
/// Runtime's own one-input sigmoid sample) is refused at the first search, with the setting
/// named in the log, and queries are embedded by the embedding model instead.
#[test]
fn a_query_model_of_another_shape_leaves_queries_to_the_embedding_model() {
    let mut kb = Kb::start();
    let passage = index_passages(&kb);
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.dirname(onnxruntime.__file__))",
        ])
        .output()
        .expect("python3");
    let sigmoid = std::path::Path::new(String::from_utf8_lossy(&out.stdout).trim())
        .join("datasets/sigmoid.onnx");
    assert!(sigmoid.is_file(), "{}", sigmoid.display());
    restart_with_query_model(&mut kb, &format!("{:?}", sigmoid.display().to_string()));

    let (doc, score) = best_for_passage(&kb);
    assert_eq!(doc, passage);
    assert!(score > 0.9995, "the embedding model's own vector: {score}");
    let logs = kb.daemon.logs();
    assert!(
        logs.contains("models.embedding_query_model")
            && logs.contains("does not take and give the tensors"),
        "{logs}"
    );
}

/// Each document indexed on its own leaves a text segment of its own; once the collection has
/// been quiet for `kb.text_merge_quiet_seconds`, the daemon merges them into one per core
/// (never more than there were), and every document is still found by its words.
#[test]
fn a_quiet_collection_merges_its_text_segments_and_keeps_every_document() {
    let setup = crate::common::Setup::new().with("[kb]\ntext_merge_quiet_seconds = 4");
    let kb = Kb::start_with(setup);
    kb.collection(&kb.alice, json!({"name": "library"}));
    let passages = [
        ("keeper.txt", PASSAGE, "lighthouse keeper"),
        (
            "granite.txt",
            "Granite forms when magma cools slowly deep underground.",
            "magma cools",
        ),
        (
            "tides.txt",
            "Tides rise and fall twice a day as the moon pulls on the oceans.",
            "moon pulls oceans",
        ),
    ];
    let mut ids = Vec::new();
    for (name, text, _) in passages {
        let resp = kb.upload_bytes(&kb.alice, "library", name, text.into(), None);
        assert_eq!(resp.status(), 202, "{}", resp.text().unwrap_or_default());
        let id = resp.json::<Value>().unwrap()["id"].as_i64().unwrap();
        kb.indexed(&kb.alice, id);
        ids.push(id);
    }
    let segments = || -> u64 {
        let coll: Value = kb
            .get(&kb.alice, "/api/v1/collections/library")
            .json()
            .unwrap();
        coll["index"]["text_segments"]
            .as_u64()
            .expect("text_segments")
    };
    assert_eq!(segments(), 3, "one commit per document");

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let expected = cores.min(3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while segments() != expected && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(segments(), expected, "segments once quiet on {cores} cores");
    for ((_, _, words), id) in passages.iter().zip(&ids) {
        let hits = kb.hits(
            &kb.alice,
            json!({"query": words, "mode": "text", "top_k": 3}),
        );
        assert_eq!(first_document(&hits), *id, "{words}: {hits:?}");
    }
}
