//! The `volume` capability on this host: real cryptsetup, blkid and mkfs on image files, and a
//! real daemon in the locked state. This host's kernel has no device-mapper, so opening a
//! volume fails here with the error that names it; the whole path (open, mount, unlock over the
//! API, data on the volume) runs in the VM harness (`tests/vm/`, `just test-vm`).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::Setup;

fn tool(name: &str) -> Option<PathBuf> {
    ["/usr/sbin", "/sbin", "/usr/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// cryptsetup, blkid and mkfs.ext4 come with `just deps`; a machine without them cannot run
/// these tests, and says so rather than passing.
fn require_tools() {
    for t in ["cryptsetup", "blkid", "mkfs.ext4", "wipefs"] {
        assert!(
            tool(t).is_some(),
            "{t} is missing: run `just deps` (installs cryptsetup-bin, util-linux, e2fsprogs)"
        );
    }
}

fn dm_available() -> bool {
    Path::new("/dev/mapper/control").exists()
}

/// A setup whose volume registry and keys live in its temporary folder.
fn setup(data_volume: &str) -> Setup {
    let s = Setup::new();
    let registry = s.dir.path().join("etc/volumes.toml");
    let keys = s.dir.path().join("etc/keys");
    let extra = format!(
        "[volume]\ndata = {data_volume:?}\nregistry = {:?}\nkeys_dir = {:?}\npbkdf_memory_kib = 32768\npbkdf_iterations = 4\npbkdf_parallel = 1\n",
        registry.display().to_string(),
        keys.display().to_string()
    );
    let s = s.with(&extra);
    s.write_config(None);
    s
}

fn run(s: &Setup, args: &[&str], stdin: &str) -> Output {
    let mut child = s
        .command()
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sparkbrain");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("sparkbrain")
}

fn image(s: &Setup, name: &str) -> PathBuf {
    let path = s.dir.path().join(name);
    let f = std::fs::File::create(&path).expect("image");
    f.set_len(64 << 20).expect("size image");
    path
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn blkid_type(path: &Path) -> String {
    let out = Command::new(tool("blkid").expect("blkid"))
        .args(["-p", "-o", "value", "-s", "TYPE"])
        .arg(path)
        .output()
        .expect("blkid");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn create_refuses_a_disk_with_a_filesystem_unless_forced() {
    require_tools();
    let s = setup("");
    let disk = image(&s, "disk.img");
    let mkfs = Command::new(tool("mkfs.ext4").expect("mkfs"))
        .args(["-q", "-F"])
        .arg(&disk)
        .status()
        .expect("mkfs");
    assert!(mkfs.success());
    let disk_arg = disk.display().to_string();

    // No terminal to confirm on, and no --yes.
    let out = run(
        &s,
        &["volume", "create", &disk_arg, "--name", "data"],
        "pw-1\n",
    );
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("--yes"), "{}", stderr(&out));

    let out = run(
        &s,
        &["volume", "create", &disk_arg, "--name", "data", "--yes"],
        "pw-1\n",
    );
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("an ext4 filesystem") && stderr(&out).contains("--force"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        blkid_type(&disk),
        "ext4",
        "the refused create changed the disk"
    );

    let out = run(
        &s,
        &[
            "volume", "create", &disk_arg, "--name", "data", "--yes", "--force",
        ],
        "pw-1\n",
    );
    assert_eq!(blkid_type(&disk), "crypto_LUKS", "{}", stderr(&out));
    if dm_available() {
        // A host with device-mapper and root goes on to open and mount; the VM covers it.
        return;
    }
    assert_eq!(out.status.code(), Some(15), "{}", stderr(&out));
    assert!(stderr(&out).contains("device-mapper"), "{}", stderr(&out));
    let registry = s.dir.path().join("etc/volumes.toml");
    assert!(
        !registry.exists(),
        "a volume that could not be opened was recorded"
    );
}

#[test]
fn unknown_volumes_and_names_get_their_own_exit_codes() {
    require_tools();
    let s = setup("");
    let out = run(&s, &["volume", "unlock", "nosuch"], "pw\n");
    assert_eq!(out.status.code(), Some(16), "{}", stderr(&out));
    assert!(stderr(&out).contains("volume create"), "{}", stderr(&out));

    let disk = image(&s, "disk.img");
    let out = run(
        &s,
        &[
            "volume",
            "create",
            &disk.display().to_string(),
            "--name",
            "Bad/Name",
            "--yes",
        ],
        "pw\n",
    );
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("cannot name a volume"),
        "{}",
        stderr(&out)
    );

    let out = run(
        &s,
        &[
            "volume",
            "create",
            "/dev/does-not-exist",
            "--name",
            "data",
            "--yes",
        ],
        "pw\n",
    );
    assert_eq!(out.status.code(), Some(16), "{}", stderr(&out));

    let out = run(&s, &["volume", "status", "--json"], "");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v, serde_json::json!([]));
}

#[test]
fn a_locked_data_volume_serves_only_health_and_unlock_and_writes_nothing() {
    // First an admin, made while data lives on the plain disk; the locked daemon knows admins
    // only from the file the store exports, so export it as a running daemon would.
    let plain = setup("");
    plain.add_user("root-admin", "admin", "correct horse battery");
    let s = setup("data");
    let keys = s.dir.path().join("etc/keys");
    std::fs::create_dir_all(&keys).expect("keys dir");
    let db = plain.data_dir().join("sparkbrain.db");
    let hash = Command::new("python3")
        .args([
            "-c",
            "import sqlite3,sys;print(sqlite3.connect(sys.argv[1]).execute(\"select password_hash from users where name='root-admin'\").fetchone()[0])",
        ])
        .arg(&db)
        .output()
        .expect("python3");
    let hash = String::from_utf8_lossy(&hash.stdout).trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    std::fs::write(
        keys.join("admins.json"),
        serde_json::json!([{"name": "root-admin", "password_hash": hash}]).to_string(),
    )
    .expect("admins.json");

    let daemon = s.start();
    let client = daemon.client();
    let ready = daemon.get("/readyz");
    assert_eq!(ready.status(), 503);
    let body: serde_json::Value = ready.json().expect("json");
    assert!(
        body["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("volume locked") && r.contains("\"data\"")),
        "{body}"
    );
    assert_eq!(daemon.get("/healthz").status(), 200);
    // The console loads, so that it can show the unlock form.
    let page = daemon.get("/");
    assert_eq!(page.status(), 200);
    assert!(page.text().expect("page").contains("/console/"));
    for path in ["/api/v1/collections", "/api/v1/auth/me", "/v1/models"] {
        let r = daemon.get(path);
        assert_eq!(r.status(), 503, "{path}");
        let p: serde_json::Value = r.json().expect("problem");
        assert_eq!(p["code"], "volume-locked", "{path}: {p}");
    }

    let unlock = daemon.url("/api/v1/volumes/data/unlock");
    let r = client
        .post(&unlock)
        .json(&serde_json::json!({"passphrase": "x"}))
        .send()
        .expect("unlock");
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .is_ok_and(|v| v.starts_with("Basic")),
    );
    let r = client
        .post(&unlock)
        .basic_auth("root-admin", Some("wrong password"))
        .json(&serde_json::json!({"passphrase": "x"}))
        .send()
        .expect("unlock");
    assert_eq!(r.status(), 401);
    // An admin, but the volume was never created: the answer says how to create it.
    let r = client
        .post(&unlock)
        .basic_auth("root-admin", Some("correct horse battery"))
        .json(&serde_json::json!({"passphrase": "x"}))
        .send()
        .expect("unlock");
    assert_eq!(r.status(), 404);
    let p: serde_json::Value = r.json().expect("problem");
    assert!(
        p["detail"]
            .as_str()
            .is_some_and(|d| d.contains("volume create")),
        "{p}"
    );
    let r = client
        .post(&unlock)
        .basic_auth("root-admin", Some("correct horse battery"))
        .body("{not json")
        .header("content-type", "application/json")
        .send()
        .expect("unlock");
    assert_eq!(r.status(), 400);

    let out = run(&s, &["status"], "");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the data volume is locked"),
        "{}",
        stderr(&out)
    );
    // Nor may the command line open a store on the unencrypted disk meanwhile.
    let out = run(&s, &["user", "list"], "");
    assert_eq!(out.status.code(), Some(10), "{}", stderr(&out));
    assert!(stderr(&out).contains("unlock it first"), "{}", stderr(&out));
    assert!(
        !s.data_dir().exists(),
        "the locked daemon or CLI created {} on the unencrypted disk",
        s.data_dir().display()
    );
    // Repeated failures are throttled.
    let mut last = 0;
    for _ in 0..6 {
        last = client
            .post(&unlock)
            .basic_auth("root-admin", Some("guess"))
            .json(&serde_json::json!({"passphrase": "x"}))
            .send()
            .expect("unlock")
            .status()
            .as_u16();
    }
    assert_eq!(last, 429);
}
