//! The model repository through KServe v2: metadata, readiness, index, load and unload.
//!
//! Models are the real int8 all-MiniLM-L6-v2 from vendor/, linked into a temporary repository.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{ADMIN_PASSWORD, Daemon, Setup, vendor};

pub const CONFIGURED: &str = r#"
name: "minilm"
platform: "onnxruntime_onnx"
max_batch_size: 32
input [
  { name: "input_ids" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "attention_mask" data_type: TYPE_INT64 dims: [ -1 ] },
  { name: "token_type_ids" data_type: TYPE_INT64 dims: [ -1 ] }
]
output [ { name: "last_hidden_state" data_type: TYPE_FP32 dims: [ -1, 384 ] } ]
"#;

/// Adds `<repo>/<name>/<version>/model.onnx` (a link to the vendored model) and, if given,
/// `<repo>/<name>/config.pbtxt`.
pub fn add_model(repo: &Path, name: &str, versions: &[u64], config: Option<&str>) {
    for v in versions {
        let dir = repo.join(name).join(v.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink(
            vendor().join("models/all-MiniLM-L6-v2/model.onnx"),
            dir.join("model.onnx"),
        )
        .unwrap();
    }
    if let Some(text) = config {
        std::fs::write(repo.join(name).join("config.pbtxt"), text).unwrap();
    }
}

pub struct Serving {
    pub setup: Setup,
    pub daemon: Daemon,
    pub token: String,
}

impl Serving {
    pub fn start(serving: &str, fill: impl FnOnce(&Path)) -> Serving {
        let setup = Setup::new();
        let repo = setup.dir.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        fill(&repo);
        let setup = setup.with(&format!(
            "[serving]\nrepository = {:?}\n{serving}",
            repo.display().to_string()
        ));
        setup.write_config(None);
        setup.add_user("admin", "admin", ADMIN_PASSWORD);
        let daemon = setup.start();
        daemon.wait_ready();
        let token = daemon.token("admin", ADMIN_PASSWORD);
        Serving {
            setup,
            daemon,
            token,
        }
    }

    fn repo(&self) -> PathBuf {
        self.setup.dir.path().join("repo")
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let resp = self
            .daemon
            .client()
            .get(self.daemon.url(path))
            .bearer_auth(&self.token)
            .send()
            .expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    pub fn post(&self, path: &str, token: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .daemon
            .client()
            .post(self.daemon.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().unwrap_or(Value::Null))
    }

    /// The Prometheus text of `/metrics`.
    pub fn metrics(&self) -> String {
        self.daemon
            .client()
            .get(self.daemon.url("/metrics"))
            .bearer_auth(&self.token)
            .send()
            .expect("metrics")
            .text()
            .expect("metrics text")
    }

    fn index(&self) -> Vec<Value> {
        let (status, body) = self.post("/v2/repository/index", &self.token, None);
        assert_eq!(status, 200, "{body}");
        body.as_array().cloned().unwrap_or_default()
    }
}

pub fn error_text(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error field in {body}"))
}

#[test]
fn configured_derived_and_broken_models_side_by_side() {
    let s = Serving::start("", |repo| {
        add_model(repo, "minilm", &[1], Some(CONFIGURED));
        add_model(repo, "derived", &[1], None);
        add_model(
            repo,
            "broken",
            &[1],
            Some("name: \"broken\"\nmax_batch_size: x\n"),
        );
    });

    let (status, meta) = s.get("/v2/models/minilm");
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["platform"], "onnxruntime_onnx");
    assert_eq!(meta["versions"], json!(["1"]));
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]})
    );
    assert_eq!(
        meta["outputs"][0],
        json!({"name": "last_hidden_state", "datatype": "FP32", "shape": [-1, -1, 384]})
    );

    // No config.pbtxt: derived from the model, batchable, so Triton's default batch of 4.
    let (status, config) = s.get("/v2/models/derived/config");
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["max_batch_size"], 4);
    assert_eq!(config["input"].as_array().map(Vec::len), Some(3));
    assert_eq!(config["execution_provider"], "CPUExecutionProvider");

    // The broken model is reported with file, line and column; the others keep serving.
    let (status, body) = s.get("/v2/models/broken");
    assert_eq!(status, 503, "{body}");
    assert!(
        error_text(&body).contains("broken/config.pbtxt: line 2, column 17"),
        "{body}"
    );
    let index = s.index();
    let states: Vec<(String, Option<String>)> = index
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["state"].as_str().map(str::to_string),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            ("broken".into(), Some("UNAVAILABLE".into())),
            ("derived".into(), Some("READY".into())),
            ("minilm".into(), Some("READY".into())),
        ]
    );
    assert_eq!(s.get("/v2/models/minilm/ready").0, 200);
    assert_eq!(s.get("/v2/models/derived/versions/1/ready").0, 200);
    // Strict readiness, as Triton's default: a model that failed makes the server not ready.
    assert_eq!(s.daemon.get("/v2/health/ready").status(), 503);
    assert_eq!(s.daemon.get("/v2/health/live").status(), 200);
}

#[test]
fn protocol_errors_are_precise_and_need_authentication() {
    let s = Serving::start("", |repo| add_model(repo, "minilm", &[1], Some(CONFIGURED)));
    assert_eq!(s.daemon.get("/v2/health/ready").status(), 200);

    let resp = s.daemon.get("/v2/models/minilm");
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("www-authenticate"));
    let body: Value = resp.json().unwrap();
    assert!(error_text(&body).contains("needs authentication"), "{body}");

    let (status, body) = s.get("/v2/models/nope");
    assert_eq!(status, 404, "{body}");
    assert!(error_text(&body).contains("\"nope\""), "{body}");
    let (status, body) = s.get("/v2/models/minilm/versions/zero");
    assert_eq!(status, 400, "{body}");
    assert!(
        error_text(&body).contains("not a positive integer"),
        "{body}"
    );
    let (status, body) = s.get("/v2/models/minilm/versions/7");
    assert_eq!(status, 404, "{body}");
    // In the default control mode the repository cannot be changed through the API.
    let (status, body) = s.post("/v2/repository/models/minilm/unload", &s.token, None);
    assert_eq!(status, 400, "{body}");
    assert!(
        error_text(&body).contains("control_mode = \"explicit\""),
        "{body}"
    );
}

#[test]
fn explicit_mode_loads_and_unloads_on_request_by_admins_only() {
    let s = Serving::start(
        "control_mode = \"explicit\"\nstartup_models = [\"minilm\"]",
        |repo| {
            add_model(repo, "minilm", &[1], Some(CONFIGURED));
            add_model(repo, "derived", &[1], None);
        },
    );
    // Only the startup model is loaded; the other is listed without a state.
    let index = s.index();
    assert_eq!(index.len(), 2, "{index:?}");
    assert_eq!(index[0]["name"], "derived");
    assert!(index[0].get("state").is_none(), "{index:?}");
    assert_eq!(s.get("/v2/models/derived").0, 404);

    // A viewer may not load.
    s.setup.add_user("vic", "viewer", "viewer-password-123");
    let viewer = s.daemon.token("vic", "viewer-password-123");
    let (status, body) = s.post("/v2/repository/models/derived/load", &viewer, None);
    assert_eq!(status, 403, "{body}");
    assert!(error_text(&body).contains("admin"), "{body}");

    let (status, body) = s.post("/v2/repository/models/derived/load", &s.token, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.get("/v2/models/derived/ready").0, 200);

    // Reload with a configuration override in Triton's JSON form.
    let override_config = json!({"max_batch_size": 8}).to_string();
    let (status, body) = s.post(
        "/v2/repository/models/derived/load",
        &s.token,
        Some(json!({"parameters": {"config": override_config}})),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.get("/v2/models/derived/config").1["max_batch_size"], 8);
    let (status, body) = s.post(
        "/v2/repository/models/derived/load",
        &s.token,
        Some(json!({"parameters": {"config": "{\"max_batchsize\": 8}"}})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("max_batchsize"), "{body}");
    // The failed reload left the loaded version serving.
    assert_eq!(s.get("/v2/models/derived/ready").0, 200);

    let (status, body) = s.post("/v2/repository/models/ghost/load", &s.token, None);
    assert_eq!(status, 404, "{body}");
    let (status, body) = s.post("/v2/repository/models/minilm/unload", &s.token, None);
    assert_eq!(status, 200, "{body}");
    assert_eq!(s.get("/v2/models/minilm").0, 404);

    // Loads and unloads are admin actions in the audit log.
    let audit: Vec<Value> = s
        .daemon
        .client()
        .get(s.daemon.url("/api/v1/audit?limit=1000"))
        .bearer_auth(&s.token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let has = |action: &str, outcome: &str| {
        audit
            .iter()
            .any(|r| r["action"] == action && r["outcome"] == outcome)
    };
    assert!(
        has("model.load", "allowed")
            && has("model.load", "denied")
            && has("model.unload", "allowed"),
        "{audit:#?}"
    );
}

#[test]
fn version_policy_selects_versions() {
    let s = Serving::start("", |repo| {
        add_model(repo, "latest", &[1, 2], None);
        add_model(repo, "every", &[1, 2], Some("version_policy: { all { } }"));
    });
    assert_eq!(s.get("/v2/models/latest").1["versions"], json!(["2"]));
    assert_eq!(s.get("/v2/models/latest/versions/1").0, 404);
    assert_eq!(s.get("/v2/models/every").1["versions"], json!(["1", "2"]));
    assert_eq!(s.get("/v2/models/every/versions/1/ready").0, 200);
}

#[test]
fn poll_mode_follows_the_repository() {
    let s = Serving::start("control_mode = \"poll\"\npoll_interval_seconds = 1", |_| {});
    assert_eq!(s.get("/v2/models/late").0, 404);
    add_model(&s.repo(), "late", &[1], None);
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.get("/v2/models/late/ready").0 != 200 {
        assert!(
            Instant::now() < deadline,
            "model not picked up; log:\n{}",
            s.daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::fs::remove_dir_all(s.repo().join("late")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.get("/v2/models/late").0 != 404 {
        assert!(
            Instant::now() < deadline,
            "model not dropped; log:\n{}",
            s.daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_built_in_embedding_model_is_served_like_a_repository_model() {
    let text_model = format!(
        "{CONFIGURED}\nparameters {{ key: \"task\" value: {{ string_value: \"embedding\" }} }}\n"
    );
    let s = Serving::start(
        "control_mode = \"explicit\"\nstartup_models = [\"minilm\"]",
        |repo| {
            add_model(repo, "minilm", &[1], Some(&text_model));
            std::os::unix::fs::symlink(
                vendor().join("models/all-MiniLM-L6-v2/tokenizer.json"),
                repo.join("minilm/tokenizer.json"),
            )
            .unwrap();
        },
    );
    let builtin = "all-MiniLM-L6-v2";
    let (status, meta) = s.get(&format!("/v2/models/{builtin}"));
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["versions"], json!(["1"]), "{meta}");
    // It is not in the repository, so the repository index does not list it…
    let index = s.index();
    assert!(index.iter().all(|r| r["name"] != builtin), "{index:?}");
    // …and it cannot be unloaded through the repository API.
    let (status, body) = s.post(
        &format!("/v2/repository/models/{builtin}/unload"),
        &s.token,
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("built-in"), "{body}");
    assert_eq!(s.get(&format!("/v2/models/{builtin}/ready")).0, 200);

    // Its vectors are those of the same model served from the repository (the built-in one
    // runs in compact memory mode, the repository one in fast mode).
    let texts = json!([
        "The boundary layer of a flat plate.",
        "Heat transfer in supersonic flow."
    ]);
    let embed = |model: &str| -> Vec<Vec<f64>> {
        let (status, body) = s.post(
            "/v1/embeddings",
            &s.token,
            Some(json!({ "model": model, "input": texts })),
        );
        assert_eq!(status, 200, "{body}");
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| serde_json::from_value(d["embedding"].clone()).unwrap())
            .collect()
    };
    let (ours, theirs) = (embed(builtin), embed("minilm"));
    assert_eq!(ours.len(), 2);
    for (a, b) in ours.iter().zip(&theirs) {
        assert_eq!(a.len(), 384);
        let cosine: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        assert!(cosine > 0.9999, "cosine {cosine}");
    }
}

#[test]
fn the_built_in_model_runs_on_as_many_sessions_as_configured() {
    let setup = Setup::new();
    setup.write_config(None);
    setup.add_user("admin", "admin", ADMIN_PASSWORD);
    let daemon = setup.start_with(|cmd| {
        cmd.env("SPARKBRAIN_MODELS__EMBEDDING_INSTANCES", "2");
    });
    daemon.wait_ready();
    let token = daemon.token("admin", ADMIN_PASSWORD);
    let client = daemon.client();
    let builtin = "all-MiniLM-L6-v2";

    let config: Value = client
        .get(daemon.url(&format!("/v2/models/{builtin}/config")))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(config["instance_group"][0]["count"], 2, "{config}");
    assert_eq!(config["instance_group"][0]["kind"], "KIND_CPU", "{config}");
    // One worker thread per session, each running its own copy of the model: the two
    // instances, and, from the first search on, the query model's session of its own.
    let pid = daemon.child.id();
    let workers = || -> Vec<String> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|c| c.trim().to_string())
            .filter(|c| c.starts_with("model-"))
            .collect()
    };
    assert_eq!(workers().len(), 2, "{:?}", workers());
    let call = |path: &str, body: Value| {
        let resp = client
            .post(daemon.url(path))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .unwrap();
        assert!(resp.status().is_success(), "{}", resp.text().unwrap());
    };
    call("/api/v1/collections", json!({"name": "wings"}));
    let part = reqwest::blocking::multipart::Part::bytes(b"Pressure on a wing.".to_vec())
        .file_name("wing.txt");
    let upload: Value = client
        .post(daemon.url("/api/v1/collections/wings/documents"))
        .bearer_auth(&token)
        .multipart(reqwest::blocking::multipart::Form::new().part("file", part))
        .send()
        .unwrap()
        .json()
        .unwrap();
    let document = daemon.url(&format!("/api/v1/documents/{}", upload["id"]));
    let status = || -> Value {
        let doc: Value = client
            .get(&document)
            .bearer_auth(&token)
            .send()
            .unwrap()
            .json()
            .unwrap();
        doc["status"].clone()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while status() != "indexed" {
        assert!(std::time::Instant::now() < deadline, "{}", daemon.logs());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(workers().len(), 2, "{:?}", workers());
    call(
        "/api/v1/search",
        json!({"query": "wings", "mode": "vector"}),
    );
    assert_eq!(workers().len(), 3, "{:?}", workers());

    // Requests spread over both sessions answer exactly what one request alone gets.
    let embed = |text: &str| -> Vec<f64> {
        let body: Value = daemon
            .client()
            .post(daemon.url("/v1/embeddings"))
            .bearer_auth(&token)
            .json(&json!({ "model": builtin, "input": text }))
            .send()
            .unwrap()
            .json()
            .unwrap();
        serde_json::from_value(body["data"][0]["embedding"].clone()).unwrap()
    };
    let texts: Vec<String> = (0..16)
        .map(|i| format!("Pressure distribution on a wing, case {i}."))
        .collect();
    let alone: Vec<Vec<f64>> = texts.iter().map(|t| embed(t)).collect();
    let together: Vec<Vec<f64>> = std::thread::scope(|scope| {
        let handles: Vec<_> = texts.iter().map(|t| scope.spawn(|| embed(t))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (a, b) in alone.iter().zip(&together) {
        let cosine: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
        assert!(cosine > 0.9999, "cosine {cosine}");
    }
}
