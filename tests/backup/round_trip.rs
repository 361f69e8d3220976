//! A backup taken while documents are being ingested restores into a new data directory with
//! the same collections, documents, users, API keys, chats and search rankings.

use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{ADMIN_PASSWORD, Setup};
use crate::util::{Kb, doc, with_stories};
use crate::{QUERIES, backup_cmd, eventually, load, passphrase_file, rankings};

const DOCS: &[&str] = &[
    "docling/md/sources/wiki.md",
    "docling/docx/sources/word_sample.docx",
    "docling/docx/sources/lorem_ipsum.docx",
    "docling/html/sources/wiki_duck.html",
    "docling/odf/sources/text_document_01.odt",
    "docling/pdf/sources/2305.03393v1-pg9.pdf",
    "docling/pdf/sources/multi_page.pdf",
    "debian/fhs-3.0.pdf",
    "debian/choosing.en.html",
];

/// Ingested while the backup runs.
const MORE: &[&str] = &[
    "debian/debian-faq.en.txt",
    "debian/fhs-3.0.txt",
    "debian/developers-reference-resources.rst",
    "debian/maint-guide.en.pdf",
];

fn listing(kb: &Kb, token: &str, path: &str) -> Value {
    let resp = kb.get(token, path);
    assert_eq!(resp.status(), 200, "{path}");
    resp.json().expect("json")
}

/// What a user checks after a restore, minus what changes by itself (times of sign-in).
fn state(kb: &Kb, token: &str, collection: &str) -> Value {
    let docs = listing(
        kb,
        token,
        &format!("/api/v1/collections/{collection}/documents"),
    );
    let users = listing(kb, token, "/api/v1/users");
    let names: Vec<Value> = users
        .as_array()
        .expect("users")
        .iter()
        .map(|u| json!([u["name"], u["role"]]))
        .collect();
    let documents: Vec<Value> = docs["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|d| {
            json!([
                d["id"],
                d["filename"],
                d["sha256"],
                d["status"],
                d["chunks"],
                d["pages"]
            ])
        })
        .collect();
    json!({
        "documents": documents,
        "users": names,
        "rankings": rankings(kb, token, collection),
    })
}

#[test]
fn a_backup_during_ingestion_restores_the_same_knowledge_base_elsewhere() {
    let kb = Kb::start_with(with_stories(Setup::new()));
    kb.collection(&kb.admin, json!({"name": "library"}));
    kb.collection(&kb.alice, json!({"name": "incoming"}));
    load(&kb, "library", DOCS);

    // An API key, and a chat with two questions.
    let key: Value = kb
        .call(
            Method::POST,
            &kb.alice,
            "/api/v1/keys",
            Some(json!({"name": "scripts"})),
        )
        .json()
        .expect("json");
    let key = key["key"].as_str().expect("key").to_string();
    let chat: Value = kb
        .call(Method::POST, &kb.admin, "/api/v1/chats", None)
        .json()
        .expect("json");
    let chat_id = chat["id"].as_i64().expect("chat id");
    for q in ["What do ducks eat?", "Where do they live?"] {
        let resp = kb.call(
            Method::POST,
            &kb.admin,
            "/api/v1/ask",
            Some(json!({"question": q, "chat": chat_id, "collections": ["library"], "max_tokens": 8})),
        );
        assert_eq!(resp.status(), 200, "{}", resp.text().unwrap_or_default());
    }
    let chat_before = listing(&kb, &kb.admin, &format!("/api/v1/chats/{chat_id}"));
    let before = state(&kb, &kb.admin, "library");
    assert!(
        before["rankings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| !r["hits"].as_array().unwrap().is_empty()),
        "every query finds something: {before}"
    );

    // Ingestion keeps running while the backup is taken.
    let uploads: Vec<i64> = MORE
        .iter()
        .map(|f| kb.upload(&kb.alice, "incoming", &doc(f).to_string_lossy()))
        .collect();
    let target = kb.setup.data_dir().parent().unwrap().join("archives");
    let secret = passphrase_file(
        kb.setup.data_dir().parent().unwrap(),
        "correct horse battery staple",
    );
    let resp = kb.call(
        Method::POST,
        &kb.admin,
        "/api/v1/backups",
        Some(json!({"target": target, "passphrase_file": secret})),
    );
    assert_eq!(resp.status(), 201, "{}", resp.text().unwrap_or_default());
    let created: Value = resp.json().expect("json");
    assert_eq!(created["encrypted"], true);
    assert_eq!(created["secrets_included"], true);
    assert_eq!(created["indexes"], "include");
    let archive = created["location"].as_str().expect("location").to_string();
    assert!(archive.ends_with(".tar.zst.age"), "{archive}");
    for id in &uploads {
        kb.settle(&kb.admin, *id);
    }

    // The backup shows in the API, /metrics and the audit log.
    let status = listing(&kb, &kb.admin, "/api/v1/backups");
    assert_eq!(
        status["last_success"]["location"],
        archive.as_str(),
        "{status}"
    );
    let metrics = kb.get(&kb.admin, "/metrics").text().unwrap();
    let size_line = format!(
        "sparkbrain_backup_last_size_bytes {}",
        created["size_bytes"]
    );
    assert!(metrics.contains(&size_line), "{size_line} not in /metrics");
    assert!(metrics.contains("sparkbrain_backup_failures_total 0"));
    let audit = listing(&kb, &kb.admin, "/api/v1/audit?action=backup.create");
    assert_eq!(audit[0]["outcome"], "allowed", "{audit}");
    // Non-admins may neither take nor list backups.
    let resp = kb.call(Method::POST, &kb.alice, "/api/v1/backups", None);
    assert_eq!(resp.status(), 403);
    assert_eq!(kb.get(&kb.carol, "/api/v1/backups").status(), 403);

    // Restore into a new data directory on the same machine, and start there.
    let elsewhere = with_stories(Setup::new());
    elsewhere.write_config(None);
    let out = backup_cmd(
        &elsewhere,
        &[
            "restore",
            &archive,
            "--passphrase-file",
            secret.to_str().unwrap(),
            "--yes",
        ],
    );
    assert!(out.status.success());
    let restored = elsewhere.start();
    restored.wait_ready();
    let admin = restored.token("admin", ADMIN_PASSWORD);
    let alice = restored.token("alice", "alice-password-1");
    let kb2 = Kb {
        setup: elsewhere,
        daemon: restored,
        admin: admin.clone(),
        alice: alice.clone(),
        bob: String::new(),
        carol: String::new(),
    };
    assert_eq!(state(&kb2, &admin, "library"), before);
    assert_eq!(
        listing(&kb2, &admin, &format!("/api/v1/chats/{chat_id}")),
        chat_before
    );
    // The API key made before the backup works on the restored daemon.
    let resp = kb2.get(&key, "/api/v1/collections");
    assert_eq!(
        resp.status(),
        200,
        "the API key survives an encrypted backup"
    );
    // Documents uploaded during the backup: each the archive holds is complete and searchable.
    let incoming = listing(&kb2, &admin, "/api/v1/collections/incoming/documents");
    for d in incoming["documents"].as_array().unwrap() {
        let id = d["id"].as_i64().unwrap();
        let settled = kb2.settle(&admin, id);
        assert_eq!(settled["status"], "indexed", "{settled}");
    }
    assert!(!QUERIES.is_empty());
    // The restored daemon confirmed the restore: nothing kept aside.
    eventually(
        Duration::from_secs(10),
        "the kept-aside data removed",
        || !kb2.setup.data_dir().join(".restore-old").exists(),
    );
}
