//! The web console over HTTP: its embedded files with their headers and encodings, and its
//! cookie session (sign in, refresh with rotation, sign out, and what a cross-site request or a
//! stolen page script cannot do). The browser tests drive the pages themselves.

use reqwest::header::{
    ACCEPT_ENCODING, CACHE_CONTROL, CONTENT_ENCODING, CONTENT_SECURITY_POLICY, CONTENT_TYPE,
    COOKIE, SET_COOKIE,
};
use serde_json::Value;

use crate::common::ADMIN_PASSWORD;
use crate::util::{Env, detail, problem};

/// The `sparkbrain_session=…` pair of a response's Set-Cookie, and the whole header.
fn session_cookie(resp: &reqwest::blocking::Response) -> (String, String) {
    let header = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("sparkbrain_session="))
        .unwrap_or_else(|| panic!("no session cookie in {:?}", resp.headers()))
        .to_string();
    let pair = header.split(';').next().unwrap_or_default().to_string();
    (pair, header)
}

fn sign_in(env: &Env, password: &str) -> reqwest::blocking::Response {
    env.http
        .post(env.url("/api/v1/auth/session"))
        .form(&[("username", "admin"), ("password", password)])
        .send()
        .unwrap()
}

#[test]
fn the_page_and_its_files_are_served_compressed_with_strict_headers() {
    let env = Env::default_start();
    // No credentials needed to load the console itself.
    let page = env
        .http
        .get(env.url("/"))
        .header(ACCEPT_ENCODING, "identity")
        .send()
        .unwrap();
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers[CONTENT_TYPE], "text/html; charset=utf-8");
    assert_eq!(headers[CACHE_CONTROL], "no-cache");
    let csp = headers[CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert!(headers.get(CONTENT_ENCODING).is_none());
    let html = page.text().unwrap();
    // Every script and style the page names is served, and nothing is fetched from elsewhere.
    let names: Vec<String> = ["src=\"", "href=\""]
        .iter()
        .flat_map(|attr| html.split(attr).skip(1))
        .filter_map(|s| s.split('"').next())
        .map(str::to_string)
        .collect();
    assert!(!names.is_empty(), "{html}");
    for name in &names {
        assert!(name.starts_with("/console/"), "{name} is not the daemon's");
        for (accept, encoding) in [
            ("br, gzip", Some("br")),
            ("gzip", Some("gzip")),
            ("identity", None),
        ] {
            let resp = env
                .http
                .get(env.url(name))
                .header(ACCEPT_ENCODING, accept)
                .send()
                .unwrap();
            assert_eq!(resp.status(), 200, "{name}");
            assert_eq!(
                resp.headers()
                    .get(CONTENT_ENCODING)
                    .map(|v| v.to_str().unwrap()),
                encoding,
                "{name} with Accept-Encoding {accept}"
            );
            assert!(
                resp.headers()[CACHE_CONTROL]
                    .to_str()
                    .unwrap()
                    .contains("immutable"),
                "{name}"
            );
        }
    }
    // The compressed copies are not addressable by name, and unknown files are 404.
    let first = &names[0];
    for missing in [format!("{first}.br"), "/console/nope.js".to_string()] {
        let resp = env.http.get(env.url(&missing)).send().unwrap();
        let body = problem(resp, 404);
        assert!(detail(&body).contains("no console file"), "{body}");
    }
}

#[test]
fn a_console_session_lives_in_an_http_only_cookie_and_rotates() {
    let env = Env::default_start();

    let wrong = sign_in(&env, "not-the-password");
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get(SET_COOKIE).is_none());

    let resp = sign_in(&env, ADMIN_PASSWORD);
    assert_eq!(resp.status(), 200);
    let (cookie, header) = session_cookie(&resp);
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/api/v1/auth/session",
    ] {
        assert!(header.contains(attribute), "{header} lacks {attribute}");
    }
    let body: Value = resp.json().unwrap();
    assert_eq!(body["user"]["name"], "admin");
    assert_eq!(body["user"]["role"], "admin");
    // The refresh token is in the cookie only, never in what scripts can read.
    assert!(body.get("refresh_token").is_none(), "{body}");
    let access = body["access_token"].as_str().unwrap().to_string();
    let me = env.get("/api/v1/auth/me", &access);
    assert_eq!(me.status(), 200);

    let refresh = |cookie: &str, console: bool| {
        let mut req = env
            .http
            .post(env.url("/api/v1/auth/session/refresh"))
            .header(COOKIE, cookie);
        if console {
            req = req.header("X-Sparkbrain-Console", "1");
        }
        req.send().unwrap()
    };
    // Without the console's header (a cross-site form or a plain link): refused, session kept.
    let body = problem(refresh(&cookie, false), 403);
    assert!(detail(&body).contains("x-sparkbrain-console"), "{body}");

    let renewed = refresh(&cookie, true);
    assert_eq!(renewed.status(), 200);
    let (next, _) = session_cookie(&renewed);
    assert_ne!(next, cookie, "the refresh token must rotate");
    let body: Value = renewed.json().unwrap();
    assert_eq!(body["user"]["name"], "admin");

    // The old cookie is spent: refused, and the answer clears it.
    let replayed = refresh(&cookie, true);
    assert_eq!(replayed.status(), 401);
    let (cleared, header) = session_cookie(&replayed);
    assert_eq!(cleared, "sparkbrain_session=");
    assert!(header.contains("Max-Age=0"), "{header}");

    // No cookie at all: 401 with a message that says to sign in.
    let body = problem(
        env.http
            .post(env.url("/api/v1/auth/session/refresh"))
            .header("X-Sparkbrain-Console", "1")
            .send()
            .unwrap(),
        401,
    );
    assert!(detail(&body).contains("sign in"), "{body}");

    // Sign out needs the header too, then revokes the session and clears the cookie.
    let refused = env
        .http
        .delete(env.url("/api/v1/auth/session"))
        .header(COOKIE, &next)
        .send()
        .unwrap();
    assert_eq!(refused.status(), 403);
    let out = env
        .http
        .delete(env.url("/api/v1/auth/session"))
        .header(COOKIE, &next)
        .header("X-Sparkbrain-Console", "1")
        .send()
        .unwrap();
    assert_eq!(out.status(), 204);
    assert!(session_cookie(&out).1.contains("Max-Age=0"));
    assert_eq!(refresh(&next, true).status(), 401);
}

#[test]
fn status_reports_what_the_system_page_shows() {
    let env = Env::default_start();
    env.daemon.wait_ready();
    let status: Value = env
        .get("/api/v1/status", &env.admin_token())
        .json()
        .unwrap();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["ready"], true, "{status}");
    assert!(status["uptime_seconds"].is_u64(), "{status}");
    assert!(
        status["checks"].is_array() || status["checks"].is_object(),
        "{status}"
    );
    // The disk that holds the data directory: the same figures `df` gives.
    let disk = &status["disk"];
    assert_eq!(
        disk["path"].as_str(),
        Some(env.setup.data_dir().to_str().unwrap()),
        "{status}"
    );
    let (total, available) = (
        disk["total_bytes"].as_u64().unwrap(),
        disk["available_bytes"].as_u64().unwrap(),
    );
    assert!(total > 0 && available <= total, "{disk}");
    let df = std::process::Command::new("df")
        .args(["--output=size", "-B1"])
        .arg(env.setup.data_dir())
        .output()
        .unwrap();
    let size: u64 = String::from_utf8_lossy(&df.stdout)
        .lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .unwrap();
    assert_eq!(total, size, "{disk}");
}
