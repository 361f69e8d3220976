//! Configuration errors name the layer (file or variable), the key path and what was expected,
//! and exit with status 78 (EX_CONFIG) from both `config check` and `serve`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{Setup, bare_command, free_port};
use crate::support::{connection_refused, run_limited, stderr, stdout};

const EX_CONFIG: i32 = 78;

/// A file with a harmless data_dir and bind (in case `serve` wrongly accepted it) and `body`.
fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    let text = format!(
        "data_dir = {:?}\n{body}",
        dir.join("data").display().to_string()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// Runs `config check FILE` and `serve --config FILE` with `env`; both must exit 78 with a
/// stderr line that starts with `expected_prefix` (after the `sparkbrain: error: ` tag).
/// Returns that line from `serve`.
fn assert_both_fail(file: &Path, env: &[(&str, &str)], expected_prefix: &str) -> String {
    let mut check = bare_command();
    check
        .args(["config", "check"])
        .arg(file)
        .envs(env.iter().copied());
    let mut serve = bare_command();
    serve
        .arg("--config")
        .arg(file)
        .arg("serve")
        .envs(env.iter().copied());
    let mut last = String::new();
    for (what, cmd) in [("config check", &mut check), ("serve", &mut serve)] {
        let out = run_limited(cmd, Duration::from_secs(20));
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(EX_CONFIG),
            "{what}: wrong exit status; stderr:\n{err}"
        );
        let line = err
            .lines()
            .find_map(|l| l.strip_prefix("sparkbrain: error: "))
            .unwrap_or_else(|| panic!("{what}: no error line in stderr:\n{err}"));
        assert!(
            line.starts_with(expected_prefix),
            "{what}: expected the error to start with\n  {expected_prefix}\ngot\n  {line}"
        );
        last = line.to_string();
    }
    last
}

#[test]
fn unknown_key_is_named_with_the_valid_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "c.toml", "[server]\nbindd = \"x\"\n");
    let line = assert_both_fail(
        &file,
        &[],
        &format!(
            "{}: server.bindd: unknown key (expected one of ",
            file.display()
        ),
    );
    // The expectation lists the keys that do exist in [server].
    for key in ["`bind`", "`shutdown_grace_seconds`", "`max_body_bytes`"] {
        assert!(line.contains(key), "{line}");
    }
}

#[test]
fn wrong_type_names_key_and_expected_type() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "c.toml",
        "[server]\nshutdown_grace_seconds = \"soon\"\n",
    );
    let line = assert_both_fail(
        &file,
        &[],
        &format!(
            "{}: server.shutdown_grace_seconds: invalid type: string \"soon\", expected a whole number (0 or more)",
            file.display()
        ),
    );
    assert!(!line.contains("u64"), "Rust type name leaked: {line}");
}

#[test]
fn bad_address_names_key_and_expected_form() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "c.toml", "[server]\nbind = \"localhost\"\n");
    assert_both_fail(
        &file,
        &[],
        &format!(
            "{}: server.bind: invalid address \"localhost\": expected IP:PORT",
            file.display()
        ),
    );
}

#[test]
fn missing_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("absent.toml");
    let line = assert_both_fail(&file, &[], &format!("{}: file not found", file.display()));
    assert_eq!(line, format!("{}: file not found", file.display()));
}

#[test]
fn toml_syntax_error_has_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    // write() puts data_dir on line 1, so the value-less `bind =` is on line 3; the value is
    // missing right after "bind = ", at column 8.
    let file = write(dir.path(), "c.toml", "[server]\nbind = \n");
    assert_both_fail(
        &file,
        &[],
        &format!("{}: not valid TOML: line 3, column 8", file.display()),
    );
}

#[test]
fn environment_variable_with_wrong_type_is_named() {
    let setup = Setup::new();
    let file = setup.write_config(None);
    let line = assert_both_fail(
        &file,
        &[("SPARKBRAIN_AUTH__LOGIN_WINDOW_SECONDS", "ten")],
        "environment variable SPARKBRAIN_AUTH__LOGIN_WINDOW_SECONDS: auth.login_window_seconds: invalid value \"ten\": expected an integer",
    );
    // The file is fine; the error must not blame it.
    assert!(
        !line.contains(&file.display().to_string()),
        "blames the file: {line}"
    );
}

#[test]
fn unknown_environment_key_is_named() {
    let setup = Setup::new();
    let file = setup.write_config(None);
    assert_both_fail(
        &file,
        &[("SPARKBRAIN_SERVER__BINDD", "127.0.0.1:1")],
        "environment variable SPARKBRAIN_SERVER__BINDD: server.bindd: unknown configuration key",
    );
}

#[test]
fn default_config_is_valid_toml_and_passes_check() {
    let out = run_limited(
        bare_command().args(["config", "default"]),
        Duration::from_secs(20),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let table: toml::Table = text.parse().expect("`config default` is not valid TOML");
    assert_eq!(table["server"]["bind"].as_str(), Some("127.0.0.1:8470"));
    for section in [
        "server", "tls", "auth", "metrics", "runtime", "models", "log",
    ] {
        assert!(table[section].is_table(), "no [{section}] in the default");
    }

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("default.toml");
    std::fs::write(&file, &text).unwrap();
    let out = run_limited(
        bare_command().args(["config", "check"]).arg(&file),
        Duration::from_secs(20),
    );
    assert!(
        out.status.success(),
        "check of the default failed: {}",
        stderr(&out)
    );
    assert!(
        stdout(&out).starts_with(&format!("{}: OK", file.display())),
        "{}",
        stdout(&out)
    );
}

#[test]
fn flag_beats_environment_beats_file() {
    let mut setup = Setup::new();
    let flag_port = setup.port;
    let file_port = free_port();
    let env_port = free_port();
    assert!(flag_port != file_port && file_port != env_port && flag_port != env_port);
    // The file names one port; the harness waits on `setup.port`, which only the flag names.
    setup.bind = format!("127.0.0.1:{file_port}");
    setup.write_config(None);
    let daemon = setup.start_with(|cmd| {
        cmd.env("SPARKBRAIN_SERVER__BIND", format!("127.0.0.1:{env_port}"))
            .arg("--bind")
            .arg(format!("127.0.0.1:{flag_port}"));
    });
    let resp = daemon
        .client()
        .get(format!("http://127.0.0.1:{flag_port}/healthz"))
        .send()
        .expect("healthz on the flag's port");
    assert_eq!(resp.status(), 200);
    assert!(
        connection_refused(env_port),
        "listening on the environment's port"
    );
    assert!(
        connection_refused(file_port),
        "listening on the file's port"
    );
}
