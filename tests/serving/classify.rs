//! A real text classifier served from the repository and used through `/api/v1/inference`.
//!
//! The model is built by tests/fixtures/build_classifier.py (MiniLM embeddings of Cranfield,
//! CISI and Vaswani passages → logistic regression, joined into one ONNX graph) from the data
//! in ../shared, once, into the test-scratch folder; it is not committed.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::repository::Serving;

/// Builds the classifier fixture unless a previous run left it.
fn fixture() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("classifier");
    if !dir.join("summary.json").is_file() {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/build_classifier.py");
        let out = Command::new("python3")
            .arg(&script)
            .arg("--out")
            .arg(&dir)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("python3 (install the test dependencies with `just deps`)");
        assert!(
            out.status.success(),
            "building the classifier failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

fn link_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            link_tree(&entry.path(), &target);
        } else {
            std::os::unix::fs::symlink(entry.path(), target).unwrap();
        }
    }
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn held_out_passages_are_classified_as_the_reference_does() {
    let fixture = fixture();
    let s = Serving::start("", |repo| {
        link_tree(
            &fixture.join("text_classifier"),
            &repo.join("text_classifier"),
        )
    });
    let heldout = lines(&fixture.join("heldout.jsonl"));
    let expected = lines(&fixture.join("heldout_expected.jsonl"));
    assert_eq!(heldout.len(), 300);

    let mut correct = 0;
    let mut max_diff = 0f64;
    for (chunk, expected_chunk) in heldout.chunks(64).zip(expected.chunks(64)) {
        let texts: Vec<&str> = chunk.iter().map(|l| l["text"].as_str().unwrap()).collect();
        let (status, body) = s.post(
            "/api/v1/inference",
            &s.token,
            Some(json!({ "texts": texts, "model_name": "text_classifier" })),
        );
        assert_eq!(status, 200, "{body}");
        let results = body["results"].as_array().unwrap();
        assert_eq!(results.len(), chunk.len());
        for ((result, line), reference) in results.iter().zip(chunk).zip(expected_chunk) {
            if result["result"] == line["label"] {
                correct += 1;
            }
            assert_eq!(
                result["result"], reference["label"],
                "differs from the reference: {result}"
            );
            let labels = ["aeronautics", "information_science", "physics"];
            for (i, label) in labels.iter().enumerate() {
                let got = result["scores"][label].as_f64().unwrap();
                let want = reference["probabilities"][i].as_f64().unwrap();
                max_diff = max_diff.max((got - want).abs());
            }
            assert!(result["latency_ms"].as_f64().unwrap() > 0.0);
        }
    }
    let accuracy = f64::from(correct) / 300.0;
    eprintln!(
        "held-out accuracy through /api/v1/inference: {accuracy:.4}; max probability diff {max_diff:.2e}"
    );
    assert!(accuracy >= 0.97, "accuracy {accuracy}");
    assert!(
        max_diff < 1e-3,
        "probabilities differ from the reference by {max_diff}"
    );

    // Bad requests get precise problems; the model keeps serving.
    let cases = [
        (
            json!({ "model_name": "text_classifier" }),
            422,
            "give either text or texts",
        ),
        (
            json!({ "texts": [], "model_name": "text_classifier" }),
            422,
            "must not be empty",
        ),
        (
            json!({ "text": "x", "model_name": "ghost" }),
            404,
            "\"ghost\"",
        ),
        (
            json!({ "text": "x", "model_name": "text_classifier", "max_length": 4096 }),
            422,
            "1 to 256 tokens",
        ),
        (
            json!({ "text": 5, "model_name": "text_classifier" }),
            422,
            "invalid type",
        ),
    ];
    for (body, status, expected) in cases {
        let (got, answer) = s.post("/api/v1/inference", &s.token, Some(body));
        assert_eq!(got, status, "{answer}");
        assert!(
            answer["detail"].as_str().unwrap_or("").contains(expected),
            "expected {expected:?} in {answer}"
        );
    }
    let (status, body) = s.post(
        "/api/v1/inference",
        &s.token,
        Some(json!({ "text": "Lift and drag of a delta wing in supersonic flow", "model_name": "text_classifier", "max_length": 16 })),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["result"], "aeronautics", "{body}");
}
