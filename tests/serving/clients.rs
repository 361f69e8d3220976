//! Official clients against sparkbrain: the `openai` Python SDK on `/v1/embeddings` and
//! `tritonclient[http]` on `/v2`, with an API key, checked against the Python references in
//! tests/fixtures (onnxruntime and tokenizers on the same model).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::common::vendor;
use crate::repository::{CONFIGURED, Serving, add_model, error_text};

/// The MiniLM repository entry with its text task: mean pooling, normalised, 256 tokens.
fn add_text_model(repo: &Path, name: &str) {
    let config = format!(
        "{}\nparameters {{ key: \"task\" value: {{ string_value: \"embedding\" }} }}\n\
         parameters {{ key: \"max_length\" value: {{ string_value: \"256\" }} }}\n",
        CONFIGURED.replace("name: \"minilm\"", &format!("name: \"{name}\""))
    );
    add_model(repo, name, &[1], Some(&config));
    std::os::unix::fs::symlink(
        vendor().join("models/all-MiniLM-L6-v2/tokenizer.json"),
        repo.join(name).join("1/tokenizer.json"),
    )
    .unwrap();
}

fn api_key(s: &Serving) -> String {
    let (status, body) = s.post("/api/v1/keys", &s.token, Some(json!({ "name": "clients" })));
    assert_eq!(status, 201, "{body}");
    body["key"].as_str().unwrap().to_string()
}

/// Runs a Python script with `args`, returning its stdout parsed as JSON.
fn python(script: &str, args: &[&str]) -> Value {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut child = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .env("PYTHONPATH", &fixtures)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (install the test dependencies with `just deps`)");
    child.stdin.take().map(|mut s| s.flush());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "python output: {e}: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[test]
fn openai_sdk_embeddings_equal_the_reference() {
    let s = Serving::start("", |repo| add_text_model(repo, "minilm"));
    let key = api_key(&s);
    let script = r#"
import json, sys, base64
import numpy as np
from openai import OpenAI
from embed_reference import embed
client = OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2])
texts = [
    "The aircraft wing stalls at high angles of attack.",
    "Information retrieval ranks documents by relevance.",
    "short",
    # Longer than 128 tokens: the shipped tokenizer.json would cut it at 128, the model's 256.
    " ".join(["Boundary layer separation on swept wings at transonic speeds."] * 30),
]
got = client.embeddings.create(model="minilm", input=texts)
vectors = np.array([d.embedding for d in sorted(got.data, key=lambda d: d.index)], dtype=np.float32)
raw = client.embeddings.create(model="minilm", input=texts[0], encoding_format="base64")
b64 = np.frombuffer(base64.b64decode(raw.data[0].embedding), dtype=np.float32)
ref = embed(texts)
cos = (vectors * ref).sum(axis=1) / (np.linalg.norm(vectors, axis=1) * np.linalg.norm(ref, axis=1))
print(json.dumps({
    "dims": int(vectors.shape[1]),
    "min_cosine": float(cos.min()),
    "norms": np.linalg.norm(vectors, axis=1).tolist(),
    "base64_matches": bool(np.allclose(b64, vectors[0], atol=1e-6)),
    "prompt_tokens": got.usage.prompt_tokens,
    "model": got.model,
    "models": [m.id for m in client.models.list()],
}))
"#;
    let result = python(script, &[&s.daemon.base, &key]);
    assert_eq!(result["dims"], 384, "{result}");
    let min_cosine = result["min_cosine"].as_f64().unwrap();
    assert!(
        min_cosine >= 0.9999,
        "cosine to the reference {min_cosine} < 0.9999: {result}"
    );
    assert!(
        result["norms"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| (n.as_f64().unwrap() - 1.0).abs() < 1e-4),
        "{result}"
    );
    assert_eq!(result["base64_matches"], true, "{result}");
    assert!(result["prompt_tokens"].as_u64().unwrap() > 256, "{result}");
    assert_eq!(result["model"], "minilm");
    // The repository's model and the built-in embedding model.
    assert_eq!(result["models"], json!(["all-MiniLM-L6-v2", "minilm"]));
}

#[test]
fn tritonclient_reads_metadata_and_infers_json_and_binary() {
    let s = Serving::start("", |repo| add_model(repo, "minilm", &[1], Some(CONFIGURED)));
    let key = api_key(&s);
    let script = r#"
import json, sys
import numpy as np
import onnxruntime as ort
import tritonclient.http as httpclient
url = sys.argv[1].split("://", 1)[1]
headers = {"Authorization": "Bearer " + sys.argv[2]}
client = httpclient.InferenceServerClient(url=url)
meta = client.get_model_metadata("minilm", headers=headers)
ids = np.array([[101, 7592, 2088, 102], [101, 2023, 2003, 102]], dtype=np.int64)
feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
s = ort.InferenceSession(sys.argv[3], providers=["CPUExecutionProvider"])
ref = s.run(["last_hidden_state"], feeds)[0]
diffs = {}
for binary in (False, True):
    inputs = []
    for name, value in feeds.items():
        t = httpclient.InferInput(name, list(value.shape), "INT64")
        t.set_data_from_numpy(value, binary_data=binary)
        inputs.append(t)
    outputs = [httpclient.InferRequestedOutput("last_hidden_state", binary_data=binary)]
    result = client.infer("minilm", inputs, outputs=outputs, headers=headers)
    got = result.as_numpy("last_hidden_state")
    diffs["binary" if binary else "json"] = float(np.abs(got - ref).max())
print(json.dumps({
    "live": client.is_server_live(),
    "ready": client.is_model_ready("minilm", headers=headers),
    "inputs": [i["name"] for i in meta["inputs"]],
    "diffs": diffs,
    "stats": client.get_inference_statistics("minilm", headers=headers),
    "all_stats": client.get_inference_statistics(headers=headers),
    "extensions": client.get_server_metadata(headers=headers)["extensions"],
}))
"#;
    let model = vendor().join("models/all-MiniLM-L6-v2/model.onnx");
    let result = python(script, &[&s.daemon.base, &key, model.to_str().unwrap()]);
    assert_eq!(result["live"], true, "{result}");
    assert_eq!(result["ready"], true, "{result}");
    assert_eq!(
        result["inputs"],
        json!(["input_ids", "attention_mask", "token_type_ids"])
    );
    for kind in ["json", "binary"] {
        let diff = result["diffs"][kind].as_f64().unwrap();
        assert!(
            diff < 1e-4,
            "{kind} output differs from onnxruntime by {diff}"
        );
    }
    // Triton's statistics extension, read by tritonclient: two requests of two rows each,
    // each run alone (the model does not batch dynamically).
    assert!(
        result["extensions"]
            .as_array()
            .unwrap()
            .contains(&json!("statistics")),
        "{result}"
    );
    let stats = &result["stats"]["model_stats"];
    assert_eq!(stats.as_array().map(Vec::len), Some(1), "{result}");
    let m = &stats[0];
    assert_eq!((&m["name"], &m["version"]), (&json!("minilm"), &json!("1")));
    assert_eq!(m["inference_count"], 4, "{m}");
    assert_eq!(m["execution_count"], 2, "{m}");
    let s = &m["inference_stats"];
    assert_eq!(s["success"]["count"], 2, "{m}");
    assert_eq!(s["fail"]["count"], 0, "{m}");
    assert_eq!(s["queue"]["count"], 2, "{m}");
    assert_eq!(s["compute_infer"]["count"], 2, "{m}");
    assert!(
        s["success"]["ns"].as_u64().unwrap() >= s["compute_infer"]["ns"].as_u64().unwrap(),
        "a request lasts at least its run: {m}"
    );
    assert!(m["last_inference"].as_u64().unwrap() > 0, "{m}");
    // Every served model, the built-in embedding model included.
    let names: Vec<&str> = result["all_stats"]["model_stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["all-MiniLM-L6-v2", "minilm"], "{result}");
}

#[test]
fn openai_errors_have_openai_shape() {
    let s = Serving::start("", |repo| {
        add_text_model(repo, "minilm");
        add_model(repo, "plain", &[1], None);
    });
    let resp = s
        .daemon
        .client()
        .post(s.daemon.url("/v1/embeddings"))
        .json(&json!({ "model": "minilm", "input": "x" }))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().unwrap();
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    assert_eq!(body["error"]["code"], "invalid_api_key", "{body}");

    let cases = [
        (json!({ "model": "ghost", "input": "x" }), 404, "\"ghost\""),
        (
            json!({ "model": "minilm", "input": "x", "dimensions": 128 }),
            400,
            "dimensions 128 is not supported",
        ),
        (
            json!({ "model": "minilm", "input": [[101, 102]] }),
            400,
            "token-id input is not supported",
        ),
        (
            json!({ "model": "minilm", "input": [] }),
            400,
            "must not be an empty list",
        ),
        (
            json!({ "model": "minilm", "input": [""] }),
            400,
            "must not be empty",
        ),
        (
            json!({ "model": "minilm", "input": "x", "encoding_format": "int8" }),
            400,
            "encoding_format \"int8\"",
        ),
        (
            json!({ "model": "plain", "input": "x" }),
            400,
            "declares no text task",
        ),
        (json!({ "input": "x" }), 400, "missing field `model`"),
    ];
    for (body, status, expected) in cases {
        let (got, answer) = s.post("/v1/embeddings", &s.token, Some(body));
        assert_eq!(got, status, "{answer}");
        let message = answer["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("not OpenAI's shape: {answer}"));
        assert!(
            message.contains(expected),
            "expected {expected:?} in {answer}"
        );
    }
    // The KServe side of a text model still answers plain tensor requests.
    let (status, answer) = s.post(
        "/v2/models/minilm/infer",
        &s.token,
        Some(json!({ "inputs": [] })),
    );
    assert_eq!(status, 400);
    assert!(error_text(&answer).contains("is missing"), "{answer}");
}

#[test]
fn concurrent_embedding_requests_are_batched_together() {
    let s = Serving::start("", |repo| {
        add_text_model(repo, "minilm");
        let path = repo.join("minilm/config.pbtxt");
        let mut config = std::fs::read_to_string(&path).unwrap();
        config.push_str("dynamic_batching { max_queue_delay_microseconds: 300000 }\n");
        std::fs::write(path, config).unwrap();
    });
    let sentences = [
        "The wing stalls.",
        "Libraries index documents by subject.",
        "Electrons scatter off the lattice at low temperature.",
        "Short.",
        "A longer sentence about boundary layers, pressure gradients and separation.",
        "Retrieval.",
    ];
    let alone: Vec<Value> = sentences
        .iter()
        .map(|t| {
            s.post(
                "/v1/embeddings",
                &s.token,
                Some(json!({ "model": "minilm", "input": t })),
            )
            .1
        })
        .collect();
    let server = &s;
    let together: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = sentences
            .iter()
            .map(|t| {
                scope.spawn(move || {
                    server.post(
                        "/v1/embeddings",
                        &server.token,
                        Some(json!({ "model": "minilm", "input": t })),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((status, batched), single) in together.iter().zip(&alone) {
        assert_eq!(*status, 200, "{batched}");
        let a: Vec<f32> = serde_json::from_value(batched["data"][0]["embedding"].clone()).unwrap();
        let b: Vec<f32> = serde_json::from_value(single["data"][0]["embedding"].clone()).unwrap();
        let cosine: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!(
            cosine > 0.9999,
            "batched and single embeddings differ: cosine {cosine}"
        );
        assert_eq!(batched["usage"], single["usage"]);
    }
    let text = s.metrics();
    let executions: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"nv_inference_exec_count{model="minilm",version="1"}"#)?
                .trim()
                .parse()
                .ok()
        })
        .unwrap();
    // Six requests alone ran six times; the six concurrent ones must have shared runs.
    assert!(
        executions < 12.0,
        "{executions} executions for 12 requests: concurrent requests were not batched"
    );
}
