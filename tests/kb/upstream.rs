//! Upstream generators: a second real sparkbrain process serving stories260K is the
//! OpenAI-compatible upstream, over real HTTP; and upstreams that are down, silent or talking
//! nonsense (small loopback servers in this test) each give a clear error within the timeout.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Setup, free_port};
use crate::util::{Kb, sse, with_stories};

/// A loopback server that accepts connections, reads the request, and then either never
/// answers (`reply` None) or sends `reply` and closes.
fn fake_upstream(reply: Option<&'static str>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 8192];
            let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
            let _ = stream.read(&mut buf);
            match reply {
                Some(r) => {
                    let _ = stream.write_all(r.as_bytes());
                }
                None => held.push(stream),
            }
        }
    });
    port
}

#[test]
fn an_upstream_sparkbrain_generates_and_broken_upstreams_fail_clearly() {
    let upstream = Kb::start_with(with_stories(Setup::new()));
    let key: Value = upstream
        .call(
            reqwest::Method::POST,
            &upstream.alice,
            "/api/v1/keys",
            Some(json!({ "name": "upstream" })),
        )
        .json()
        .expect("json");
    let key = key["key"].as_str().expect("key").to_string();

    let down = free_port();
    let silent = fake_upstream(None);
    let garbage = fake_upstream(Some(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 12\r\n\r\ndata: hello\n",
    ));
    let config = format!(
        "[answers]\ndefault_generator = \"big\"\n\
         [generators.big]\nkind = \"upstream\"\nbase_url = {base:?}\nmodel = \"stories\"\napi_key = {key:?}\ntimeout_seconds = 10\n\
         [generators.badkey]\nkind = \"upstream\"\nbase_url = {base:?}\nmodel = \"stories\"\napi_key = \"sk-wrong\"\n\
         [generators.down]\nkind = \"upstream\"\nbase_url = \"http://127.0.0.1:{down}/v1\"\nmodel = \"m\"\n\
         [generators.silent]\nkind = \"upstream\"\nbase_url = \"http://127.0.0.1:{silent}/v1\"\nmodel = \"m\"\ntimeout_seconds = 2\n\
         [generators.garbage]\nkind = \"upstream\"\nbase_url = \"http://127.0.0.1:{garbage}/v1\"\nmodel = \"m\"\n",
        base = upstream.daemon.url("/v1"),
    );
    let kb = Kb::start_with(Setup::new().with(&config));

    let body = |model: &str| {
        json!({ "model": model, "temperature": 0, "max_tokens": 40,
                "messages": [{ "role": "user", "content": "A frog" }] })
    };
    let direct: Value = upstream
        .call(
            reqwest::Method::POST,
            &upstream.alice,
            "/v1/chat/completions",
            Some(body("stories")),
        )
        .json()
        .expect("json");
    let resp = kb.call(
        reqwest::Method::POST,
        &kb.alice,
        "/v1/chat/completions",
        Some(body("big")),
    );
    assert_eq!(resp.status(), 200);
    let relayed: Value = resp.json().expect("json");
    assert_eq!(relayed["model"], "big");
    let text = direct["choices"][0]["message"]["content"]
        .as_str()
        .expect("text");
    assert!(!text.is_empty());
    assert_eq!(relayed["choices"][0]["message"]["content"], text);
    assert_eq!(
        relayed["usage"]["completion_tokens"],
        direct["usage"]["completion_tokens"]
    );

    let mut streaming = body("big");
    streaming["stream"] = json!(true);
    let events = sse(kb.call(
        reqwest::Method::POST,
        &kb.alice,
        "/v1/chat/completions",
        Some(streaming),
    ));
    let streamed: String = events
        .iter()
        .filter(|(_, d)| d != "[DONE]")
        .filter_map(|(_, d)| {
            serde_json::from_str::<Value>(d).ok()?["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    assert_eq!(streamed, text);

    // /api/v1/ask with the default generator, the upstream.
    kb.collection(&kb.alice, json!({ "name": "notes" }));
    let resp = kb.upload_bytes(
        &kb.alice,
        "notes",
        "frog.txt",
        b"Frogs live near ponds and eat flies.".to_vec(),
        None,
    );
    let id = resp.json::<Value>().expect("json")["id"]
        .as_i64()
        .expect("id");
    kb.indexed(&kb.alice, id);
    let a: Value = kb
        .call(
            reqwest::Method::POST,
            &kb.alice,
            "/api/v1/ask",
            Some(json!({ "question": "What do frogs eat?", "max_tokens": 20 })),
        )
        .json()
        .expect("json");
    assert_eq!(a["model"], "big", "{a}");
    assert_eq!(a["citations"][0]["filename"], "frog.txt");
    assert!(!a["answer"].as_str().unwrap_or("").is_empty());

    for (model, status, fragment, within) in [
        ("badkey", 502, "check the generator's api_key", 5),
        ("down", 502, "cannot reach the upstream", 5),
        ("silent", 504, "did not answer within 2 s", 6),
        ("garbage", 502, "not an OpenAI event stream", 5),
    ] {
        let started = Instant::now();
        let resp = kb.call(
            reqwest::Method::POST,
            &kb.alice,
            "/v1/chat/completions",
            Some(body(model)),
        );
        assert_eq!(resp.status(), status, "{model}");
        let err: Value = resp.json().expect("json");
        let message = err["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(fragment), "{model}: {message}");
        assert!(
            started.elapsed() < Duration::from_secs(within),
            "{model} took {:?}",
            started.elapsed()
        );
        // The same through /api/v1/ask, as problem+json.
        let resp = kb.call(
            reqwest::Method::POST,
            &kb.alice,
            "/api/v1/ask",
            Some(json!({ "question": "frogs", "model": model })),
        );
        assert_eq!(resp.status(), status, "{model}");
    }
    let generators: Value = kb
        .get(&kb.alice, "/api/v1/generators")
        .json()
        .expect("json");
    let names: Vec<&str> = generators
        .as_array()
        .expect("list")
        .iter()
        .map(|g| g["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["badkey", "big", "down", "garbage", "silent"]);
    assert_eq!(generators[1]["default"], true);
    assert_eq!(generators[1]["kind"], "upstream");
}
