//! Helpers shared by the knowledge-base tests.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use reqwest::blocking::multipart;
use serde_json::{Value, json};

use crate::common::{ADMIN_PASSWORD, Daemon, Setup};

/// `../shared`, or `SPARKBRAIN_SHARED`.
pub fn shared() -> PathBuf {
    std::env::var_os("SPARKBRAIN_SHARED").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"),
        PathBuf::from,
    )
}

/// A document of the shared data set.
pub fn doc(path: &str) -> PathBuf {
    let p = shared().join("data/docs").join(path);
    assert!(p.is_file(), "{} is missing", p.display());
    p
}

/// A daemon with an admin, two editors (alice, bob) and a viewer (carol), signed in.
pub struct Kb {
    pub setup: Setup,
    pub daemon: Daemon,
    pub admin: String,
    pub alice: String,
    pub bob: String,
    pub carol: String,
}

impl Kb {
    pub fn start() -> Kb {
        Kb::start_with(Setup::new())
    }

    pub fn start_with(setup: Setup) -> Kb {
        setup.write_config(None);
        setup.add_user("admin", "admin", ADMIN_PASSWORD);
        setup.add_user("alice", "editor", "alice-password-1");
        setup.add_user("bob", "editor", "bob-password-12");
        setup.add_user("carol", "viewer", "carol-password-1");
        let daemon = setup.start();
        daemon.wait_ready();
        Kb {
            admin: daemon.token("admin", ADMIN_PASSWORD),
            alice: daemon.token("alice", "alice-password-1"),
            bob: daemon.token("bob", "bob-password-12"),
            carol: daemon.token("carol", "carol-password-1"),
            setup,
            daemon,
        }
    }

    /// Restarts the daemon on the same data directory and signs everyone in again.
    pub fn restart(&mut self) {
        self.daemon.terminate();
        self.daemon.wait_exit(Duration::from_secs(30));
        self.restart_stopped();
    }

    /// Starts the daemon again after it stopped, and signs everyone in again.
    pub fn restart_stopped(&mut self) {
        self.daemon = self.setup.start();
        self.daemon.wait_ready();
        self.admin = self.daemon.token("admin", ADMIN_PASSWORD);
        self.alice = self.daemon.token("alice", "alice-password-1");
        self.bob = self.daemon.token("bob", "bob-password-12");
        self.carol = self.daemon.token("carol", "carol-password-1");
    }

    pub fn call(
        &self,
        method: reqwest::Method,
        token: &str,
        path: &str,
        body: Option<Value>,
    ) -> reqwest::blocking::Response {
        let mut req = self
            .daemon
            .client()
            .request(method, self.daemon.url(path))
            .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    pub fn get(&self, token: &str, path: &str) -> reqwest::blocking::Response {
        self.call(reqwest::Method::GET, token, path, None)
    }

    /// Creates a collection; panics unless 201.
    pub fn collection(&self, token: &str, body: Value) -> Value {
        let resp = self.call(
            reqwest::Method::POST,
            token,
            "/api/v1/collections",
            Some(body),
        );
        assert_eq!(resp.status(), 201, "{}", resp.text().unwrap_or_default());
        resp.json().expect("json")
    }

    /// Uploads bytes as a file.
    pub fn upload_bytes(
        &self,
        token: &str,
        collection: &str,
        filename: &str,
        bytes: Vec<u8>,
        content_type: Option<&str>,
    ) -> reqwest::blocking::Response {
        let mut part = multipart::Part::bytes(bytes).file_name(filename.to_string());
        if let Some(ct) = content_type {
            part = part.mime_str(ct).expect("mime");
        }
        self.daemon
            .client()
            .post(
                self.daemon
                    .url(&format!("/api/v1/collections/{collection}/documents")),
            )
            .bearer_auth(token)
            .multipart(multipart::Form::new().part("file", part))
            .send()
            .expect("upload")
    }

    /// Uploads a file of the shared data set; panics unless 202.
    pub fn upload(&self, token: &str, collection: &str, path: &str) -> i64 {
        let file = doc(path);
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        let resp = self.upload_bytes(
            token,
            collection,
            &name,
            std::fs::read(&file).expect("read"),
            None,
        );
        assert_eq!(resp.status(), 202, "{}", resp.text().unwrap_or_default());
        resp.json::<Value>().expect("json")["id"]
            .as_i64()
            .expect("id")
    }

    /// Waits until a document is indexed or failed (5 minutes at most) and returns it. The
    /// bound is generous because the whole test run shares two cores: a 180 KB text embedded
    /// in compact mode beside other heavy tests once took more than 2 minutes.
    pub fn settle(&self, token: &str, id: i64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let doc: Value = self
                .get(token, &format!("/api/v1/documents/{id}"))
                .json()
                .expect("json");
            if doc["status"] == "indexed" || doc["status"] == "failed" {
                return doc;
            }
            assert!(
                Instant::now() < deadline,
                "document {id} stuck: {doc}\n{}",
                self.daemon.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until a document is indexed; panics if it failed.
    pub fn indexed(&self, token: &str, id: i64) -> Value {
        let doc = self.settle(token, id);
        assert_eq!(doc["status"], "indexed", "{doc}");
        doc
    }

    pub fn search(&self, token: &str, body: Value) -> reqwest::blocking::Response {
        self.call(reqwest::Method::POST, token, "/api/v1/search", Some(body))
    }

    /// Hits of a search that must succeed.
    pub fn hits(&self, token: &str, body: Value) -> Vec<Value> {
        let resp = self.search(token, body);
        assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
        resp.json::<Value>().expect("json")["hits"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

/// A problem's status and detail.
pub fn problem(resp: reqwest::blocking::Response) -> (u16, String) {
    let status = resp.status().as_u16();
    let body: Value = resp.json().unwrap_or_else(|_| json!({}));
    (status, body["detail"].as_str().unwrap_or("").to_string())
}

/// The stories260K fixture's folder.
pub fn stories() -> PathBuf {
    let dir = shared().join("models/stories260k");
    assert!(
        dir.join("model.onnx").is_file(),
        "{} is missing",
        dir.display()
    );
    dir
}

/// The text stories260K writes greedily from BOS alone over 256 positions.
pub fn stories_expected() -> String {
    let text = std::fs::read_to_string(stories().join("expected_greedy_256.txt")).expect("read");
    text.strip_suffix('\n').unwrap_or(&text).to_string()
}

/// A setup whose daemon runs stories260K as the built-in generator `stories` (the fixture has
/// no config.json, so the context length is given).
pub fn with_stories(setup: Setup) -> Setup {
    setup.with(&format!(
        "[generators.stories]\nkind = \"onnx\"\nmodel = {:?}\ncontext_length = 512\n",
        stories().join("model.onnx").display().to_string()
    ))
}

/// Server-sent events of a response: (event name, data) pairs, in order.
pub fn sse(resp: reqwest::blocking::Response) -> Vec<(String, String)> {
    assert_eq!(resp.status(), 200);
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let text = resp.text().expect("body");
    let mut events = Vec::new();
    let (mut name, mut data) = (String::new(), Vec::<String>::new());
    for line in text.lines() {
        if line.is_empty() {
            if !data.is_empty() {
                events.push((std::mem::take(&mut name), data.join("\n")));
                data.clear();
            }
            name.clear();
        } else if let Some(n) = line.strip_prefix("event:") {
            name = n.trim().to_string();
        } else if let Some(d) = line.strip_prefix("data:") {
            data.push(d.strip_prefix(' ').unwrap_or(d).to_string());
        }
    }
    if !data.is_empty() {
        events.push((name, data.join("\n")));
    }
    events
}
