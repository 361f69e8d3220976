//! A full disk: the data directory is a small tmpfs, filled until only a little space is left.
//! An upload that does not fit is refused with 507 and a clear message, nothing of it is kept,
//! and the daemon stays healthy; once space is freed, the same upload is stored and indexed.
//!
//! Mounting needs root (CAP_SYS_ADMIN), as in CI; without it the test fails and says so.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::blocking::multipart;
use serde_json::{Value, json};

use crate::common::{Daemon, Setup};
use crate::util::doc;

/// Size of the tmpfs. The model-free data directory (database and WAL, secrets, blobs, the
/// collection's indexes) measured about 0.4 MiB with the first document below and 0.6 MiB at
/// the end; SQLite's WAL may grow to about 4 MiB before a checkpoint. 32 MiB leaves ample room
/// and costs little memory.
const TMPFS_MIB: u64 = 32;
/// Space left free by the filler. Less than the upload below, more than the small writes the
/// daemon makes meanwhile.
const LEFT_FREE: u64 = 32 * 1024;
/// A real document, stored first, that is not disturbed by the full disk.
const FIRST: &str = "debian/basic-defs.en.html";
/// A real document larger than the space left (~100 KB, mostly images: few chunks).
const LARGE: &str = "docling/docx/sources/word_sample.docx";

/// A tmpfs mounted on a folder; unmounted when dropped, also when the test panics.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mount point");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mib}m,mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output();
        let euid = nix::unistd::geteuid();
        match out {
            Ok(o) if o.status.success() => Tmpfs {
                dir: dir.to_path_buf(),
            },
            Ok(o) => panic!(
                "this test needs root (CAP_SYS_ADMIN) to mount a tmpfs as the data directory; \
                 running as uid {euid}, `mount -t tmpfs` failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => panic!(
                "this test needs root and the `mount` command to mount a tmpfs as the data \
                 directory; running as uid {euid}, `mount` could not run: {e}"
            ),
        }
    }

    /// Bytes available to an unprivileged writer.
    fn available(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.dir).expect("statvfs");
        s.blocks_available() as u64 * s.fragment_size() as u64
    }

    /// Bytes in use.
    fn used(&self) -> u64 {
        let s = nix::sys::statvfs::statvfs(&self.dir).expect("statvfs");
        (s.blocks() as u64 - s.blocks_free() as u64) * s.fragment_size() as u64
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: detaches at once even if a daemon still holds a file open there.
        let ok = Command::new("umount")
            .arg("--lazy")
            .arg(&self.dir)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("cannot unmount the tmpfs at {}", self.dir.display());
        }
    }
}

/// Writes zeros to `path` until only `leave` bytes are free on the tmpfs.
fn fill(tmpfs: &Tmpfs, path: &Path, leave: u64) -> u64 {
    let mut file = std::fs::File::create(path).expect("filler");
    let mut todo = tmpfs.available().saturating_sub(leave);
    let total = todo;
    let block = vec![0u8; 1 << 20];
    while todo > 0 {
        let n = todo.min(block.len() as u64) as usize;
        file.write_all(&block[..n]).expect("write filler");
        todo -= n as u64;
    }
    file.sync_all().expect("sync filler");
    total
}

fn upload(daemon: &Daemon, token: &str, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let part = multipart::Part::bytes(bytes).file_name(name.to_string());
    let resp = daemon
        .client()
        .post(daemon.url("/api/v1/collections/full/documents"))
        .bearer_auth(token)
        .multipart(multipart::Form::new().part("file", part))
        .send()
        .unwrap_or_else(|e| panic!("upload of {name}: no answer: {e}\nlog:\n{}", daemon.logs()));
    let status = resp.status().as_u16();
    let text = resp
        .text()
        .unwrap_or_else(|e| panic!("upload of {name}: answer lost: {e}"));
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|_| json!({ "raw": text })),
    )
}

fn get(daemon: &Daemon, token: &str, path: &str) -> Value {
    let resp = daemon
        .client()
        .get(daemon.url(path))
        .bearer_auth(token)
        .send()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(resp.status(), 200, "GET {path}");
    resp.json().expect("json")
}

/// Waits until a document is indexed (or failed) and returns it.
fn settle(daemon: &Daemon, token: &str, id: i64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let d = get(daemon, token, &format!("/api/v1/documents/{id}"));
        if d["status"] == "indexed" || d["status"] == "failed" {
            return d;
        }
        assert!(
            Instant::now() < deadline,
            "document {id} stuck: {d}\nlog:\n{}",
            daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The blob files' names (content hashes), and what is left in `blobs/tmp`.
fn blobs(data: &Path) -> (BTreeSet<String>, Vec<PathBuf>) {
    let root = data.join("blobs");
    let tmp = files(&root.join("tmp"));
    let stored = files(&root)
        .into_iter()
        .filter(|p| !p.starts_with(root.join("tmp")))
        .map(|p| p.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    (stored, tmp)
}

/// The content hashes of the collection's documents.
fn stored_hashes(daemon: &Daemon, token: &str) -> BTreeSet<String> {
    get(
        daemon,
        token,
        "/api/v1/collections/full/documents?limit=1000",
    )["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["sha256"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_full_disk_refuses_the_upload_with_507_and_keeps_nothing() {
    let started = Instant::now();
    // Declared in this order so they drop in reverse: the daemon stops, the tmpfs is
    // unmounted, then the temporary directory goes.
    let setup = Setup::new();
    let tmpfs = Tmpfs::mount(&setup.data_dir(), TMPFS_MIB);
    setup.write_config(None);
    setup.add_user("alice", "editor", "alice-password-1");
    let daemon = setup.start();
    daemon.wait_ready();
    let token = daemon.token("alice", "alice-password-1");
    let resp = daemon
        .client()
        .post(daemon.url("/api/v1/collections"))
        .bearer_auth(&token)
        .json(&json!({"name": "full"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 201);

    let first = std::fs::read(doc(FIRST)).unwrap();
    let (status, body) = upload(&daemon, &token, "basic-defs.en.html", first);
    assert_eq!(status, 202, "{body}");
    let first_id = body["id"].as_i64().unwrap();
    let first_doc = settle(&daemon, &token, first_id);
    assert_eq!(first_doc["status"], "indexed", "{first_doc}");
    let large = std::fs::read(doc(LARGE)).unwrap();
    assert!(
        large.len() as u64 > 2 * LEFT_FREE,
        "{LARGE} is too small for this test"
    );

    // Fill the disk.
    let data = setup.data_dir();
    let in_use = tmpfs.used();
    let before = get(&daemon, &token, "/api/v1/collections/full");
    let filler = data.join("filler");
    let filled = fill(&tmpfs, &filler, LEFT_FREE);
    let free = tmpfs.available();
    println!(
        "tmpfs {TMPFS_MIB} MiB: {} KiB in use by the daemon, filler {} KiB, {} KiB left; upload of {} KiB",
        in_use / 1024,
        filled / 1024,
        free / 1024,
        large.len() / 1024
    );
    assert!(
        free < large.len() as u64,
        "{free} bytes free: the upload would fit"
    );

    // The upload that does not fit: 507, a clear message, nothing kept.
    let (status, body) = upload(&daemon, &token, "word_sample.docx", large.clone());
    assert_eq!(status, 507, "{body}\nlog:\n{}", daemon.logs());
    let detail = body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("disk") && detail.contains("full"),
        "not clear: {body}"
    );
    println!("507: {detail}");
    let after = get(&daemon, &token, "/api/v1/collections/full");
    assert_eq!(
        after["counts"], before["counts"],
        "the refused upload changed the counts"
    );
    let hashes = stored_hashes(&daemon, &token);
    assert_eq!(hashes.len(), 1);
    let (stored, tmp) = blobs(&data);
    assert_eq!(
        stored, hashes,
        "blob files other than the stored documents'"
    );
    assert!(tmp.is_empty(), "half-written blobs left: {tmp:?}");

    // Still healthy: it answers, is ready, searches, and did not die.
    assert_eq!(daemon.get("/healthz").status(), 200);
    assert_eq!(daemon.get("/readyz").status(), 200);
    let hits = daemon
        .client()
        .post(daemon.url("/api/v1/search"))
        .bearer_auth(&token)
        .json(&json!({"query": "Debian", "collections": ["full"], "mode": "text"}))
        .send()
        .unwrap();
    assert_eq!(hits.status(), 200);
    let hits: Value = hits.json().unwrap();
    assert_eq!(hits["hits"][0]["document"], first_id, "{hits}");

    // Space again: the same upload is stored and indexed.
    std::fs::remove_file(&filler).unwrap();
    let (status, body) = upload(&daemon, &token, "word_sample.docx", large);
    assert_eq!(status, 202, "{body}\nlog:\n{}", daemon.logs());
    assert_eq!(body["duplicate"], false, "{body}");
    let id = body["id"].as_i64().unwrap();
    let indexed = settle(&daemon, &token, id);
    assert_eq!(indexed["status"], "indexed", "{indexed}");
    let hashes = stored_hashes(&daemon, &token);
    assert_eq!(hashes.len(), 2);
    let (stored, tmp) = blobs(&data);
    assert_eq!(stored, hashes);
    assert!(tmp.is_empty(), "{tmp:?}");
    let chunks = first_doc["chunks"].as_i64().unwrap() + indexed["chunks"].as_i64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let c = get(&daemon, &token, "/api/v1/collections/full");
        if c["counts"]["chunks"] == chunks
            && c["index"]["vectors"] == chunks
            && c["index"]["text_chunks"] == chunks
        {
            assert_eq!(c["counts"]["documents"], 2);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expected {chunks} chunks everywhere: {c}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = daemon.logs();
    assert!(!log.contains("panicked"), "the daemon panicked:\n{log}");
    println!(
        "{} KiB in use at the end; took {:?}",
        tmpfs.used() / 1024,
        started.elapsed()
    );
}
