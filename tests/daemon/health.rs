//! `/healthz` and `/readyz`, including the reasons given when the runtime or model is missing.

use crate::common::Setup;
use crate::support::{poll_readyz, reasons};

#[test]
fn healthz_answers_ok_with_version() {
    let setup = Setup::new();
    setup.write_config(None);
    let daemon = setup.start();
    let resp = daemon.get("/healthz");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("application/json"),
        "content-type {content_type}"
    );
    let body: serde_json::Value = resp.json().expect("json");
    assert_eq!(body["status"], "ok", "{body}");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"), "{body}");
}

#[test]
fn readyz_becomes_ready_with_all_checks_passing() {
    let setup = Setup::new();
    setup.write_config(None);
    let daemon = setup.start();
    daemon.wait_ready();
    let resp = daemon.get("/readyz");
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().expect("json");
    assert_eq!(body["status"], "ready", "{body}");
    assert!(reasons(&body).is_empty(), "{body}");
    let checks = body["checks"].as_array().expect("checks");
    let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "store",
            "runtime",
            "knowledge_base",
            "embedding_model",
            "gpus"
        ],
        "{body}"
    );
    assert!(checks.iter().all(|c| c["ok"] == true), "{body}");
}

#[test]
fn readyz_names_a_missing_runtime_library() {
    let setup = Setup::new();
    let missing = setup.dir.path().join("no-such-dir/libonnxruntime.so");
    let missing = missing.display().to_string();
    setup.write_config(Some(&missing));
    let daemon = setup.start();
    // The loader runs after the listener opens; until it finishes the reason is "loading".
    let (status, body) = poll_readyz(&daemon, |_, b| {
        reasons(b)
            .iter()
            .any(|r| r.contains("ONNX Runtime library not found"))
    });
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not ready", "{body}");
    let reasons = reasons(&body);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("ONNX Runtime library not found") && r.contains(&missing)),
        "no reason names {missing}: {reasons:?}"
    );
    // The process itself is alive: liveness stays green.
    let health = daemon.get("/healthz");
    assert_eq!(health.status(), 200);
}

#[test]
fn readyz_names_a_missing_embedding_model() {
    readyz_names_a_missing_model_file("model.onnx", "embedding model", "models.embedding_model");
}

#[test]
fn readyz_names_a_missing_query_model() {
    readyz_names_a_missing_model_file(
        "model.query-int8.onnx",
        "query embedding model",
        "models.embedding_query_model",
    );
}

/// Points the setting for one of the built-in model's files at a path that does not exist.
fn readyz_names_a_missing_model_file(file: &str, what: &str, key: &str) {
    let setup = Setup::new();
    let config = setup.write_config(None);
    // The harness always points at vendor/'s files; swap in a path that does not exist.
    let real = crate::common::vendor()
        .join("models/all-MiniLM-L6-v2")
        .join(file)
        .display()
        .to_string();
    let missing = setup.dir.path().join("models/absent.onnx");
    let missing = missing.display().to_string();
    let text = std::fs::read_to_string(&config).expect("read config");
    assert!(text.contains(&format!("{real:?}")), "config layout changed");
    std::fs::write(
        &config,
        text.replace(&format!("{real:?}"), &format!("{missing:?}")),
    )
    .expect("write config");

    let daemon = setup.start();
    let (status, body) = poll_readyz(&daemon, |_, b| {
        reasons(b).iter().any(|r| r.starts_with("embedding_model:"))
    });
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["status"], "not ready", "{body}");
    let reasons = reasons(&body);
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&format!("{what} not found"))
                && r.contains(&missing)
                && r.contains(key)),
        "no reason names {missing}: {reasons:?}"
    );
    // Only the model is missing: the runtime itself loaded.
    assert!(
        !reasons.iter().any(|r| r.starts_with("runtime:")),
        "{reasons:?}"
    );
}
