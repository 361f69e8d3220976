//! The SQLite store as a user finds it on disk: migrated on first start, a newer schema refused
//! without touching the file, and `status` on a stopped data directory.

use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

use crate::common::Setup;
use crate::support::{run_limited, stderr, stdout, stop};

fn db_path(setup: &Setup) -> std::path::PathBuf {
    setup.data_dir().join("sparkbrain.db")
}

#[test]
fn first_start_creates_and_migrates_the_database() {
    let setup = Setup::new();
    setup.write_config(None);
    assert!(!setup.data_dir().exists());
    let _daemon = setup.start();

    // Read-only beside the running daemon (WAL allows it).
    let conn = Connection::open_with_flags(db_path(&setup), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open database");
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, sparkbrain::store::SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap();
    let tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for table in [
        "users",
        "api_keys",
        "audit_log",
        "refresh_tokens",
        "schema_migrations",
        "collections",
        "documents",
        "chunks",
        "index_changes",
    ] {
        assert!(
            tables.iter().any(|t| t == table),
            "no table {table}: {tables:?}"
        );
    }
    let recorded: Vec<u32> = conn
        .prepare("SELECT version FROM schema_migrations ORDER BY version")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let every: Vec<u32> = (1..=sparkbrain::store::SCHEMA_VERSION).collect();
    assert_eq!(recorded, every);
}

#[test]
fn newer_schema_is_refused_and_left_untouched() {
    let setup = Setup::new();
    setup.write_config(None);
    let mut daemon = setup.start();
    daemon.wait_ready();
    stop(&mut daemon, Duration::from_secs(15));

    let path = db_path(&setup);
    {
        let conn = Connection::open(&path).expect("open database");
        conn.pragma_update(None, "user_version", 99).unwrap();
    }
    let before = Sha256::digest(std::fs::read(&path).unwrap());

    let out = run_limited(setup.command().arg("serve"), Duration::from_secs(30));
    let err = stderr(&out);
    assert!(!out.status.success(), "serve started on a newer schema");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!(
            "the database {} has schema version 99, newer than this sparkbrain knows ({})",
            path.display(),
            sparkbrain::store::SCHEMA_VERSION
        )),
        "stderr:\n{err}"
    );

    // Byte for byte the same file, still at version 99.
    assert_eq!(
        Sha256::digest(std::fs::read(&path).unwrap()),
        before,
        "the database was modified"
    );
    let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let version: u32 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 99);
}

#[test]
fn status_on_a_stopped_data_dir_says_not_running() {
    let setup = Setup::new();
    setup.write_config(None);
    // Start and stop once, so the lock file and database exist but nobody holds the lock.
    let mut daemon = setup.start();
    daemon.wait_ready();
    stop(&mut daemon, Duration::from_secs(15));
    assert!(setup.data_dir().join("sparkbrain.lock").exists());

    let out = run_limited(setup.command().arg("status"), Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("daemon:       not running"),
        "{}",
        stdout(&out)
    );
    assert!(
        stderr(&out).contains(&format!(
            "no sparkbrain daemon is running on {}",
            setup.data_dir().display()
        )),
        "{}",
        stderr(&out)
    );

    let out = run_limited(
        setup.command().args(["status", "--json"]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["running"], false, "{json}");
    assert!(json["pid"].is_null(), "{json}");
    assert_eq!(
        json["schema_version"],
        sparkbrain::store::SCHEMA_VERSION,
        "{json}"
    );
}
