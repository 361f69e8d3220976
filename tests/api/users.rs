//! User and group management through the admin API.

use serde_json::{Value, json};

use crate::common::ADMIN_PASSWORD;
use crate::util::{Env, detail, problem, s, unauthorized};

const PW: &str = "user-password-for-tests";

#[test]
fn admin_creates_users_and_bad_requests_are_refused() {
    let env = Env::default_start();
    let admin = env.admin_token();

    let user = env.create_user(&admin, "ursula", PW, "editor");
    assert_eq!(user["name"], "ursula");
    assert_eq!(user["role"], "editor");
    assert_eq!(user["disabled"], false);
    assert!(user["id"].is_i64(), "{user}");
    assert!(user.get("password").is_none() && user.get("password_hash").is_none());
    // The new user can sign in straight away.
    assert_eq!(env.try_login("ursula", PW).status(), 200);

    // Same name again, also in other letter case: 409.
    let again = json!({ "name": "ursula", "password": PW, "role": "viewer" });
    let body = problem(env.post_json("/api/v1/users", &admin, &again), 409);
    assert_eq!(body["code"], "conflict");
    assert!(detail(&body).contains("already exists"), "{body}");
    let upper = json!({ "name": "URSULA", "password": PW, "role": "viewer" });
    problem(env.post_json("/api/v1/users", &admin, &upper), 409);

    // Too short a password: 422 naming the minimum (12 by default).
    let short = json!({ "name": "shorty", "password": "short", "role": "viewer" });
    let body = problem(env.post_json("/api/v1/users", &admin, &short), 422);
    assert_eq!(body["code"], "validation-failed");
    assert!(detail(&body).contains("at least 12"), "{body}");

    // A role that does not exist.
    let bad_role = json!({ "name": "roger", "password": PW, "role": "superuser" });
    let body = problem(env.post_json("/api/v1/users", &admin, &bad_role), 422);
    assert!(detail(&body).contains("superuser"), "{body}");

    // Names that could be paths or worse.
    for name in ["../x", "", "a b", "-dash", "x/y", "ü"] {
        let bad_name = json!({ "name": name, "password": PW, "role": "viewer" });
        let body = problem(env.post_json("/api/v1/users", &admin, &bad_name), 422);
        assert!(
            detail(&body).contains("invalid user name"),
            "{name:?}: {body}"
        );
    }

    // None of the refused users exist.
    let users: Vec<Value> = env.get("/api/v1/users", &admin).json().unwrap();
    let names: Vec<&str> = users.iter().map(|u| s(u, "name")).collect();
    assert_eq!(names, ["admin", "ursula"]);
    problem(env.get("/api/v1/users/nobody", &admin), 404);
}

#[test]
fn the_last_admin_cannot_be_deleted_demoted_or_disabled() {
    let env = Env::default_start();
    let admin = env.admin_token();

    let body = problem(env.delete("/api/v1/users/admin", &admin), 409);
    assert!(detail(&body).contains("last enabled admin"), "{body}");
    let body = problem(
        env.patch_json("/api/v1/users/admin", &admin, &json!({ "role": "viewer" })),
        409,
    );
    assert!(detail(&body).contains("last enabled admin"), "{body}");
    let body = problem(
        env.patch_json("/api/v1/users/admin", &admin, &json!({ "disabled": true })),
        409,
    );
    assert!(detail(&body).contains("last enabled admin"), "{body}");

    // Nothing changed: still an enabled admin that can sign in.
    let me: Value = env.get("/api/v1/users/admin", &admin).json().unwrap();
    assert_eq!(me["role"], "admin");
    assert_eq!(me["disabled"], false);
    assert_eq!(env.try_login("admin", ADMIN_PASSWORD).status(), 200);

    // With a second admin, the first may step down, and the second may then delete it.
    env.create_user(&admin, "adele", PW, "admin");
    let resp = env.patch_json("/api/v1/users/admin", &admin, &json!({ "role": "editor" }));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().unwrap()["role"], "editor");
    // The demoted admin's token loses admin rights at once (the role is read per request).
    problem(env.get("/api/v1/users", &admin), 403);
    let adele = env.daemon.token("adele", PW);
    assert_eq!(env.delete("/api/v1/users/admin", &adele).status(), 204);
    problem(env.get("/api/v1/users/admin", &adele), 404);
    // Now adele is the last one.
    problem(env.delete("/api/v1/users/adele", &adele), 409);
    // The deleted user's token no longer works.
    unauthorized(env.get("/api/v1/auth/me", &admin), Some("invalid_token"));
}

#[test]
fn disabling_a_user_ends_their_access() {
    let env = Env::default_start();
    let admin = env.admin_token();
    env.create_user(&admin, "dora", PW, "editor");
    let pair = env.daemon.login("dora", PW);
    let token = s(&pair, "access_token");
    let resp = env.post_json("/api/v1/keys", token, &json!({ "name": "k" }));
    assert_eq!(resp.status(), 201);
    let key = s(&resp.json::<Value>().unwrap(), "key").to_string();
    assert_eq!(env.get("/api/v1/auth/me", token).status(), 200);

    let resp = env.patch_json("/api/v1/users/dora", &admin, &json!({ "disabled": true }));
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().unwrap()["disabled"], true);

    let body = unauthorized(env.get("/api/v1/auth/me", token), Some("invalid_token"));
    assert!(detail(&body).contains("disabled"), "{body}");
    unauthorized(env.get("/api/v1/auth/me", &key), Some("invalid_token"));
    unauthorized(
        env.post_json(
            "/api/v1/auth/refresh",
            "",
            &json!({ "refresh_token": s(&pair, "refresh_token") }),
        ),
        Some("invalid_token"),
    );
    // Signing in with the right password is refused like a wrong one.
    unauthorized(env.try_login("dora", PW), None);

    // Enabled again, she signs in again.
    let resp = env.patch_json("/api/v1/users/dora", &admin, &json!({ "disabled": false }));
    assert_eq!(resp.status(), 200);
    let fresh = env.daemon.token("dora", PW);
    assert_eq!(env.get("/api/v1/auth/me", &fresh).status(), 200);
}

#[test]
fn a_password_change_by_the_admin_ends_existing_sessions() {
    const NEW: &str = "changed-password-for-tests";
    let env = Env::default_start();
    let admin = env.admin_token();
    env.create_user(&admin, "pat", PW, "viewer");
    let pair = env.daemon.login("pat", PW);
    let access = s(&pair, "access_token");
    let refresh = s(&pair, "refresh_token");
    assert_eq!(env.get("/api/v1/auth/me", access).status(), 200);

    let resp = env.patch_json("/api/v1/users/pat", &admin, &json!({ "password": NEW }));
    assert_eq!(resp.status(), 200, "{:?}", resp.text());

    let body = unauthorized(env.get("/api/v1/auth/me", access), Some("invalid_token"));
    assert!(detail(&body).contains("password changed"), "{body}");
    unauthorized(
        env.post_json(
            "/api/v1/auth/refresh",
            "",
            &json!({ "refresh_token": refresh }),
        ),
        Some("invalid_token"),
    );
    unauthorized(env.try_login("pat", PW), None);
    // A session started after the change works at once.
    let fresh = env.daemon.token("pat", NEW);
    assert_eq!(env.get("/api/v1/auth/me", &fresh).status(), 200);

    // The admin's own session was not affected, and a short password is refused.
    let body = problem(
        env.patch_json("/api/v1/users/pat", &admin, &json!({ "password": "tiny" })),
        422,
    );
    assert!(detail(&body).contains("at least 12"), "{body}");
    assert_eq!(env.get("/api/v1/auth/me", &fresh).status(), 200);
}

#[test]
fn users_change_their_own_password_with_the_current_one() {
    const NEW: &str = "my-own-new-password";
    let env = Env::default_start();
    let admin = env.admin_token();
    env.create_user(&admin, "vic", PW, "viewer");
    env.create_user(&admin, "wes", PW, "viewer");
    let vic = env.daemon.token("vic", PW);

    // Without the current password: refused.
    let body = problem(
        env.patch_json("/api/v1/users/vic", &vic, &json!({ "password": NEW })),
        422,
    );
    assert!(detail(&body).contains("current_password"), "{body}");
    // With a wrong current password: 403.
    let body = problem(
        env.patch_json(
            "/api/v1/users/vic",
            &vic,
            &json!({ "password": NEW, "current_password": "not-my-password" }),
        ),
        403,
    );
    assert!(detail(&body).contains("current_password"), "{body}");
    assert_eq!(env.try_login("vic", PW).status(), 200);
    // A viewer cannot change someone else's password, nor their own role.
    problem(
        env.patch_json(
            "/api/v1/users/wes",
            &vic,
            &json!({ "password": NEW, "current_password": PW }),
        ),
        403,
    );
    problem(
        env.patch_json(
            "/api/v1/users/vic",
            &vic,
            &json!({ "role": "admin", "current_password": PW }),
        ),
        403,
    );
    // With the right one: 200, and the new password is the one that works.
    let resp = env.patch_json(
        "/api/v1/users/vic",
        &vic,
        &json!({ "password": NEW, "current_password": PW }),
    );
    assert_eq!(resp.status(), 200, "{:?}", resp.text());
    assert_eq!(resp.json::<Value>().unwrap()["role"], "viewer");
    unauthorized(env.try_login("vic", PW), None);
    assert_eq!(env.try_login("vic", NEW).status(), 200);
    assert_eq!(env.try_login("wes", PW).status(), 200);
}

#[test]
fn groups_and_memberships() {
    let env = Env::default_start();
    let admin = env.admin_token();
    env.create_user(&admin, "gus", PW, "viewer");

    let resp = env.post_json("/api/v1/groups", &admin, &json!({ "name": "research" }));
    assert_eq!(resp.status(), 201);
    let group: Value = resp.json().unwrap();
    assert_eq!(group["name"], "research");
    assert_eq!(group["members"], json!([]));
    problem(
        env.post_json("/api/v1/groups", &admin, &json!({ "name": "research" })),
        409,
    );
    problem(
        env.post_json("/api/v1/groups", &admin, &json!({ "name": "../etc" })),
        422,
    );

    let resp = env.put("/api/v1/groups/research/members/gus", &admin);
    assert_eq!(resp.status(), 204);
    // Adding twice is harmless.
    assert_eq!(
        env.put("/api/v1/groups/research/members/gus", &admin)
            .status(),
        204
    );
    let gus: Value = env.get("/api/v1/users/gus", &admin).json().unwrap();
    assert_eq!(gus["groups"], json!(["research"]));
    let groups: Vec<Value> = env.get("/api/v1/groups", &admin).json().unwrap();
    assert_eq!(groups.len(), 1);
    assert_eq!(groups[0]["members"], json!(["gus"]));
    // Members see their own groups.
    let own = env.daemon.token("gus", PW);
    let me: Value = env.get("/api/v1/users/gus", &own).json().unwrap();
    assert_eq!(me["groups"], json!(["research"]));
    // But cannot manage groups.
    problem(env.get("/api/v1/groups", &own), 403);
    problem(env.put("/api/v1/groups/research/members/admin", &own), 403);

    // Unknown group or user: 404.
    let body = problem(env.put("/api/v1/groups/nope/members/gus", &admin), 404);
    assert!(detail(&body).contains("nope"), "{body}");
    problem(
        env.put("/api/v1/groups/research/members/nobody", &admin),
        404,
    );
    problem(env.delete("/api/v1/groups/nope", &admin), 404);

    assert_eq!(
        env.delete("/api/v1/groups/research/members/gus", &admin)
            .status(),
        204
    );
    let gus: Value = env.get("/api/v1/users/gus", &admin).json().unwrap();
    assert_eq!(gus["groups"], json!([]));
    // Removing a non-member is a 404.
    problem(
        env.delete("/api/v1/groups/research/members/gus", &admin),
        404,
    );

    assert_eq!(env.delete("/api/v1/groups/research", &admin).status(), 204);
    let groups: Vec<Value> = env.get("/api/v1/groups", &admin).json().unwrap();
    assert!(groups.is_empty(), "{groups:?}");
    // The member is still a user.
    assert_eq!(env.get("/api/v1/users/gus", &admin).status(), 200);

    // Each of these admin actions is in the audit log.
    let rows = env.audit(&admin);
    for action in [
        "group.create",
        "group.add_member",
        "group.remove_member",
        "group.delete",
    ] {
        assert!(
            rows.iter()
                .any(|r| r["action"] == action && r["outcome"] == "allowed"),
            "no allowed {action} in {rows:#?}"
        );
    }
}
