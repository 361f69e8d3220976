//! Collections: create, share, change, delete; a user who may not read a collection gets 404
//! on every route and never sees its documents, counts or hits.

use reqwest::Method;
use serde_json::{Value, json};

use crate::util::{Kb, problem};

#[test]
fn owner_creates_lists_changes_and_shares() {
    let kb = Kb::start();
    let created = kb.collection(
        &kb.alice,
        json!({"name": "contracts", "description": "signed contracts"}),
    );
    assert_eq!(created["owner"], "alice");
    assert_eq!(created["embedding_model"], "all-MiniLM-L6-v2");
    assert_eq!(created["dimensions"], 384);
    assert_eq!(created["language"], "en");
    assert_eq!(created["access"], "manage");
    assert_eq!(created["counts"]["documents"], 0);

    // Same name again: 409, case-insensitively.
    let (status, detail) = problem(kb.call(
        Method::POST,
        &kb.bob,
        "/api/v1/collections",
        Some(json!({"name": "Contracts"})),
    ));
    assert_eq!(status, 409, "{detail}");

    // Bob sees nothing until shared; then he sees it with read access and no grant list.
    let list: Vec<Value> = kb.get(&kb.bob, "/api/v1/collections").json().unwrap();
    assert!(list.is_empty(), "{list:?}");
    let patched: Value = kb
        .call(
            Method::PATCH,
            &kb.alice,
            "/api/v1/collections/contracts",
            Some(json!({"description": "all contracts", "grants": [{"user": "bob", "access": "read"}]})),
        )
        .json()
        .unwrap();
    assert_eq!(patched["description"], "all contracts");
    assert_eq!(
        patched["grants"],
        json!([{"user": "bob", "access": "read"}])
    );
    let list: Vec<Value> = kb.get(&kb.bob, "/api/v1/collections").json().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["access"], "read");
    assert!(list[0].get("grants").is_none());

    // A reader may not change it: 403 (he knows it exists).
    let (status, _) = problem(kb.call(
        Method::PATCH,
        &kb.bob,
        "/api/v1/collections/contracts",
        Some(json!({"description": "mine"})),
    ));
    assert_eq!(status, 403);
    // The admin sees everything.
    let list: Vec<Value> = kb.get(&kb.admin, "/api/v1/collections").json().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["access"], "manage");

    // Rename; the old name is gone.
    let renamed = kb.call(
        Method::PATCH,
        &kb.alice,
        "/api/v1/collections/contracts",
        Some(json!({"name": "agreements"})),
    );
    assert_eq!(renamed.status(), 200);
    assert_eq!(
        kb.get(&kb.alice, "/api/v1/collections/contracts").status(),
        404
    );
    assert_eq!(
        kb.get(&kb.alice, "/api/v1/collections/agreements").status(),
        200
    );
}

#[test]
fn bad_collection_requests_are_refused_precisely() {
    let kb = Kb::start();
    let post = |token: &str, body: Value| {
        problem(kb.call(Method::POST, token, "/api/v1/collections", Some(body)))
    };
    let (s, d) = post(&kb.carol, json!({"name": "viewers-cannot"}));
    assert_eq!(s, 403, "{d}");
    assert!(d.contains("viewer"), "{d}");
    let (s, d) = post(&kb.alice, json!({"name": "no spaces allowed"}));
    assert_eq!(s, 422, "{d}");
    let (s, d) = post(&kb.alice, json!({"name": "x", "language": "klingon"}));
    assert_eq!(s, 422);
    assert!(d.contains("klingon"), "{d}");
    let (s, d) = post(&kb.alice, json!({"name": "x", "embedding_model": "nope"}));
    assert_eq!(s, 422, "{d}");
    let (s, d) = post(
        &kb.alice,
        json!({"name": "x", "grants": [{"user": "ghost", "access": "read"}]}),
    );
    assert_eq!(s, 422);
    assert!(d.contains("ghost"), "{d}");
    let (s, _) = post(
        &kb.alice,
        json!({"name": "x", "grants": [{"user": "bob", "access": "own"}]}),
    );
    assert_eq!(s, 422);
    let (s, _) = post(&kb.alice, json!({"name": "x", "surprise": true}));
    assert_eq!(s, 422);
    // Nothing of the refused requests was created.
    let list: Vec<Value> = kb.get(&kb.admin, "/api/v1/collections").json().unwrap();
    assert!(list.is_empty(), "{list:?}");
}

#[test]
fn a_user_who_may_not_read_gets_404_everywhere_and_sees_nothing() {
    let kb = Kb::start();
    kb.collection(&kb.alice, json!({"name": "secret"}));
    let id = kb.upload(&kb.alice, "secret", "docling/md/sources/wiki.md");
    kb.indexed(&kb.alice, id);

    let outsider = &kb.bob;
    let routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, "/api/v1/collections/secret".into(), None),
        (
            Method::PATCH,
            "/api/v1/collections/secret".into(),
            Some(json!({"description": "x"})),
        ),
        (Method::DELETE, "/api/v1/collections/secret".into(), None),
        (
            Method::GET,
            "/api/v1/collections/secret/documents".into(),
            None,
        ),
        (Method::GET, format!("/api/v1/documents/{id}"), None),
        (Method::GET, format!("/api/v1/documents/{id}/content"), None),
        (Method::DELETE, format!("/api/v1/documents/{id}"), None),
        (
            Method::POST,
            "/api/v1/search".into(),
            Some(json!({"query": "wiki", "collections": ["secret"]})),
        ),
    ];
    for (method, path, body) in &routes {
        let (status, detail) = problem(kb.call(method.clone(), outsider, path, body.clone()));
        assert_eq!(status, 404, "{method} {path}: {detail}");
        // The answer is the same as for something that does not exist.
        assert!(
            !detail.contains("permission") && !detail.contains("access"),
            "{detail}"
        );
    }
    let upload = kb.upload_bytes(outsider, "secret", "x.txt", b"hello there".to_vec(), None);
    assert_eq!(upload.status(), 404);
    // Unscoped search and listing show nothing of it.
    assert!(kb.hits(outsider, json!({"query": "wiki"})).is_empty());
    let list: Vec<Value> = kb.get(outsider, "/api/v1/collections").json().unwrap();
    assert!(list.is_empty());
    // Still all there for the owner.
    assert_eq!(
        kb.get(&kb.alice, &format!("/api/v1/documents/{id}"))
            .status(),
        200
    );
    assert!(!kb.hits(&kb.alice, json!({"query": "wiki"})).is_empty());
}

#[test]
fn group_grants_give_read_or_write() {
    let kb = Kb::start();
    kb.call(
        Method::POST,
        &kb.admin,
        "/api/v1/groups",
        Some(json!({"name": "legal"})),
    );
    kb.call(
        Method::PUT,
        &kb.admin,
        "/api/v1/groups/legal/members/bob",
        None,
    );
    kb.call(
        Method::PUT,
        &kb.admin,
        "/api/v1/groups/legal/members/carol",
        None,
    );
    kb.collection(
        &kb.alice,
        json!({"name": "shared", "grants": [{"group": "legal", "access": "write"}, {"user": "carol", "access": "read"}]}),
    );
    // Bob writes through the group.
    let id = kb.upload(&kb.bob, "shared", "docling/md/sources/wiki.md");
    kb.indexed(&kb.bob, id);
    // Carol is in the group too, but her viewer role caps every grant at read.
    let doc = kb.get(&kb.carol, &format!("/api/v1/documents/{id}"));
    assert_eq!(doc.status(), 200);
    let (status, detail) =
        problem(kb.upload_bytes(&kb.carol, "shared", "x.txt", b"some words".to_vec(), None));
    assert_eq!(status, 403, "{detail}");
    // Leaving the group takes bob's access away.
    kb.call(
        Method::DELETE,
        &kb.admin,
        "/api/v1/groups/legal/members/bob",
        None,
    );
    assert_eq!(
        kb.get(&kb.bob, &format!("/api/v1/documents/{id}")).status(),
        404
    );
}

#[test]
fn readers_may_not_change_documents() {
    let kb = Kb::start();
    kb.collection(
        &kb.alice,
        json!({"name": "ro", "grants": [{"user": "bob", "access": "read"}]}),
    );
    let id = kb.upload(&kb.alice, "ro", "docling/md/sources/wiki.md");
    let (status, detail) = problem(kb.upload_bytes(&kb.bob, "ro", "x.txt", b"text".to_vec(), None));
    assert_eq!(status, 403, "{detail}");
    let (status, _) = problem(kb.call(
        Method::DELETE,
        &kb.bob,
        &format!("/api/v1/documents/{id}"),
        None,
    ));
    assert_eq!(status, 403);
    assert_eq!(
        kb.get(&kb.bob, &format!("/api/v1/documents/{id}")).status(),
        200
    );
}

#[test]
fn deleting_a_collection_removes_documents_blobs_and_indexes() {
    let kb = Kb::start();
    let c = kb.collection(&kb.alice, json!({"name": "doomed"}));
    let id = kb.upload(&kb.alice, "doomed", "docling/md/sources/wiki.md");
    let doc = kb.indexed(&kb.alice, id);
    let sha = doc["sha256"].as_str().unwrap().to_string();
    let blob = kb
        .setup
        .data_dir()
        .join("blobs")
        .join(&sha[..2])
        .join(&sha[2..4])
        .join(&sha);
    assert!(blob.is_file());
    let index_dir = kb
        .setup
        .data_dir()
        .join("kb/collections")
        .join(c["id"].as_i64().unwrap().to_string());
    assert!(index_dir.is_dir());

    let resp = kb.call(
        Method::DELETE,
        &kb.alice,
        "/api/v1/collections/doomed",
        None,
    );
    assert_eq!(resp.status(), 204);
    assert_eq!(
        kb.get(&kb.alice, &format!("/api/v1/documents/{id}"))
            .status(),
        404
    );
    assert!(!blob.exists(), "blob left behind");
    assert!(kb.hits(&kb.admin, json!({"query": "wiki"})).is_empty());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while index_dir.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!index_dir.exists(), "index folder left behind");
    // The name is free again.
    kb.collection(&kb.alice, json!({"name": "doomed"}));
}
