//! Damaged, truncated, wrongly keyed and too-new archives are refused before anything is
//! touched; a restore killed at any moment leaves the old data or the new, never a mix.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::util::Kb;
use crate::{backup_cmd, load, passphrase_file};

/// Every file under the data directory with its SHA-256, except the lock file.
fn fingerprint(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = walkdir::WalkDir::new(dir)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.file_name() != "sparkbrain.lock")
        .map(|e| {
            let bytes = std::fs::read(e.path()).unwrap();
            (
                e.path().strip_prefix(dir).unwrap().display().to_string(),
                hex::encode(Sha256::digest(&bytes)),
            )
        })
        .collect();
    out.sort();
    out
}

fn only_archive(dir: &Path) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains(".tar.zst"))
        .collect();
    found.sort();
    found.pop().expect("an archive")
}

fn filenames(kb: &Kb) -> Vec<String> {
    let docs: Value = kb
        .get(&kb.admin, "/api/v1/collections/shelf/documents")
        .json()
        .unwrap();
    let mut names: Vec<String> = docs["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["filename"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// A daemon with a collection `shelf` of two indexed documents.
fn shelf_of_two() -> Kb {
    let kb = Kb::start();
    kb.collection(&kb.admin, json!({"name": "shelf"}));
    load(
        &kb,
        "shelf",
        &["docling/md/sources/wiki.md", "debian/choosing.en.html"],
    );
    kb
}

fn stop(kb: &mut Kb) {
    kb.daemon.terminate();
    kb.daemon.wait_exit(Duration::from_secs(30));
}

#[test]
fn damaged_truncated_wrongly_keyed_and_newer_archives_are_refused_and_nothing_is_touched() {
    let mut kb = shelf_of_two();
    stop(&mut kb);
    let work = kb.setup.data_dir().parent().unwrap().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let secret = passphrase_file(&work, "a long and secret passphrase");
    let wrong = passphrase_file(&work, "not it");
    // Daemon stopped: the command takes the backup itself.
    let target = work.join("archives");
    let out = backup_cmd(
        &kb.setup,
        &[
            "create",
            "--to",
            target.to_str().unwrap(),
            "--passphrase-file",
            secret.to_str().unwrap(),
        ],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("includes the secrets"));
    let archive = only_archive(&target);
    let ok = backup_cmd(
        &kb.setup,
        &[
            "verify",
            archive.to_str().unwrap(),
            "--passphrase-file",
            secret.to_str().unwrap(),
        ],
    );
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("2 documents"));

    let data = kb.setup.data_dir();
    let before = fingerprint(&data);
    let bytes = std::fs::read(&archive).unwrap();
    let mut flipped = bytes.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x01;
    let cases: Vec<(&str, Vec<u8>, &Path, u8, &str)> = vec![
        ("flipped", flipped, &secret, 20, "damaged"),
        (
            "truncated",
            bytes[..bytes.len() * 2 / 3].to_vec(),
            &secret,
            20,
            "damaged",
        ),
        (
            "wrong-key",
            bytes.clone(),
            &wrong,
            22,
            "passphrase does not decrypt",
        ),
        (
            "no-key",
            bytes.clone(),
            Path::new(""),
            22,
            "--passphrase-file",
        ),
    ];
    for (name, content, key, code, message) in cases {
        let path = work.join(format!("{name}.tar.zst.age"));
        std::fs::write(&path, content).unwrap();
        let mut args = vec!["restore", path.to_str().unwrap(), "--yes"];
        if !key.as_os_str().is_empty() {
            args.extend(["--passphrase-file", key.to_str().unwrap()]);
        }
        let out = backup_cmd(&kb.setup, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(i32::from(code)), "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
        assert_eq!(
            fingerprint(&data),
            before,
            "{name} changed the data directory"
        );
        let verify = backup_cmd(&kb.setup, &[&["verify"], &args[1..2], &args[3..]].concat());
        assert_eq!(verify.status.code(), Some(i32::from(code)), "verify {name}");
    }

    // An archive from a newer sparkbrain is refused by its header, with what to do.
    let newer = work.join("newer.tar.zst");
    let header = json!({"format_version": 99, "sparkbrain_version": "9.0.0"}).to_string();
    write_raw_archive(&newer, &[("sparkbrain-backup.json", header.as_bytes())]);
    let out = backup_cmd(&kb.setup, &["restore", newer.to_str().unwrap(), "--yes"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(21), "{stderr}");
    assert!(
        stderr.contains("format version 99") && stderr.contains("9.0.0"),
        "{stderr}"
    );
    // A tar of something else is not a sparkbrain archive.
    let foreign = work.join("foreign.tar.zst");
    write_raw_archive(&foreign, &[("data/notes.txt", b"hello")]);
    let out = backup_cmd(&kb.setup, &["restore", foreign.to_str().unwrap(), "--yes"]);
    assert_eq!(out.status.code(), Some(20));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a sparkbrain backup"));
    assert_eq!(fingerprint(&data), before);

    // A running daemon is not restored over.
    kb.restart_stopped();
    let out = backup_cmd(
        &kb.setup,
        &[
            "restore",
            archive.to_str().unwrap(),
            "--passphrase-file",
            secret.to_str().unwrap(),
            "--yes",
        ],
    );
    assert_eq!(out.status.code(), Some(23));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--stop-service"));
    assert_eq!(filenames(&kb), ["choosing.en.html", "wiki.md"]);
}

/// A tar + zstd file with these members, as another tool (or a newer sparkbrain) writes it.
fn write_raw_archive(path: &Path, members: &[(&str, &[u8])]) {
    let file = std::fs::File::create(path).unwrap();
    let zstd = zstd::stream::write::Encoder::new(file, 3)
        .unwrap()
        .auto_finish();
    let mut tar = tar::Builder::new(zstd);
    for (name, body) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o600);
        tar.append_data(&mut h, name, *body).unwrap();
    }
    tar.into_inner().unwrap().flush().unwrap();
}

#[test]
fn a_restore_killed_at_any_moment_leaves_the_old_data_or_the_new() {
    let mut kb = shelf_of_two();
    let work = kb.setup.data_dir().parent().unwrap().join("work");
    let a_dir = work.join("a");
    let b_dir = work.join("b");
    let take = |kb: &Kb, dir: &Path| {
        let resp = kb.call(
            reqwest::Method::POST,
            &kb.admin,
            "/api/v1/backups",
            Some(json!({"target": dir})),
        );
        assert_eq!(resp.status(), 201, "{}", resp.text().unwrap_or_default());
        only_archive(dir)
    };
    let a = take(&kb, &a_dir);
    let state_a = filenames(&kb);
    load(
        &kb,
        "shelf",
        &[
            "debian/fhs-3.0.pdf",
            "docling/docx/sources/word_sample.docx",
        ],
    );
    let b = take(&kb, &b_dir);
    let state_b = filenames(&kb);
    assert_ne!(state_a, state_b);
    stop(&mut kb);

    // How long a whole restore takes here, to spread the kills over it.
    let started = Instant::now();
    let out = backup_cmd(&kb.setup, &["restore", a.to_str().unwrap(), "--yes"]);
    assert!(out.status.success());
    let whole = started.elapsed();
    kb.restart_stopped();
    assert_eq!(filenames(&kb), state_a);
    stop(&mut kb);

    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let mut current = state_a.clone();
    let mut switched = 0;
    for round in 0..8 {
        let (archive, other) = if current == state_a {
            (&b, &state_b)
        } else {
            (&a, &state_a)
        };
        let mut child = kb
            .setup
            .command()
            .args(["backup", "restore", archive.to_str().unwrap(), "--yes"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let delay = whole.mul_f64((rng.next_u32() % 1000) as f64 / 1000.0);
        std::thread::sleep(delay);
        let _ = child.kill();
        let _ = child.wait();
        // The daemon finishes or discards the interrupted restore before it opens anything.
        kb.restart_stopped();
        let now = filenames(&kb);
        assert!(
            now == state_a || now == state_b,
            "round {round} (killed after {delay:?}): {now:?} is neither {state_a:?} nor {state_b:?}"
        );
        for name in &now {
            let hits = kb.hits(
                &kb.admin,
                json!({"query": name.split('.').next().unwrap(), "mode": "text", "top_k": 50}),
            );
            assert!(
                hits.iter()
                    .all(|h| now.contains(&h["filename"].as_str().unwrap().to_string())),
                "round {round}: a hit from a document that is not there"
            );
        }
        if &now == other {
            switched += 1;
        }
        current = now;
        stop(&mut kb);
    }
    eprintln!("{switched} of 8 killed restores had already swapped the new data in");
}
