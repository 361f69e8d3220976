//! Helpers shared by the api tests: a daemon with an admin, requests, problem checks.

use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use serde_json::Value;

use crate::common::{ADMIN_PASSWORD, Daemon, Setup};

/// A running daemon with an `admin` user (password [`ADMIN_PASSWORD`]); keeps its temp dir alive.
pub struct Env {
    pub daemon: Daemon,
    pub setup: Setup,
    pub http: Client,
}

impl Env {
    /// Writes the config, creates `admin` with the CLI and starts the daemon.
    pub fn start(setup: Setup) -> Env {
        setup.write_config(None);
        setup.add_user("admin", "admin", ADMIN_PASSWORD);
        let daemon = setup.start();
        let http = daemon.client();
        Env {
            daemon,
            setup,
            http,
        }
    }

    /// A daemon with the default settings.
    pub fn default_start() -> Env {
        Env::start(Setup::new())
    }

    pub fn url(&self, path: &str) -> String {
        self.daemon.url(path)
    }

    /// An access token of `admin`.
    pub fn admin_token(&self) -> String {
        self.daemon.token("admin", ADMIN_PASSWORD)
    }

    pub fn get(&self, path: &str, token: &str) -> Response {
        self.send(self.http.get(self.url(path)), token)
    }

    pub fn delete(&self, path: &str, token: &str) -> Response {
        self.send(self.http.delete(self.url(path)), token)
    }

    pub fn post_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.send(self.http.post(self.url(path)).json(body), token)
    }

    pub fn patch_json(&self, path: &str, token: &str, body: &Value) -> Response {
        self.send(self.http.patch(self.url(path)).json(body), token)
    }

    pub fn put(&self, path: &str, token: &str) -> Response {
        self.send(self.http.put(self.url(path)), token)
    }

    fn send(&self, req: RequestBuilder, token: &str) -> Response {
        let req = if token.is_empty() {
            req
        } else {
            req.bearer_auth(token)
        };
        req.send().expect("request")
    }

    /// A password sign-in; the raw response (any status).
    pub fn try_login(&self, user: &str, password: &str) -> Response {
        self.http
            .post(self.url("/api/v1/auth/token"))
            .form(&[("username", user), ("password", password)])
            .send()
            .expect("token request")
    }

    /// Creates a user through the admin API and checks the 201.
    pub fn create_user(&self, admin_token: &str, name: &str, password: &str, role: &str) -> Value {
        let resp = self.post_json(
            "/api/v1/users",
            admin_token,
            &serde_json::json!({ "name": name, "password": password, "role": role }),
        );
        assert_eq!(resp.status(), 201, "creating {name}: {:?}", resp.text());
        resp.json().expect("user json")
    }

    /// The whole audit log as the admin sees it (newest first).
    pub fn audit(&self, admin_token: &str) -> Vec<Value> {
        let resp = self.get("/api/v1/audit?limit=1000", admin_token);
        assert_eq!(resp.status(), 200);
        resp.json().expect("audit json")
    }
}

/// Checks that `resp` is an RFC 9457 problem with `status`, and returns its body.
pub fn problem(resp: Response, status: u16) -> Value {
    let got = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let text = resp.text().expect("body");
    assert_eq!(got, status, "unexpected status; body: {text}");
    assert!(
        ctype.starts_with("application/problem+json"),
        "content type {ctype:?} is not problem+json; body: {text}"
    );
    let body: Value = serde_json::from_str(&text).expect("problem body is JSON");
    assert_eq!(body["status"], status, "status field of {body}");
    let code = body["code"].as_str().expect("code is a string");
    assert!(!code.is_empty(), "empty code in {body}");
    assert_eq!(
        body["type"].as_str().expect("type is a string"),
        format!("urn:sparkbrain:problem:{code}"),
        "type of {body}"
    );
    assert!(
        !body["title"].as_str().expect("title").is_empty(),
        "empty title in {body}"
    );
    assert!(
        !body["detail"].as_str().expect("detail").is_empty(),
        "empty detail in {body}"
    );
    body
}

/// Checks a 401 problem and its `WWW-Authenticate` challenge; returns the body.
/// `error` is the RFC 6750 error code expected in the challenge, if any.
pub fn unauthorized(resp: Response, error: Option<&str>) -> Value {
    let challenge = resp
        .headers()
        .get(WWW_AUTHENTICATE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = problem(resp, 401);
    let challenge = challenge.unwrap_or_else(|| panic!("401 without WWW-Authenticate: {body}"));
    assert!(
        challenge.starts_with("Bearer realm=\"sparkbrain\""),
        "challenge {challenge:?}"
    );
    match error {
        Some(e) => assert!(
            challenge.contains(&format!("error=\"{e}\"")),
            "challenge {challenge:?} lacks error={e}"
        ),
        None => assert!(
            !challenge.contains("error="),
            "challenge {challenge:?} should carry no error"
        ),
    }
    body
}

/// The `detail` of a problem body, lower-cased.
pub fn detail(body: &Value) -> String {
    body["detail"].as_str().unwrap_or_default().to_lowercase()
}

/// A field of a JSON object as a string.
pub fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string in {v}"))
}

/// Minimal base64url (no padding) for editing JWTs.
pub mod b64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

    pub fn encode(data: &[u8]) -> String {
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    pub fn decode(text: &str) -> Vec<u8> {
        let mut bits = 0u32;
        let mut nbits = 0;
        let mut out = Vec::new();
        for c in text.bytes() {
            let v = ALPHABET
                .iter()
                .position(|&a| a == c)
                .expect("base64url character") as u32;
            bits = (bits << 6) | v;
            nbits += 6;
            if nbits >= 8 {
                nbits -= 8;
                out.push((bits >> nbits) as u8);
                bits &= (1 << nbits) - 1;
            }
        }
        out
    }

    #[test]
    fn round_trip() {
        for text in ["", "a", "ab", "abc", "abcd", "{\"sub\":\"1\"}"] {
            assert_eq!(decode(&encode(text.as_bytes())), text.as_bytes());
        }
        assert_eq!(encode(b"{\"a\":1}"), "eyJhIjoxfQ");
    }
}
