//! Authentication: bearer tokens, refresh rotation, roles, API keys, sign-in rate limits, the
//! audit log, and secrets kept out of logs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::{AUTHORIZATION, RETRY_AFTER};
use serde_json::{Value, json};

use crate::common::{ADMIN_PASSWORD, Setup};
use crate::util::{Env, b64, detail, problem, s, unauthorized};

const VIEWER_PASSWORD: &str = "viewer-password-for-tests";

/// A daemon with `admin` and a viewer `vera` (created with the CLI).
fn with_viewer(setup: Setup) -> Env {
    setup.write_config(None);
    setup.add_user("vera", "viewer", VIEWER_PASSWORD);
    Env::start(setup)
}

#[test]
fn missing_or_unusable_credentials_are_401_with_a_bearer_challenge() {
    let env = Env::default_start();

    // No Authorization header at all: a plain challenge without an error code.
    let body = unauthorized(env.get("/api/v1/auth/me", ""), None);
    assert!(detail(&body).contains("bearer"), "{body}");

    // A bearer token that is not a JWT.
    let body = unauthorized(
        env.get("/api/v1/auth/me", "not-a-real-token"),
        Some("invalid_token"),
    );
    assert!(detail(&body).contains("malformed"), "{body}");

    // Basic authentication, even with the right password, is not accepted.
    let basic = format!(
        "Basic {}",
        b64::encode(format!("admin:{ADMIN_PASSWORD}").as_bytes())
    );
    let resp = env
        .http
        .get(env.url("/api/v1/auth/me"))
        .header(AUTHORIZATION, basic)
        .send()
        .unwrap();
    let body = unauthorized(resp, Some("invalid_token"));
    assert!(detail(&body).contains("bearer"), "{body}");

    // The real token works on the same route, so the 401s above were about the credentials.
    let me: Value = env
        .get("/api/v1/auth/me", &env.admin_token())
        .json()
        .unwrap();
    assert_eq!(me["name"], "admin");
    assert_eq!(me["role"], "admin");
    assert!(me["api_key_id"].is_null(), "{me}");
}

#[test]
fn expired_access_token_is_refused() {
    let env = Env::start(Setup::new().with("[auth]\naccess_token_ttl_seconds = 1"));
    let pair = env.daemon.login("admin", ADMIN_PASSWORD);
    assert_eq!(pair["expires_in"], 1);
    let token = s(&pair, "access_token");
    assert_eq!(env.get("/api/v1/auth/me", token).status(), 200);
    std::thread::sleep(Duration::from_millis(2200));
    let body = unauthorized(env.get("/api/v1/auth/me", token), Some("invalid_token"));
    assert!(detail(&body).contains("expired"), "{body}");
    // The refresh token still gets a fresh access token.
    let resp = env.post_json(
        "/api/v1/auth/refresh",
        "",
        &json!({ "refresh_token": s(&pair, "refresh_token") }),
    );
    assert_eq!(resp.status(), 200);
    let fresh: Value = resp.json().unwrap();
    assert_eq!(
        env.get("/api/v1/auth/me", s(&fresh, "access_token"))
            .status(),
        200
    );
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[test]
fn forged_and_edited_tokens_are_refused() {
    let env = with_viewer(Setup::new());
    let admin_token = env.admin_token();
    let me: Value = env.get("/api/v1/auth/me", &admin_token).json().unwrap();
    let admin_id = me["user_id"].as_i64().expect("user_id");

    // Claims exactly like the daemon's, signed with a key that is not the daemon's.
    let claims = json!({
        "sub": admin_id.to_string(),
        "name": "admin",
        "role": "admin",
        "iat": now_secs(),
        "exp": now_secs() + 600,
        "iss": "sparkbrain",
    });
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"a different secret, not the daemon's key"),
    )
    .expect("sign");
    let body = unauthorized(env.get("/api/v1/users", &forged), Some("invalid_token"));
    assert!(detail(&body).contains("signature"), "{body}");

    // A viewer edits the payload of their real token to become the admin; the signature no
    // longer matches.
    let viewer_token = env.daemon.token("vera", VIEWER_PASSWORD);
    let parts: Vec<&str> = viewer_token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT has three parts");
    let mut payload: Value = serde_json::from_slice(&b64::decode(parts[1])).unwrap();
    assert_eq!(payload["name"], "vera");
    payload["sub"] = json!(admin_id.to_string());
    payload["name"] = json!("admin");
    payload["role"] = json!("admin");
    let edited = format!(
        "{}.{}.{}",
        parts[0],
        b64::encode(payload.to_string().as_bytes()),
        parts[2]
    );
    let body = unauthorized(env.get("/api/v1/users", &edited), Some("invalid_token"));
    assert!(detail(&body).contains("signature"), "{body}");
    let body = unauthorized(env.get("/api/v1/auth/me", &edited), Some("invalid_token"));
    assert!(detail(&body).contains("signature"), "{body}");

    // The unedited token still works (as the viewer, not the admin).
    let me: Value = env.get("/api/v1/auth/me", &viewer_token).json().unwrap();
    assert_eq!(me["name"], "vera");
}

#[test]
fn refresh_rotates_and_logout_revokes() {
    let env = Env::default_start();
    let first = env.daemon.login("admin", ADMIN_PASSWORD);
    assert_eq!(first["token_type"], "bearer");
    let old_refresh = s(&first, "refresh_token").to_string();

    // JSON refresh: a new pair, with a different refresh token.
    let resp = env.post_json(
        "/api/v1/auth/refresh",
        "",
        &json!({ "refresh_token": old_refresh }),
    );
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let second: Value = resp.json().unwrap();
    let new_refresh = s(&second, "refresh_token").to_string();
    assert_ne!(new_refresh, old_refresh);
    assert_eq!(
        env.get("/api/v1/auth/me", s(&second, "access_token"))
            .status(),
        200
    );

    // The old refresh token was used up.
    let body = unauthorized(
        env.post_json(
            "/api/v1/auth/refresh",
            "",
            &json!({ "refresh_token": old_refresh }),
        ),
        Some("invalid_token"),
    );
    assert!(detail(&body).contains("refresh token"), "{body}");

    // OAuth2 form: grant_type=refresh_token with the new one.
    let resp = env
        .http
        .post(env.url("/api/v1/auth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", new_refresh.as_str()),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let third: Value = resp.json().unwrap();
    let third_refresh = s(&third, "refresh_token").to_string();
    assert_ne!(third_refresh, new_refresh);
    // ... and it rotated too.
    let resp = env
        .http
        .post(env.url("/api/v1/auth/token"))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", new_refresh.as_str()),
        ])
        .send()
        .unwrap();
    unauthorized(resp, Some("invalid_token"));

    // Sign-out revokes the current refresh token.
    let resp = env.post_json(
        "/api/v1/auth/logout",
        "",
        &json!({ "refresh_token": third_refresh }),
    );
    assert_eq!(resp.status(), 204);
    let body = unauthorized(
        env.post_json(
            "/api/v1/auth/refresh",
            "",
            &json!({ "refresh_token": third_refresh }),
        ),
        Some("invalid_token"),
    );
    assert!(detail(&body).contains("revoked"), "{body}");
    // Signing out twice is not an error.
    let resp = env.post_json(
        "/api/v1/auth/logout",
        "",
        &json!({ "refresh_token": third_refresh }),
    );
    assert_eq!(resp.status(), 204);
}

#[test]
fn viewers_cannot_use_admin_routes_but_can_see_themselves() {
    let env = Env::default_start();
    let admin = env.admin_token();
    // One viewer from the admin API.
    let created = env.create_user(&admin, "val", VIEWER_PASSWORD, "viewer");
    assert_eq!(created["role"], "viewer");
    let viewer = env.daemon.token("val", VIEWER_PASSWORD);

    let body = problem(env.get("/api/v1/users", &viewer), 403);
    assert_eq!(body["code"], "forbidden");
    assert!(detail(&body).contains("admin"), "{body}");
    problem(env.get("/api/v1/audit", &viewer), 403);
    problem(env.get("/api/v1/users/admin", &viewer), 403);
    problem(
        env.post_json(
            "/api/v1/users",
            &viewer,
            &json!({ "name": "mallory", "password": "mallory-password-1", "role": "admin" }),
        ),
        403,
    );
    // The refused creation did not happen.
    problem(env.get("/api/v1/users/mallory", &admin), 404);

    let resp = env.get("/api/v1/users/val", &viewer);
    assert_eq!(resp.status(), 200);
    let me: Value = resp.json().unwrap();
    assert_eq!(me["name"], "val");
    assert_eq!(me["role"], "viewer");
    assert!(me.get("password_hash").is_none(), "{me}");

    // The same list works for the admin.
    let resp = env.get("/api/v1/users", &admin);
    assert_eq!(resp.status(), 200);
    let names: Vec<String> = resp
        .json::<Vec<Value>>()
        .unwrap()
        .iter()
        .map(|u| s(u, "name").to_string())
        .collect();
    assert_eq!(names, ["admin", "val"]);
}

#[test]
fn api_keys_authenticate_are_listed_without_secret_and_can_be_revoked() {
    let env = with_viewer(Setup::new());
    let admin = env.admin_token();
    env.create_user(&admin, "otto", "otto-password-for-tests", "editor");
    let viewer = env.daemon.token("vera", VIEWER_PASSWORD);
    let other = env.daemon.token("otto", "otto-password-for-tests");

    let resp = env.post_json("/api/v1/keys", &viewer, &json!({ "name": "ci" }));
    assert_eq!(resp.status(), 201);
    let created: Value = resp.json().unwrap();
    let secret = s(&created, "key").to_string();
    assert!(secret.starts_with("sk-"), "{secret}");
    assert!(secret.len() > 40, "{secret}");
    let id = created["id"].as_i64().expect("id");
    assert_eq!(created["owner"], "vera");
    assert_eq!(created["name"], "ci");

    // The key is a bearer credential for its owner.
    let resp = env.get("/api/v1/auth/me", &secret);
    assert_eq!(resp.status(), 200);
    let me: Value = resp.json().unwrap();
    assert_eq!(me["name"], "vera");
    assert_eq!(me["role"], "viewer");
    assert_eq!(me["api_key_id"], id);
    // ... with the owner's role, not more.
    problem(env.get("/api/v1/users", &secret), 403);

    // Listed, recognisable by its prefix, but never with the secret.
    let resp = env.get("/api/v1/keys", &viewer);
    assert_eq!(resp.status(), 200);
    let text = resp.text().unwrap();
    assert!(!text.contains(&secret), "listing shows the secret: {text}");
    assert!(
        !text.contains(&secret[3..]),
        "listing shows the secret: {text}"
    );
    let list: Vec<Value> = serde_json::from_str(&text).unwrap();
    assert_eq!(list.len(), 1, "{text}");
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["name"], "ci");
    assert!(secret.starts_with(s(&list[0], "prefix")), "{text}");
    assert!(list[0]["revoked_at"].is_null());
    // Someone else's listing does not include it.
    let others: Vec<Value> = env.get("/api/v1/keys", &other).json().unwrap();
    assert!(others.is_empty(), "{others:?}");

    // Another (non-admin) user cannot revoke it, and cannot tell it exists.
    let body = problem(env.delete(&format!("/api/v1/keys/{id}"), &other), 404);
    assert_eq!(body["code"], "not-found");
    assert_eq!(env.get("/api/v1/auth/me", &secret).status(), 200);
    // Nor can they with a key id that does not exist: the same answer.
    problem(env.delete("/api/v1/keys/999999", &other), 404);

    // The owner revokes it; it stops working at once.
    let resp = env.delete(&format!("/api/v1/keys/{id}"), &viewer);
    assert_eq!(resp.status(), 200);
    let revoked: Value = resp.json().unwrap();
    assert_eq!(revoked["id"], id);
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let body = unauthorized(env.get("/api/v1/auth/me", &secret), Some("invalid_token"));
    assert!(detail(&body).contains("revoked"), "{body}");
    let list: Vec<Value> = env.get("/api/v1/keys", &viewer).json().unwrap();
    assert!(list[0]["revoked_at"].is_string(), "{list:?}");

    // A made-up key of the right shape is refused too.
    let fake = format!("sk-{}", "0".repeat(64));
    unauthorized(env.get("/api/v1/auth/me", &fake), Some("invalid_token"));
}

#[test]
fn failed_sign_ins_are_rate_limited_per_account_and_per_address() {
    let setup = Setup::new()
        .with("[auth]\nlogin_max_failures_per_account = 3\nlogin_max_failures_per_address = 6");
    setup.write_config(None);
    for name in ["alice", "bob", "carol", "dave"] {
        setup.add_user(name, "viewer", &format!("{name}-password-for-tests"));
    }
    let env = Env::start(setup);

    for _ in 0..3 {
        let body = unauthorized(env.try_login("alice", "wrong-password-1234"), None);
        assert!(
            detail(&body).contains("wrong user name or password"),
            "{body}"
        );
    }
    // The fourth attempt is refused before the password is even looked at.
    let resp = env.try_login("alice", "alice-password-for-tests");
    let retry_after = resp
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .expect("429 carries Retry-After");
    let body = problem(resp, 429);
    assert_eq!(body["code"], "rate-limited");
    let secs: u64 = retry_after.parse().expect("Retry-After in seconds");
    assert!((1..=900).contains(&secs), "Retry-After {secs}");
    // Account names are case-insensitive for the limit.
    problem(env.try_login("ALICE", "alice-password-for-tests"), 429);

    // Another account from the same address still signs in (3 of 6 address failures used).
    let resp = env.try_login("bob", "bob-password-for-tests");
    assert_eq!(resp.status(), 200);
    let bob_token = s(&resp.json::<Value>().unwrap(), "access_token").to_string();
    // Two more failures on bob and one on carol: 6 from this address.
    for _ in 0..2 {
        unauthorized(env.try_login("bob", "wrong-password-1234"), None);
    }
    unauthorized(env.try_login("carol", "wrong-password-1234"), None);
    // Now the address is blocked, whatever the account.
    problem(env.try_login("carol", "carol-password-for-tests"), 429);
    problem(env.try_login("dave", "dave-password-for-tests"), 429);
    // Tokens already issued keep working: the limit is about signing in.
    assert_eq!(env.get("/api/v1/auth/me", &bob_token).status(), 200);
}

#[test]
fn audit_log_records_denials_and_admin_actions() {
    let env = with_viewer(Setup::new());
    let admin = env.admin_token();

    unauthorized(env.try_login("admin", "not-the-admin-password"), None);
    unauthorized(env.try_login("nobody", "not-anyones-password"), None);
    let viewer = env.daemon.token("vera", VIEWER_PASSWORD);
    problem(env.get("/api/v1/users", &viewer), 403);
    let resp = env.post_json("/api/v1/keys", &admin, &json!({ "name": "backup" }));
    assert_eq!(resp.status(), 201);
    let key: Value = resp.json().unwrap();
    unauthorized(
        env.get("/api/v1/status", "garbage-token"),
        Some("invalid_token"),
    );

    let rows = env.audit(&admin);
    let find = |action: &str, outcome: &str, pred: &dyn Fn(&Value) -> bool| {
        rows.iter()
            .find(|r| r["action"] == action && r["outcome"] == outcome && pred(r))
            .cloned()
            .unwrap_or_else(|| panic!("no {action} {outcome} row in {rows:#?}"))
    };
    let row = find("auth.login", "denied", &|r| r["target"] == "admin");
    assert_eq!(row["detail"], "wrong password");
    assert_eq!(row["source"], "127.0.0.1");
    let row = find("auth.login", "denied", &|r| r["target"] == "nobody");
    assert_eq!(row["detail"], "unknown user");
    let row = find("user.list", "denied", &|_| true);
    assert_eq!(row["actor"], "vera");
    let row = find("key.create", "allowed", &|_| true);
    assert_eq!(row["actor"], "admin");
    assert!(
        s(&row, "detail").contains(s(&key, "prefix")),
        "key.create detail names the key by prefix: {row}"
    );
    let row = find("auth.authenticate", "denied", &|r| {
        r["target"]
            .as_str()
            .is_some_and(|t| t.contains("/api/v1/status"))
    });
    assert!(s(&row, "detail").contains("malformed"), "{row}");
    // Newest first.
    let ids: Vec<i64> = rows.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");

    // Filters.
    let resp = env.get("/api/v1/audit?outcome=denied&limit=2", &admin);
    assert_eq!(resp.status(), 200);
    let denied: Vec<Value> = resp.json().unwrap();
    assert_eq!(denied.len(), 2, "{denied:#?}");
    assert!(
        denied.iter().all(|r| r["outcome"] == "denied"),
        "{denied:#?}"
    );
    let resp = env.get("/api/v1/audit?action=auth.login&outcome=denied", &admin);
    let failed_logins: Vec<Value> = resp.json().unwrap();
    assert_eq!(failed_logins.len(), 2, "{failed_logins:#?}");
    // Successful sign-ins are recorded under the user who signed in.
    let resp = env.get("/api/v1/audit?action=auth.login&outcome=allowed", &admin);
    let logins: Vec<Value> = resp.json().unwrap();
    for user in ["admin", "vera"] {
        assert!(
            logins
                .iter()
                .any(|r| r["actor"] == user && r["target"] == user),
            "no sign-in of {user}: {logins:#?}"
        );
    }

    let body = problem(env.get("/api/v1/audit?limit=0", &admin), 422);
    assert!(detail(&body).contains("limit"), "{body}");
    problem(env.get("/api/v1/audit?limit=1001", &admin), 422);
    problem(env.get("/api/v1/audit?outcome=maybe", &admin), 422);
}

#[test]
fn secrets_never_reach_the_log_or_the_audit_trail() {
    const USER_PASSWORD: &str = "Quokka-Zebra-7731-user-secret";
    const NEW_PASSWORD: &str = "Ibex-Marmot-5519-new-secret";
    const WRONG_PASSWORD: &str = "Narwhal-Okapi-9182-wrong-secret";
    let env = Env::default_start();
    let admin = env.admin_token();
    // The password travels in an API body here, not only through the CLI.
    env.create_user(&admin, "sam", USER_PASSWORD, "editor");
    unauthorized(env.try_login("sam", WRONG_PASSWORD), None);
    unauthorized(env.try_login("nobody", WRONG_PASSWORD), None);
    let pair = env.daemon.login("sam", USER_PASSWORD);
    let access = s(&pair, "access_token").to_string();
    let refresh = s(&pair, "refresh_token").to_string();
    // Refresh (secret in a JSON body), then reuse the old one (a denial that gets audited).
    let resp = env.post_json(
        "/api/v1/auth/refresh",
        "",
        &json!({ "refresh_token": refresh }),
    );
    assert_eq!(resp.status(), 200);
    let pair2: Value = resp.json().unwrap();
    let refresh2 = s(&pair2, "refresh_token").to_string();
    unauthorized(
        env.post_json(
            "/api/v1/auth/refresh",
            "",
            &json!({ "refresh_token": refresh }),
        ),
        Some("invalid_token"),
    );
    // An API key, used, revoked, and used again (denied).
    let resp = env.post_json("/api/v1/keys", &access, &json!({ "name": "script" }));
    assert_eq!(resp.status(), 201);
    let key: Value = resp.json().unwrap();
    let secret = s(&key, "key").to_string();
    assert_eq!(env.get("/api/v1/auth/me", &secret).status(), 200);
    assert_eq!(
        env.delete(&format!("/api/v1/keys/{}", key["id"]), &secret)
            .status(),
        200
    );
    unauthorized(env.get("/api/v1/auth/me", &secret), Some("invalid_token"));
    // Own password change (current password in the body), then a wrong current password.
    let resp = env.patch_json(
        "/api/v1/users/sam",
        s(&pair2, "access_token"),
        &json!({ "password": NEW_PASSWORD, "current_password": USER_PASSWORD }),
    );
    assert_eq!(resp.status(), 200);
    // The sign-out of a token the password change already revoked.
    assert_eq!(
        env.post_json(
            "/api/v1/auth/logout",
            "",
            &json!({ "refresh_token": refresh2 })
        )
        .status(),
        204
    );

    let secrets = [
        ADMIN_PASSWORD,
        USER_PASSWORD,
        NEW_PASSWORD,
        WRONG_PASSWORD,
        refresh.as_str(),
        refresh2.as_str(),
        secret.as_str(),
        &secret[3..],
        access.as_str(),
        admin.as_str(),
    ];
    let logs = env.daemon.logs();
    assert!(
        logs.contains("DEBUG"),
        "the daemon logs at debug level, so the check means something:\n{logs}"
    );
    let audit = serde_json::to_string(&env.audit(&admin)).unwrap();
    assert!(audit.contains("auth.login"), "{audit}");
    for secret in secrets {
        assert!(
            !logs.contains(secret),
            "the log contains {secret:?}:\n{logs}"
        );
        assert!(
            !audit.contains(secret),
            "the audit log contains {secret:?}:\n{audit}"
        );
    }
}

#[test]
fn a_flood_of_bad_tokens_is_audited_only_up_to_the_per_address_cap() {
    // 30 denials per source address per minute reach the audit log (DENIALS_AUDITED_PER_MINUTE);
    // the rest are answered 401 all the same but not written, so a flood cannot fill the disk.
    let env = Env::default_start();
    let admin = env.admin_token();
    for _ in 0..45 {
        unauthorized(env.get("/api/v1/auth/me", "garbage"), Some("invalid_token"));
    }
    let resp = env.get(
        "/api/v1/audit?action=auth.authenticate&outcome=denied&limit=1000",
        &admin,
    );
    let rows: Vec<Value> = resp.json().unwrap();
    assert_eq!(rows.len(), 30, "{rows:#?}");
    // Authenticated work is unaffected.
    assert_eq!(env.get("/api/v1/auth/me", &admin).status(), 200);
}
