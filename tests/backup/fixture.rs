//! An archive written by format version 1 (tests/fixtures/backup/format-v1.tar.zst: one
//! collection `pinned` with one text document, its indexes, an admin) still verifies and
//! restores: the format is pinned, and a newer schema migrates the restored database.

use serde_json::{Value, json};

use crate::backup_cmd;
use crate::common::Setup;

#[test]
fn a_format_1_archive_verifies_and_restores() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/backup/format-v1.tar.zst");
    let setup = Setup::new();
    setup.write_config(None);
    let out = backup_cmd(&setup, &["verify", fixture.to_str().unwrap()]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("format 1, schema 4"), "{stdout}");
    assert!(stdout.contains("1 documents, 1 chunks"), "{stdout}");

    let out = backup_cmd(&setup, &["restore", fixture.to_str().unwrap(), "--yes"]);
    assert!(out.status.success());
    let daemon = setup.start();
    daemon.wait_ready();
    let token = daemon.token("admin", "fixture-admin-password");
    let hits: Value = daemon
        .client()
        .post(daemon.url("/api/v1/search"))
        .bearer_auth(&token)
        .json(&json!({"query": "lighthouse keeper harbour ships", "collections": ["pinned"]}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(hits["hits"][0]["filename"], "keeper.txt", "{hits}");
    let content = daemon
        .client()
        .get(daemon.url(&format!(
            "/api/v1/documents/{}/content",
            hits["hits"][0]["document"]
        )))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(content.contains("lighthouse keeper"), "{content}");
    let audit: Value = daemon
        .client()
        .get(daemon.url("/api/v1/audit?action=backup.restore"))
        .bearer_auth(&token)
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(audit[0]["outcome"], "allowed", "{audit}");
    assert!(
        audit[0]["actor"].as_str().unwrap().starts_with("local:"),
        "{audit}"
    );
}
