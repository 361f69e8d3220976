//! The command line: `user …`, `completions`, `man`, `--help`, `doctor`.

use std::io::Write;
use std::process::{Output, Stdio};

use serde_json::Value;

use crate::common::{ADMIN_PASSWORD, Setup};
use crate::util::{Env, unauthorized};

/// Runs `sparkbrain --config … ARGS`, feeding `stdin` when given (otherwise stdin is null).
fn run(setup: &Setup, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = setup.command();
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().expect("spawn sparkbrain");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    child.wait_with_output().expect("wait")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn configured() -> Setup {
    let setup = Setup::new();
    setup.write_config(None);
    setup
}

/// `user list --json`, parsed.
fn user_list(setup: &Setup) -> Vec<Value> {
    let out = run(setup, &["user", "list", "--json"], None);
    assert!(out.status.success(), "user list: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).expect("user list --json prints JSON")
}

fn user_names(setup: &Setup) -> Vec<String> {
    user_list(setup)
        .iter()
        .map(|u| u["name"].as_str().expect("name").to_string())
        .collect()
}

#[test]
fn user_add_refuses_bad_input_and_lists_what_it_created() {
    let setup = configured();

    // No terminal to prompt on and no --password-stdin: a clear error, nothing created.
    let out = run(&setup, &["user", "add", "tess"], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--password-stdin"),
        "stderr: {}",
        stderr(&out)
    );

    // Too short a password.
    let out = run(
        &setup,
        &["user", "add", "tess", "--password-stdin"],
        Some("short\n"),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("at least 12"),
        "stderr: {}",
        stderr(&out)
    );

    // A bad name or role.
    let out = run(
        &setup,
        &["user", "add", "../x", "--password-stdin"],
        Some("long-enough-password\n"),
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid user name"),
        "{}",
        stderr(&out)
    );
    let out = run(
        &setup,
        &["user", "add", "tess", "--role", "root", "--password-stdin"],
        Some("long-enough-password\n"),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown role"), "{}", stderr(&out));
    assert!(user_names(&setup).is_empty(), "{:?}", user_list(&setup));

    // Now properly.
    let out = run(
        &setup,
        &[
            "user",
            "add",
            "tess",
            "--role",
            "editor",
            "--password-stdin",
        ],
        Some("long-enough-password\n"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("tess"), "{}", stdout(&out));
    setup.add_user("admin", "admin", ADMIN_PASSWORD);

    // The same name again (in any case) is refused.
    let out = run(
        &setup,
        &["user", "add", "Tess", "--password-stdin"],
        Some("long-enough-password\n"),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already exists"), "{}", stderr(&out));

    let list = user_list(&setup);
    assert_eq!(list.len(), 2, "{list:?}");
    let tess = list.iter().find(|u| u["name"] == "tess").expect("tess");
    assert_eq!(tess["role"], "editor");
    assert_eq!(tess["disabled"], false);
    let admin = list.iter().find(|u| u["name"] == "admin").expect("admin");
    assert_eq!(admin["role"], "admin");
    // The table form lists them too.
    let out = run(&setup, &["user", "list"], None);
    assert!(out.status.success());
    let table = stdout(&out);
    assert!(table.contains("NAME") && table.contains("tess") && table.contains("admin"));
    // No password material is printed.
    assert!(!table.contains("argon2") && !stdout(&out).contains("long-enough-password"));
    assert!(!serde_json::to_string(&list).unwrap().contains("argon2"));
}

#[test]
fn user_commands_work_beside_a_running_daemon() {
    const FIRST: &str = "first-password-for-tests";
    const SECOND: &str = "second-password-for-tests";
    let env = Env::default_start();
    let setup = &env.setup;

    // Added while the daemon runs, and signs in immediately.
    let out = run(
        setup,
        &["user", "add", "carl", "--password-stdin"],
        Some(&format!("{FIRST}\n")),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let pair = env.daemon.login("carl", FIRST);
    let access = pair["access_token"].as_str().unwrap().to_string();
    let refresh = pair["refresh_token"].as_str().unwrap().to_string();
    let me: Value = env.get("/api/v1/auth/me", &access).json().unwrap();
    assert_eq!(me["name"], "carl");
    assert_eq!(me["role"], "viewer");

    // A new password from the CLI: old one fails, new one works, old sessions end.
    let out = run(
        setup,
        &["user", "passwd", "carl", "--password-stdin"],
        Some(&format!("{SECOND}\n")),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    unauthorized(env.try_login("carl", FIRST), None);
    assert_eq!(env.try_login("carl", SECOND).status(), 200);
    unauthorized(env.get("/api/v1/auth/me", &access), Some("invalid_token"));
    unauthorized(
        env.post_json(
            "/api/v1/auth/refresh",
            "",
            &serde_json::json!({ "refresh_token": refresh }),
        ),
        Some("invalid_token"),
    );
    // A too short new password changes nothing.
    let out = run(
        setup,
        &["user", "passwd", "carl", "--password-stdin"],
        Some("short\n"),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("at least 12"), "{}", stderr(&out));
    assert_eq!(env.try_login("carl", SECOND).status(), 200);
    // An unknown user.
    let out = run(
        setup,
        &["user", "passwd", "nobody", "--password-stdin"],
        Some(&format!("{SECOND}\n")),
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nobody"), "{}", stderr(&out));

    // The last admin cannot be removed; other users can.
    let out = run(setup, &["user", "remove", "admin"], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("last enabled admin"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.try_login("admin", ADMIN_PASSWORD).status(), 200);
    let out = run(setup, &["user", "remove", "carl"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    unauthorized(env.try_login("carl", SECOND), None);
    assert_eq!(user_names(setup), ["admin"]);

    // The CLI's changes are in the audit log under the local account.
    let rows = env.audit(&env.admin_token());
    for action in ["user.create", "user.update", "user.delete"] {
        assert!(
            rows.iter().any(|r| r["action"] == action
                && r["source"] == "cli"
                && r["actor"].as_str().is_some_and(|a| a.starts_with("local:"))),
            "no CLI {action} in {rows:#?}"
        );
    }
}

#[test]
fn help_completions_and_man_page() {
    let setup = configured();

    let out = run(&setup, &["--help"], None);
    assert!(out.status.success());
    let help = stdout(&out);
    for sub in ["serve", "status", "config", "user", "doctor"] {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{sub} "))),
            "--help does not list {sub}:\n{help}"
        );
    }

    let out = run(&setup, &["completions", "bash"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let script = stdout(&out);
    assert!(script.contains("_sparkbrain()"), "{script}");
    assert!(script.contains("complete -F _sparkbrain"), "{script}");
    assert!(script.contains("doctor"), "{script}");
    let out = run(&setup, &["completions", "tcsh-not-a-shell"], None);
    assert!(!out.status.success());

    let out = run(&setup, &["man"], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let roff = stdout(&out);
    assert!(
        roff.starts_with(".ie") || roff.starts_with(".TH"),
        "not roff: {}",
        &roff[..roff.len().min(200)]
    );
    assert!(roff.contains(".TH sparkbrain"), "no title header");
    assert!(roff.contains("sparkbrain"));
    assert!(roff.contains("doctor"), "man page lacks subcommands");
}

#[test]
fn doctor_passes_with_a_good_config_and_names_a_missing_runtime() {
    let setup = configured();
    let out = run(&setup, &["doctor"], None);
    assert!(
        out.status.success(),
        "doctor failed:\n{}\n{}",
        stdout(&out),
        stderr(&out)
    );
    let report = stdout(&out);
    assert!(report.contains("onnx runtime"), "{report}");
    assert!(!report.contains("[FAIL]"), "{report}");

    let missing = setup.dir.path().join("nowhere/libonnxruntime.so");
    setup.write_config(Some(missing.to_str().unwrap()));
    let out = run(&setup, &["doctor"], None);
    assert!(!out.status.success(), "doctor passed:\n{}", stdout(&out));
    let report = stdout(&out);
    let line = report
        .lines()
        .find(|l| l.contains(missing.to_str().unwrap()))
        .unwrap_or_else(|| panic!("no line names {}:\n{report}", missing.display()));
    assert!(line.contains("[FAIL]"), "{line}");
    assert!(line.contains("onnx runtime"), "{line}");
    assert!(stderr(&out).contains("failed"), "{}", stderr(&out));

    // --json gives the same verdict in a machine-readable form.
    let out = run(&setup, &["doctor", "--json"], None);
    assert!(!out.status.success());
    let items: Vec<Value> = serde_json::from_str(&stdout(&out)).expect("doctor --json");
    let rt = items
        .iter()
        .find(|i| i["check"] == "onnx runtime")
        .expect("runtime item");
    assert_eq!(rt["level"], "fail");
}
