//! Backups to an S3-compatible server: moto_server (from PyPI, installed by `just deps`)
//! started on loopback, reached over real HTTP with signed requests, multipart uploads for
//! archives larger than a part, listing, retention, verify and restore from `s3://`.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Setup, free_port};
use crate::util::{Kb, with_stories};
use crate::{backup_cmd, load};

struct Moto {
    child: Child,
    port: u16,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn moto() -> Moto {
    let port = free_port();
    let child = Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("moto_server (pip install 'moto[server]'; `just deps` installs it)");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "moto_server did not listen");
        std::thread::sleep(Duration::from_millis(100));
    }
    Moto { child, port }
}

const S3_SECTION: &str = "[backup]\ntarget = \"s3://vault/nightly\"\nkeep_last = 2\n\n[backup.s3]\nendpoint = \"http://127.0.0.1:{port}\"\nregion = \"us-east-1\"\naccess_key_id = \"testing\"\nsecret_access_key_file = \"{secret}\"\nallow_http = true\npart_size_mib = 5\n";

#[test]
fn backups_go_to_s3_in_parts_are_pruned_and_restore_from_there() {
    let server = moto();
    let endpoint = format!("http://127.0.0.1:{}", server.port);
    let http = reqwest::blocking::Client::new();
    let created = http.put(format!("{endpoint}/vault")).send().unwrap();
    assert!(
        created.status().is_success(),
        "create bucket: {}",
        created.status()
    );

    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("s3-secret");
    std::fs::write(&secret, "testing\n").unwrap();
    let section = S3_SECTION
        .replace("{port}", &server.port.to_string())
        .replace("{secret}", secret.to_str().unwrap());
    let kb = Kb::start_with(with_stories(Setup::new()).with(&section));
    kb.collection(&kb.admin, json!({"name": "shelf"}));
    load(&kb, "shelf", &["docling/md/sources/wiki.md"]);
    // A large file that is stored but cannot be read as a PDF: 7 MB that do not compress, so
    // the archive needs two parts of 5 MiB.
    let mut noise = b"%PDF-1.7\n".to_vec();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while noise.len() < 7_000_000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    let resp = kb.upload_bytes(&kb.admin, "shelf", "noise.pdf", noise, None);
    assert_eq!(resp.status(), 202);
    let id = resp.json::<Value>().unwrap()["id"].as_i64().unwrap();
    assert_eq!(kb.settle(&kb.admin, id)["status"], "failed");

    // Three backups through the command line (as the timer's service runs it), keep_last = 2.
    let mut names = Vec::new();
    for _ in 0..3 {
        let out = backup_cmd(&kb.setup, &["create", "--scheduled", "--json"]);
        assert!(out.status.success());
        let created: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(
            created["size_bytes"].as_u64().unwrap() > 7_000_000,
            "{created}"
        );
        names.push(created["name"].as_str().unwrap().to_string());
        // Archive names have a resolution of one second.
        std::thread::sleep(Duration::from_millis(1100));
    }
    let out = backup_cmd(&kb.setup, &["list", "--json"]);
    assert!(out.status.success());
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let listed: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        listed,
        [names[2].as_str(), names[1].as_str()],
        "the oldest was pruned"
    );
    // The archive went up in parts: S3 marks multipart ETags with the part count.
    let head = http
        .head(format!("{endpoint}/vault/nightly/{}", names[2]))
        .send()
        .unwrap();
    let etag = head.headers()["etag"].to_str().unwrap().to_string();
    assert!(etag.trim_matches('"').ends_with("-2"), "etag {etag}");
    let status: Value = kb.get(&kb.admin, "/api/v1/backups").json().unwrap();
    assert_eq!(status["target"], "s3://vault/nightly");
    assert_eq!(status["backups"].as_array().unwrap().len(), 2, "{status}");

    // Verify and restore straight from the bucket into another data directory.
    let url = format!("s3://vault/nightly/{}", names[2]);
    let out = backup_cmd(&kb.setup, &["verify", &url]);
    assert!(out.status.success());
    let elsewhere = with_stories(Setup::new()).with(&section);
    elsewhere.write_config(None);
    let out = backup_cmd(&elsewhere, &["restore", &url, "--yes"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("held no secrets"),
        "an unencrypted archive says what it left out"
    );
    let restored = elsewhere.start();
    restored.wait_ready();
    let admin = restored.token("admin", crate::common::ADMIN_PASSWORD);
    let docs: Value = restored
        .client()
        .get(restored.url("/api/v1/collections/shelf/documents"))
        .bearer_auth(&admin)
        .send()
        .unwrap()
        .json()
        .unwrap();
    let mut got: Vec<(String, String)> = docs["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["filename"].as_str().unwrap().to_string(),
                d["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("noise.pdf".to_string(), "failed".to_string()),
            ("wiki.md".to_string(), "indexed".to_string())
        ]
    );

    // An unreachable bucket fails the backup with the server's reason, counted in /metrics.
    let resp = kb.call(
        reqwest::Method::POST,
        &kb.admin,
        "/api/v1/backups",
        Some(json!({"target": "s3://no-such-bucket/x"})),
    );
    assert_eq!(resp.status(), 502);
    let metrics = kb.get(&kb.admin, "/metrics").text().unwrap();
    assert!(
        metrics.contains("sparkbrain_backup_failures_total 1"),
        "{metrics}"
    );
}
