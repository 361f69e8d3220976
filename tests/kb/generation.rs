//! `/v1/completions` and `/v1/chat/completions` with the built-in ONNX decoder, run on the real
//! stories260K model by ONNX Runtime, over HTTP.

use std::process::Command;

use serde_json::{Value, json};

use crate::common::Setup;
use crate::util::{Kb, sse, stories_expected, with_stories};

fn post(kb: &Kb, path: &str, body: Value) -> reqwest::blocking::Response {
    kb.call(reqwest::Method::POST, &kb.alice, path, Some(body))
}

fn completion(kb: &Kb, body: Value) -> Value {
    let resp = post(kb, "/v1/completions", body);
    assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    resp.json().expect("json")
}

/// The concatenated text of a streamed completion and its last chunk with a finish reason.
fn streamed_text(events: &[(String, String)], chat: bool) -> (String, String) {
    assert_eq!(events.last().map(|e| e.1.as_str()), Some("[DONE]"));
    let mut text = String::new();
    let mut finish = String::new();
    for (_, data) in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(data).expect("chunk json");
        let choices = chunk["choices"].as_array().expect("choices");
        for c in choices {
            let piece = if chat {
                c["delta"]["content"].as_str()
            } else {
                c["text"].as_str()
            };
            text.push_str(piece.unwrap_or(""));
            if let Some(f) = c["finish_reason"].as_str() {
                finish = f.to_string();
            }
        }
        assert_eq!(
            chunk["object"],
            if chat {
                "chat.completion.chunk"
            } else {
                "text_completion"
            }
        );
    }
    (text, finish)
}

#[test]
fn greedy_completion_reproduces_the_reference_text_whole_and_streamed() {
    let kb = Kb::start_with(with_stories(Setup::new()));
    let expected = stories_expected();
    let body = json!({ "model": "stories", "prompt": "", "max_tokens": 256, "temperature": 0 });
    let whole = completion(&kb, body.clone());
    assert_eq!(whole["object"], "text_completion");
    assert_eq!(whole["model"], "stories");
    assert_eq!(whole["choices"][0]["text"], expected.as_str());
    let usage = &whole["usage"];
    assert_eq!(usage["prompt_tokens"], 1, "the prompt is BOS alone");
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(1 + usage["completion_tokens"].as_u64().expect("count"))
    );

    let mut streaming = body;
    streaming["stream"] = json!(true);
    let events = sse(post(&kb, "/v1/completions", streaming));
    let (text, finish) = streamed_text(&events, false);
    assert_eq!(text, expected);
    assert_eq!(
        finish,
        whole["choices"][0]["finish_reason"]
            .as_str()
            .expect("reason")
    );
}

#[test]
fn sampling_with_a_seed_is_reproducible_and_limits_are_checked() {
    let kb = Kb::start_with(with_stories(Setup::new()));
    let sampled = |seed: u64| {
        completion(
            &kb,
            json!({ "model": "stories", "prompt": "Once upon a time", "max_tokens": 40,
                    "temperature": 0.9, "top_p": 0.95, "top_k": 40, "seed": seed }),
        )["choices"][0]["text"]
            .as_str()
            .expect("text")
            .to_string()
    };
    let a = sampled(7);
    assert!(!a.is_empty());
    assert_eq!(a, sampled(7), "the same seed gives the same text");
    assert!(
        [8, 9, 10].iter().any(|s| sampled(*s) != a),
        "other seeds give other texts"
    );

    // max_tokens ends it with "length"; a stop sequence cuts the text before it.
    let short = completion(
        &kb,
        json!({ "model": "stories", "prompt": "", "max_tokens": 5, "temperature": 0 }),
    );
    assert_eq!(short["choices"][0]["finish_reason"], "length");
    assert_eq!(short["usage"]["completion_tokens"], 5);
    let expected = stories_expected();
    let cut_at = expected
        .find(" Lily")
        .expect("the reference text names Lily");
    let stopped = completion(
        &kb,
        json!({ "model": "stories", "prompt": "", "max_tokens": 256, "temperature": 0, "stop": [" Lily"] }),
    );
    assert_eq!(stopped["choices"][0]["text"], &expected[..cut_at]);
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");

    // A prompt that does not fit the context: 422 with the numbers.
    let long = "Once upon a time there was a little girl. ".repeat(60);
    let resp = post(
        &kb,
        "/v1/completions",
        json!({ "model": "stories", "prompt": long, "max_tokens": 10 }),
    );
    assert_eq!(resp.status(), 422);
    let err: Value = resp.json().expect("json");
    assert_eq!(err["error"]["code"], "context_length_exceeded");
    let message = err["error"]["message"].as_str().expect("message");
    assert!(message.contains("512"), "{message}");

    for (body, status, fragment) in [
        (
            json!({ "model": "nope", "prompt": "x" }),
            404,
            "no generator \"nope\"",
        ),
        (
            json!({ "model": "stories", "prompt": "x", "temperature": 3 }),
            400,
            "temperature",
        ),
        (
            json!({ "model": "stories", "prompt": "x", "n": 2 }),
            400,
            "n other than 1",
        ),
        (json!({ "model": "stories", "prompt": 5 }), 400, "prompt"),
        (
            json!({ "model": "stories", "prompt": "x", "max_tokens": "ten" }),
            400,
            "malformed",
        ),
    ] {
        let resp = post(&kb, "/v1/completions", body.clone());
        assert_eq!(resp.status(), status, "{body}");
        let err: Value = resp.json().expect("json");
        let message = err["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(fragment), "{body}: {message}");
    }
}

#[test]
fn chat_completions_stream_like_openai_and_concurrent_requests_do_not_mix() {
    let kb = Kb::start_with(with_stories(Setup::new()));
    let body = json!({ "model": "stories", "temperature": 0, "max_tokens": 60,
        "messages": [{ "role": "system", "content": "Tell a story." },
                     { "role": "user", "content": [{ "type": "text", "text": "A cat" }] }] });
    let resp = post(&kb, "/v1/chat/completions", body.clone());
    assert_eq!(resp.status(), 200);
    let whole: Value = resp.json().expect("json");
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    let text = whole["choices"][0]["message"]["content"]
        .as_str()
        .expect("content")
        .to_string();
    assert!(!text.is_empty());

    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({ "include_usage": true });
    let events = sse(post(&kb, "/v1/chat/completions", streaming));
    let first: Value = serde_json::from_str(&events[0].1).expect("json");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let usage: Value = serde_json::from_str(&events[events.len() - 2].1).expect("json");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], whole["usage"]);
    let (streamed, finish) = streamed_text(
        &events[..events.len() - 2]
            .iter()
            .chain(std::iter::once(&events[events.len() - 1]))
            .cloned()
            .collect::<Vec<_>>(),
        true,
    );
    assert_eq!(streamed, text);
    assert_eq!(
        finish,
        whole["choices"][0]["finish_reason"]
            .as_str()
            .expect("reason")
    );

    // Eight requests at once, two prompts: each gets exactly what it gets alone.
    let other = json!({ "model": "stories", "prompt": "", "max_tokens": 256, "temperature": 0 });
    let expected = stories_expected();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..8)
            .map(|i| {
                let (kb, body, other) = (&kb, body.clone(), other.clone());
                s.spawn(move || {
                    if i % 2 == 0 {
                        let r: Value = post(kb, "/v1/chat/completions", body).json().expect("json");
                        (
                            true,
                            r["choices"][0]["message"]["content"]
                                .as_str()
                                .unwrap_or("")
                                .to_string(),
                        )
                    } else {
                        let r: Value = post(kb, "/v1/completions", other).json().expect("json");
                        (
                            false,
                            r["choices"][0]["text"].as_str().unwrap_or("").to_string(),
                        )
                    }
                })
            })
            .collect();
        for w in workers {
            let (chat, got) = w.join().expect("worker");
            assert_eq!(&got, if chat { &text } else { &expected });
        }
    });
}

#[test]
fn the_official_openai_sdk_works_against_the_builtin_model() {
    let kb = Kb::start_with(with_stories(Setup::new()));
    let key: Value = kb
        .call(
            reqwest::Method::POST,
            &kb.alice,
            "/api/v1/keys",
            Some(json!({ "name": "sdk" })),
        )
        .json()
        .expect("json");
    let script = r#"
import json, sys, openai
client = openai.OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0)
out = {}
chat = client.chat.completions.create(model="stories", temperature=0, max_tokens=30,
    messages=[{"role": "user", "content": "A dog"}])
out["chat"] = chat.choices[0].message.content
out["chat_finish"] = chat.choices[0].finish_reason
out["chat_usage"] = chat.usage.completion_tokens
parts = []
for chunk in client.chat.completions.create(model="stories", temperature=0, max_tokens=30, stream=True,
        messages=[{"role": "user", "content": "A dog"}]):
    if chunk.choices and chunk.choices[0].delta.content:
        parts.append(chunk.choices[0].delta.content)
out["streamed"] = "".join(parts)
done = client.completions.create(model="stories", prompt="", max_tokens=256, temperature=0)
out["completion"] = done.choices[0].text
try:
    client.chat.completions.create(model="missing", messages=[{"role": "user", "content": "x"}])
    out["unknown"] = "no error"
except openai.NotFoundError as e:
    out["unknown"] = e.body["code"] if isinstance(e.body, dict) else str(e.body)
print(json.dumps(out))
"#;
    let output = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(kb.daemon.url("/v1"))
        .arg(key["key"].as_str().expect("key"))
        .output()
        .expect("python3 with the openai package (`just deps`)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).expect("json");
    assert!(!out["chat"].as_str().unwrap_or("").is_empty(), "{out}");
    assert_eq!(out["streamed"], out["chat"]);
    assert_eq!(out["chat_usage"].as_u64().map(|n| n > 0), Some(true));
    assert_eq!(out["completion"], stories_expected().as_str());
    assert_eq!(out["unknown"], "model_not_found");
}

#[test]
fn a_builtin_model_that_cannot_open_is_reported_and_the_others_still_work() {
    let setup = with_stories(Setup::new()).with(
        "[generators.broken]\nkind = \"onnx\"\nmodel = \"/nonexistent/llm/model.onnx\"\ncontext_length = 512\n",
    );
    setup.write_config(None);
    setup.add_user("alice", "editor", "alice-password-1");
    let daemon = setup.start();
    let client = daemon.client();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let ready: Value = loop {
        let body: Value = client
            .get(daemon.url("/readyz"))
            .send()
            .expect("readyz")
            .json()
            .expect("json");
        let loaded = body["checks"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["name"] == "generators"));
        if loaded {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert_eq!(ready["status"], "not ready", "{ready}");
    let reasons = ready["reasons"].to_string();
    assert!(
        reasons.contains("broken") && reasons.contains("/nonexistent/llm/model.onnx"),
        "{reasons}"
    );

    let token = daemon.token("alice", "alice-password-1");
    let call = |model: &str| {
        client
            .post(daemon.url("/v1/completions"))
            .bearer_auth(&token)
            .json(&json!({ "model": model, "prompt": "", "max_tokens": 5, "temperature": 0 }))
            .send()
            .expect("completion")
    };
    let resp = call("broken");
    assert_eq!(resp.status(), 503);
    let err: Value = resp.json().expect("json");
    assert!(
        err["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("generator \"broken\" is not available")),
        "{err}"
    );
    assert_eq!(call("stories").status(), 200);
    let listed: Value = client
        .get(daemon.url("/api/v1/generators"))
        .bearer_auth(&token)
        .send()
        .expect("generators")
        .json()
        .expect("json");
    assert_eq!(listed[0]["name"], "broken");
    assert_eq!(listed[0]["kind"], "onnx");
    assert_eq!(listed[0]["ready"], false);
    assert_eq!(listed[1]["ready"], true);
    assert_eq!(listed[1]["context_length"], 512);
}
