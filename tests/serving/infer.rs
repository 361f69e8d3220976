//! KServe v2 inference: JSON and binary tensors against the real MiniLM model, checked against
//! ONNX Runtime run directly from Python on the same model, and every malformed class refused.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::vendor;
use crate::repository::{CONFIGURED, Serving, add_model, error_text};

/// Two token sequences ([CLS] … [SEP]) of length 5, padded form not needed.
const IDS: [[i64; 5]; 2] = [[101, 7592, 2088, 999, 102], [101, 2023, 2003, 1037, 102]];

fn inputs_json() -> Value {
    let ids: Vec<i64> = IDS.iter().flatten().copied().collect();
    json!([
        { "name": "input_ids", "shape": [2, 5], "datatype": "INT64", "data": ids },
        { "name": "attention_mask", "shape": [2, 5], "datatype": "INT64", "data": vec![1; 10] },
        { "name": "token_type_ids", "shape": [2, 5], "datatype": "INT64", "data": vec![0; 10] },
    ])
}

/// last_hidden_state for IDS, from onnxruntime in Python on the vendored model.
fn python_reference() -> Vec<f32> {
    let script = r#"
import json, sys
import numpy as np
import onnxruntime as ort
ids = np.array(json.load(sys.stdin), dtype=np.int64)
so = ort.SessionOptions()
so.intra_op_num_threads = 1
s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
out = s.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)})[0]
print(json.dumps(out.reshape(-1).tolist()))
"#;
    let model = vendor().join("models/all-MiniLM-L6-v2/model.onnx");
    let mut child = Command::new("python3")
        .args(["-c", script])
        .arg(&model)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (install the test dependencies with `just deps`)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(json!(IDS).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("reference json")
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn json_and_binary_inference_match_onnx_runtime() {
    let s = Serving::start("", |repo| add_model(repo, "minilm", &[1], Some(CONFIGURED)));
    let reference = python_reference();
    assert_eq!(reference.len(), 2 * 5 * 384);

    // JSON in, JSON out.
    let (status, body) = s.post(
        "/v2/models/minilm/infer",
        &s.token,
        Some(json!({ "id": "req-1", "inputs": inputs_json() })),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], "req-1");
    assert_eq!(body["model_name"], "minilm");
    assert_eq!(body["model_version"], "1");
    let out = &body["outputs"][0];
    assert_eq!(out["name"], "last_hidden_state");
    assert_eq!(out["datatype"], "FP32");
    assert_eq!(out["shape"], json!([2, 5, 384]));
    let json_values: Vec<f32> = serde_json::from_value(out["data"].clone()).unwrap();
    let diff = max_abs_diff(&json_values, &reference);
    assert!(
        diff < 1e-4,
        "JSON output differs from onnxruntime by {diff}"
    );

    // Binary in (KServe binary tensor extension), binary out.
    let ids: Vec<u8> = IDS.iter().flatten().flat_map(|v| v.to_le_bytes()).collect();
    let ones: Vec<u8> = [1i64; 10].iter().flat_map(|v| v.to_le_bytes()).collect();
    let zeros: Vec<u8> = [0i64; 10].iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = json!({
        "inputs": [
            { "name": "input_ids", "shape": [2, 5], "datatype": "INT64", "parameters": { "binary_data_size": 80 } },
            { "name": "attention_mask", "shape": [2, 5], "datatype": "INT64", "parameters": { "binary_data_size": 80 } },
            { "name": "token_type_ids", "shape": [2, 5], "datatype": "INT64", "parameters": { "binary_data_size": 80 } },
        ],
        "outputs": [ { "name": "last_hidden_state", "parameters": { "binary_data": true } } ],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(&ids);
    body.extend(&ones);
    body.extend(&zeros);
    let resp = s
        .daemon
        .client()
        .post(s.daemon.url("/v2/models/minilm/infer"))
        .bearer_auth(&s.token)
        .header("Inference-Header-Content-Length", header.len())
        .header("Content-Type", "application/octet-stream")
        .body(body)
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let header_len: usize = resp.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let bytes = resp.bytes().unwrap();
    let head: Value = serde_json::from_slice(&bytes[..header_len]).unwrap();
    assert_eq!(
        head["outputs"][0]["parameters"]["binary_data_size"],
        2 * 5 * 384 * 4,
        "{head}"
    );
    let binary_values: Vec<f32> = bytes[header_len..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    assert_eq!(binary_values, json_values, "binary and JSON outputs differ");
}

#[test]
fn malformed_requests_are_refused_with_the_tensor_named() {
    let s = Serving::start("max_request_bytes = 4096", |repo| {
        add_model(repo, "minilm", &[1], Some(CONFIGURED))
    });
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = inputs_json();
        f(&mut v);
        json!({ "inputs": v })
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            with(&|v| v[0]["datatype"] = json!("FP32")),
            "input \"input_ids\": datatype FP32, but the model takes INT64",
        ),
        (
            with(&|v| v[0]["shape"] = json!([2, 4])),
            "input \"input_ids\": shape [2, 4] holds 8 elements, but 10 were sent",
        ),
        (
            with(&|v| v[0]["shape"] = json!([10])),
            "input \"input_ids\": shape [10] does not fit [-1, -1]",
        ),
        (
            with(&|v| v[0]["shape"] = json!([2, -5])),
            "input \"input_ids\": shape [2, -5] has a negative dimension",
        ),
        (
            with(&|v| v[0]["name"] = json!("ids")),
            "unknown input \"ids\"",
        ),
        (
            with(&|v| v[0]["datatype"] = json!("INT65")),
            "input \"input_ids\": unknown datatype \"INT65\"",
        ),
        (
            with(&|v| v[0]["data"] = json!([1, 2, "x", 4, 5, 6, 7, 8, 9, 10])),
            "input \"input_ids\": element 2 is not an integer",
        ),
        (
            with(&|v| {
                v.as_array_mut().unwrap().remove(2);
            }),
            "input \"token_type_ids\" is missing",
        ),
        (
            with(&|v| v[1]["shape"] = json!([1, 10])),
            "input \"attention_mask\": batch of 1, but another input has a batch of 2",
        ),
        (
            json!({ "inputs": inputs_json(), "outputs": [ { "name": "pooled" } ] }),
            "unknown output \"pooled\" requested",
        ),
        (
            json!({ "inputs": inputs_json(), "extra": 1 }),
            "unknown field `extra`",
        ),
    ];
    for (body, expected) in cases {
        let (status, answer) = s.post("/v2/models/minilm/infer", &s.token, Some(body));
        assert_eq!(status, 400, "{answer}");
        assert!(
            error_text(&answer).contains(expected),
            "expected {expected:?} in {answer}"
        );
    }
    // Batch larger than max_batch_size (32).
    let inputs = json!([{ "name": "input_ids", "shape": [33, 1], "datatype": "INT64", "data": vec![101; 33] }]);
    let (status, answer) = s.post(
        "/v2/models/minilm/infer",
        &s.token,
        Some(json!({ "inputs": inputs })),
    );
    assert_eq!(status, 400);
    assert!(
        error_text(&answer).contains("batch of 33 exceeds max_batch_size 32"),
        "{answer}"
    );

    let raw = |headers: &[(&str, String)], body: Vec<u8>| {
        let mut req = s
            .daemon
            .client()
            .post(s.daemon.url("/v2/models/minilm/infer"))
            .bearer_auth(&s.token)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = req.send().unwrap();
        let status = resp.status().as_u16();
        (status, resp.json::<Value>().unwrap_or(Value::Null))
    };
    let (status, answer) = raw(&[], b"{not json".to_vec());
    assert_eq!(status, 400);
    assert!(
        error_text(&answer).contains("malformed inference request"),
        "{answer}"
    );
    let (status, answer) = raw(
        &[("Inference-Header-Content-Length", "999".into())],
        b"{}".to_vec(),
    );
    assert_eq!(status, 400);
    assert!(error_text(&answer).contains("only 2 bytes"), "{answer}");
    let header = json!({ "inputs": [ { "name": "input_ids", "shape": [1, 1], "datatype": "INT64", "parameters": { "binary_data_size": 8 } } ] }).to_string();
    let mut body = header.clone().into_bytes();
    body.extend([0u8; 12]);
    let (status, answer) = raw(
        &[("Inference-Header-Content-Length", header.len().to_string())],
        body,
    );
    assert_eq!(status, 400);
    assert!(
        error_text(&answer).contains("4 bytes of binary data are not claimed"),
        "{answer}"
    );
    let (status, answer) = raw(&[], vec![b' '; 8192]);
    assert_eq!(status, 413);
    assert!(
        error_text(&answer).contains("serving.max_request_bytes"),
        "{answer}"
    );

    // After all of that, the model still answers.
    let (status, body) = s.post(
        "/v2/models/minilm/infer",
        &s.token,
        Some(json!({ "inputs": inputs_json() })),
    );
    assert_eq!(status, 200, "{body}");
}

/// The value of one series in Prometheus text, found by its name and exact label set.
fn series(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
}

#[test]
fn triton_metrics_count_requests_rows_and_the_provider() {
    let s = Serving::start("", |repo| add_model(repo, "minilm", &[1], Some(CONFIGURED)));
    let ok = json!({ "inputs": inputs_json() });
    for _ in 0..3 {
        assert_eq!(
            s.post("/v2/models/minilm/infer", &s.token, Some(ok.clone()))
                .0,
            200
        );
    }
    let mut bad = inputs_json();
    bad[0]["datatype"] = json!("FP32");
    assert_eq!(
        s.post(
            "/v2/models/minilm/infer",
            &s.token,
            Some(json!({ "inputs": bad }))
        )
        .0,
        400
    );
    let text = s.metrics();
    let labels = r#"{model="minilm",version="1"}"#;
    assert_eq!(
        series(&text, &format!("nv_inference_request_success{labels}")),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        series(&text, &format!("nv_inference_request_failure{labels}")),
        Some(1.0),
        "{text}"
    );
    // Three requests of a batch of two.
    assert_eq!(
        series(&text, &format!("nv_inference_count{labels}")),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        series(&text, &format!("nv_inference_exec_count{labels}")),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        series(
            &text,
            &format!("nv_inference_pending_request_count{labels}")
        ),
        Some(0.0),
        "{text}"
    );
    let compute = series(
        &text,
        &format!("nv_inference_compute_infer_duration_us{labels}"),
    )
    .unwrap();
    let request = series(&text, &format!("nv_inference_request_duration_us{labels}")).unwrap();
    assert!(
        compute > 0.0 && request >= compute,
        "compute {compute} request {request}"
    );
    assert_eq!(
        series(
            &text,
            r#"sparkbrain_model_instance_info{model="minilm",provider="CPUExecutionProvider",version="1"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

#[test]
fn instance_groups_serve_concurrent_requests_alike() {
    let config = format!("{CONFIGURED}\ninstance_group [ {{ count: 2, kind: KIND_CPU }} ]\n");
    let s = Serving::start("", |repo| add_model(repo, "minilm", &[1], Some(&config)));
    let (status, config) = s.get("/v2/models/minilm/config");
    assert_eq!(status, 200, "{config}");
    assert_eq!(config["instance_count"], 2, "{config}");
    assert_eq!(config["execution_provider"], "CPUExecutionProvider");
    let body = json!({ "inputs": inputs_json() });
    let outputs: Vec<Value> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                scope.spawn(|| s.post("/v2/models/minilm/infer", &s.token, Some(body.clone())))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                let (status, answer) = h.join().unwrap();
                assert_eq!(status, 200, "{answer}");
                answer["outputs"][0]["data"].clone()
            })
            .collect()
    });
    assert!(
        outputs.windows(2).all(|w| w[0] == w[1]),
        "instances disagree"
    );
}

#[test]
fn response_cache_answers_repeats_without_running_the_model() {
    let cached = format!("{CONFIGURED}\nresponse_cache {{ enable: true }}\n");
    let s = Serving::start("", |repo| {
        add_model(repo, "minilm", &[1], Some(&cached));
        add_model(
            repo,
            "uncached",
            &[1],
            Some(&CONFIGURED.replace("\"minilm\"", "\"uncached\"")),
        );
    });
    let body = json!({ "inputs": inputs_json() });
    let first = s.post("/v2/models/minilm/infer", &s.token, Some(body.clone()));
    assert_eq!(first.0, 200);
    for _ in 0..2 {
        let again = s.post("/v2/models/minilm/infer", &s.token, Some(body.clone()));
        assert_eq!(
            again.1["outputs"], first.1["outputs"],
            "a cached answer must equal the computed one"
        );
    }
    let mut other = inputs_json();
    other[0]["data"][1] = json!(2000);
    assert_eq!(
        s.post(
            "/v2/models/minilm/infer",
            &s.token,
            Some(json!({ "inputs": other }))
        )
        .0,
        200
    );
    for _ in 0..2 {
        assert_eq!(
            s.post("/v2/models/uncached/infer", &s.token, Some(body.clone()))
                .0,
            200
        );
    }
    let text = s.metrics();
    let labels = r#"{model="minilm",version="1"}"#;
    assert_eq!(
        series(&text, &format!("nv_cache_num_hits_per_model{labels}")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        series(&text, &format!("nv_cache_num_misses_per_model{labels}")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        series(&text, &format!("nv_inference_exec_count{labels}")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        series(&text, &format!("nv_inference_request_success{labels}")),
        Some(4.0),
        "{text}"
    );
    let uncached = r#"{model="uncached",version="1"}"#;
    assert_eq!(
        series(&text, &format!("nv_inference_exec_count{uncached}")),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        series(&text, &format!("nv_cache_num_hits_per_model{uncached}")),
        None,
        "{text}"
    );
}

#[test]
fn dynamic_batching_merges_concurrent_requests_and_bounds_its_queue() {
    let batching = format!(
        "{CONFIGURED}\ndynamic_batching {{ max_queue_delay_microseconds: 400000 default_queue_policy {{ max_queue_size: 3 }} }}\n"
    );
    let s = Serving::start("", |repo| {
        add_model(
            repo,
            "batched",
            &[1],
            Some(&batching.replace("\"minilm\"", "\"batched\"")),
        );
        add_model(repo, "minilm", &[1], Some(CONFIGURED));
    });
    let body = json!({ "inputs": inputs_json() });
    let (status, single) = s.post("/v2/models/minilm/infer", &s.token, Some(body.clone()));
    assert_eq!(status, 200);
    let answers: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| s.post("/v2/models/batched/infer", &s.token, Some(body.clone())))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ok: Vec<&Value> = answers
        .iter()
        .filter(|(st, _)| *st == 200)
        .map(|(_, b)| b)
        .collect();
    let refused: Vec<&Value> = answers
        .iter()
        .filter(|(st, _)| *st == 429)
        .map(|(_, b)| b)
        .collect();
    assert_eq!(ok.len() + refused.len(), 8, "{answers:?}");
    assert!(
        !refused.is_empty(),
        "eight requests at once must overflow a queue of three"
    );
    assert!(
        error_text(refused[0]).contains("the queue of model \"batched\" is full"),
        "{:?}",
        refused[0]
    );
    // Each batched request gets exactly its own rows, equal to running it alone.
    for b in &ok {
        assert_eq!(b["outputs"][0]["shape"], json!([2, 5, 384]));
        let got: Vec<f32> = serde_json::from_value(b["outputs"][0]["data"].clone()).unwrap();
        let want: Vec<f32> = serde_json::from_value(single["outputs"][0]["data"].clone()).unwrap();
        assert!(max_abs_diff(&got, &want) < 1e-4);
    }
    let text = s.metrics();
    let labels = r#"{model="batched",version="1"}"#;
    let success = series(&text, &format!("nv_inference_request_success{labels}")).unwrap();
    let executions = series(&text, &format!("nv_inference_exec_count{labels}")).unwrap();
    assert_eq!(success, ok.len() as f64, "{text}");
    assert!(
        executions < success,
        "{executions} executions for {success} requests: nothing was batched"
    );
}

/// A batching model that holds each request in its queue for up to `delay_us` waiting for a
/// batch of 32 to fill: requests stay in flight long enough to swap versions under them.
fn slow_batching(name: &str, delay_us: u64, queue_policy: &str) -> String {
    format!(
        "{}\ndynamic_batching {{ max_queue_delay_microseconds: {delay_us} {queue_policy} }}\n",
        CONFIGURED.replace("\"minilm\"", &format!("{name:?}"))
    )
}

#[test]
fn loading_a_new_version_or_unloading_never_drops_requests_in_flight() {
    let s = Serving::start(
        "control_mode = \"explicit\"\nstartup_models = [\"swap\"]",
        |repo| {
            add_model(
                repo,
                "swap",
                &[1],
                Some(&slow_batching("swap", 1_500_000, "")),
            )
        },
    );
    let body = json!({ "inputs": inputs_json() });
    let infer = || s.post("/v2/models/swap/infer", &s.token, Some(body.clone()));
    let in_flight = |change: &dyn Fn()| -> Vec<(u16, Value)> {
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4).map(|_| scope.spawn(infer)).collect();
            // The four wait in version 1's queue for a batch that will not fill.
            std::thread::sleep(Duration::from_millis(400));
            change();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        })
    };

    // Version 2 appears and is loaded while four requests wait on version 1.
    let answers = in_flight(&|| {
        add_model(&s.setup.dir.path().join("repo"), "swap", &[2], None);
        let (status, body) = s.post("/v2/repository/models/swap/load", &s.token, None);
        assert_eq!(status, 200, "{body}");
        assert_eq!(s.get("/v2/models/swap").1["versions"], json!(["2"]));
    });
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(answer["model_version"], "1", "{answer}");
        assert_eq!(answer["outputs"][0]["shape"], json!([2, 5, 384]));
    }
    assert_eq!(infer().1["model_version"], "2");

    // Unloaded while four requests wait: they are still answered, later ones are not.
    let answers = in_flight(&|| {
        let (status, body) = s.post("/v2/repository/models/swap/unload", &s.token, None);
        assert_eq!(status, 200, "{body}");
    });
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        assert_eq!(answer["model_version"], "2", "{answer}");
    }
    assert_eq!(infer().0, 404);
}

#[test]
fn the_queue_policy_timeout_refuses_requests_that_wait_too_long() {
    let s = Serving::start("", |repo| {
        add_model(
            repo,
            "patient",
            &[1],
            Some(&slow_batching(
                "patient",
                800_000,
                "default_queue_policy { allow_timeout_override: true }",
            )),
        );
        add_model(
            repo,
            "strict",
            &[1],
            Some(&slow_batching("strict", 800_000, "")),
        );
    });
    let inputs = inputs_json();
    // The request allows 100 ms in the queue; the batch waits 800 ms to fill.
    let started = Instant::now();
    let (status, body) = s.post(
        "/v2/models/patient/infer",
        &s.token,
        Some(json!({ "inputs": inputs, "parameters": { "timeout": 100_000 } })),
    );
    assert_eq!(status, 503, "{body}");
    assert!(error_text(&body).contains("timeout of 100000 µs"), "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    // Without a timeout the request is served once the batch delay runs out.
    let (status, body) = s.post(
        "/v2/models/patient/infer",
        &s.token,
        Some(json!({ "inputs": inputs })),
    );
    assert_eq!(status, 200, "{body}");
    // A model that does not allow overrides ignores the request's timeout.
    let (status, body) = s.post(
        "/v2/models/strict/infer",
        &s.token,
        Some(json!({ "inputs": inputs, "parameters": { "timeout": 100_000 } })),
    );
    assert_eq!(status, 200, "{body}");
    // A timeout that is not a number of microseconds is refused, naming the parameter.
    let (status, body) = s.post(
        "/v2/models/patient/infer",
        &s.token,
        Some(json!({ "inputs": inputs, "parameters": { "timeout": "soon" } })),
    );
    assert_eq!(status, 400, "{body}");
    assert!(error_text(&body).contains("\"timeout\""), "{body}");
}

#[test]
fn a_request_whose_client_hung_up_is_not_run() {
    let s = Serving::start("", |repo| {
        add_model(
            repo,
            "slow",
            &[1],
            Some(&slow_batching("slow", 1_000_000, "")),
        );
    });
    let body = json!({ "inputs": inputs_json() });
    // The client gives up after 200 ms; the batch would have waited a second to fill.
    let impatient = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let gave_up = impatient
        .post(s.daemon.url("/v2/models/slow/infer"))
        .bearer_auth(&s.token)
        .json(&body)
        .send();
    assert!(
        gave_up.is_err(),
        "the answer cannot come before the batch delay"
    );
    std::thread::sleep(Duration::from_millis(1300));
    let labels = r#"{model="slow",version="1"}"#;
    let text = s.metrics();
    assert_eq!(
        series(
            &text,
            &format!("nv_inference_pending_request_count{labels}")
        ),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        series(&text, &format!("nv_inference_exec_count{labels}")).unwrap_or(0.0),
        0.0,
        "an abandoned request must not be run: {text}"
    );
    // The model still serves.
    let (status, answer) = s.post("/v2/models/slow/infer", &s.token, Some(body));
    assert_eq!(status, 200, "{answer}");
}
