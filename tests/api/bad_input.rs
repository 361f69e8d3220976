//! Malformed, mistyped, unlabelled, oversized and misrouted requests: each gets a precise
//! problem, and none of them harms the daemon.

use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};

use crate::common::{ADMIN_PASSWORD, Setup};
use crate::util::{Env, detail, problem};

#[test]
fn bad_bodies_routes_and_methods_get_precise_problems() {
    let env = Env::start(Setup::new().server("max_body_bytes = 1024"));
    let admin = env.admin_token();
    let refresh = env.url("/api/v1/auth/refresh");
    let json_post = |url: &str, body: &str| {
        env.http
            .post(url)
            .bearer_auth(&admin)
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .unwrap()
    };

    // Malformed JSON: 400.
    let body = problem(json_post(&refresh, "{\"refresh_token\": "), 400);
    assert_eq!(body["code"], "bad-request");
    problem(json_post(&env.url("/api/v1/users"), "{not json}"), 400);

    // Well-formed JSON of the wrong shape: 422.
    let body = problem(json_post(&refresh, "{\"refresh_token\": 5}"), 422);
    assert_eq!(body["code"], "validation-failed");
    let body = problem(
        json_post(
            &env.url("/api/v1/users"),
            "{\"name\": \"x\", \"password\": [\"a\"], \"role\": \"viewer\"}",
        ),
        422,
    );
    assert!(detail(&body).contains("password"), "{body}");
    problem(json_post(&refresh, "[]"), 422);
    // A missing field.
    let body = problem(json_post(&refresh, "{}"), 422);
    assert!(detail(&body).contains("refresh_token"), "{body}");
    // An unknown field is refused rather than ignored.
    let body = problem(
        json_post(&refresh, "{\"refresh_token\": \"rt_x\", \"extra\": 1}"),
        422,
    );
    assert!(detail(&body).contains("extra"), "{body}");
    let body = problem(
        json_post(
            &env.url("/api/v1/users"),
            "{\"name\": \"eve\", \"password\": \"eve-password-for-tests\", \"role\": \"viewer\", \"admin\": true}",
        ),
        422,
    );
    assert!(detail(&body).contains("admin"), "{body}");

    // JSON without a Content-Type: 415.
    let resp = env
        .http
        .post(&refresh)
        .body("{\"refresh_token\": \"rt_x\"}")
        .send()
        .unwrap();
    let body = problem(resp, 415);
    assert!(detail(&body).contains("application/json"), "{body}");
    // JSON sent to the form endpoint: 415 too.
    let resp = env
        .http
        .post(env.url("/api/v1/auth/token"))
        .json(&json!({ "username": "admin", "password": ADMIN_PASSWORD }))
        .send()
        .unwrap();
    let body = problem(resp, 415);
    assert!(detail(&body).contains("x-www-form-urlencoded"), "{body}");

    // Larger than server.max_body_bytes (1024 here): 413, on JSON and form routes alike.
    let big = json!({ "name": "big", "password": "p".repeat(2000), "role": "viewer" });
    let body = problem(env.post_json("/api/v1/users", &admin, &big), 413);
    assert!(detail(&body).contains("max_body_bytes"), "{body}");
    let resp = env
        .http
        .post(env.url("/api/v1/auth/token"))
        .form(&[("username", "admin"), ("password", &"p".repeat(2000))])
        .send()
        .unwrap();
    problem(resp, 413);
    // Just under the limit is accepted.
    let under = json!({ "name": "big", "password": "p".repeat(900), "role": "viewer" });
    let resp = env.post_json("/api/v1/users", &admin, &under);
    assert_eq!(resp.status(), 201, "{:?}", resp.text());

    // Token requests with missing fields or an unknown grant: 400.
    let token = |form: &[(&str, &str)]| {
        env.http
            .post(env.url("/api/v1/auth/token"))
            .form(form)
            .send()
            .unwrap()
    };
    let body = problem(token(&[("username", "admin")]), 400);
    assert!(detail(&body).contains("password"), "{body}");
    problem(token(&[("grant_type", "refresh_token")]), 400);
    let body = problem(
        token(&[
            ("grant_type", "client_credentials"),
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
        ]),
        400,
    );
    assert!(detail(&body).contains("client_credentials"), "{body}");

    // Unknown route: 404 problem.
    let body = problem(env.http.get(env.url("/nope")).send().unwrap(), 404);
    assert_eq!(body["code"], "not-found");
    assert!(detail(&body).contains("/nope"), "{body}");
    problem(env.get("/api/v1/nope", &admin), 404);
    // A key id that is not a number: 400.
    let body = problem(env.delete("/api/v1/keys/abc", &admin), 400);
    assert_eq!(body["code"], "bad-request");
    // A query parameter of the wrong type: 422.
    problem(env.get("/api/v1/audit?limit=lots", &admin), 422);
    problem(env.get("/api/v1/keys?color=red", &admin), 422);
    // Wrong method: 405 problem.
    let body = problem(env.http.put(env.url("/healthz")).send().unwrap(), 405);
    assert_eq!(body["code"], "method-not-allowed");
    problem(env.delete("/api/v1/auth/me", &admin), 405);

    // Afterwards: healthy, the admin still signs in, and nothing was lost or added.
    let health: Value = env
        .http
        .get(env.url("/healthz"))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["status"], "ok");
    let fresh = env.daemon.token("admin", ADMIN_PASSWORD);
    let users: Vec<Value> = env.get("/api/v1/users", &fresh).json().unwrap();
    let names: Vec<&str> = users.iter().filter_map(|u| u["name"].as_str()).collect();
    assert_eq!(names, ["admin", "big"]);
}
