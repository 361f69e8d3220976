//! Black-box tests: the web console in a real browser.
//!
//! Each test starts the real daemon (with the stories260K generator, so that answers stream),
//! then runs a scenario of `ui/tests/` under Node's test runner: playwright-core drives Debian's
//! headless Chromium through the pages as a person would. Screenshots of every page land in
//! `target/console-screenshots/` for a person to look at.

#[path = "../common/mod.rs"]
mod common;
#[path = "../gpu/fake_nvml.rs"]
mod fake_nvml;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ADMIN_PASSWORD, Daemon, Setup};

const EDITOR_PASSWORD: &str = "erin-password-12";
const VIEWER_PASSWORD: &str = "vera-password-12";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn shared() -> PathBuf {
    std::env::var_os("SPARKBRAIN_SHARED").map_or_else(|| repo().join("../shared"), PathBuf::from)
}

/// Node, the console's npm packages and Chromium come with `just deps`; without them these
/// tests fail and say what to run, rather than pass.
fn require_browser() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node is missing: run `just deps`"
    );
    assert!(
        repo().join("ui/node_modules/playwright-core").is_dir(),
        "ui/node_modules is missing: run `just deps` (npm ci in ui/)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: run `just deps` (Debian's chromium)"
    );
}

/// Runs `ui/tests/<scenario>.test.mjs` against the daemon and fails with its output.
fn run_scenario(scenario: &str, daemon: &Daemon, extra: &[(&str, String)]) {
    let screenshots = repo().join("target/console-screenshots").join(scenario);
    std::fs::create_dir_all(&screenshots).expect("screenshot folder");
    let file = repo().join(format!("ui/tests/{scenario}.test.mjs"));
    let mut cmd = Command::new("node");
    cmd.arg("--test")
        .arg("--test-reporter=spec")
        .arg(&file)
        .current_dir(repo().join("ui"))
        .env("CONSOLE_URL", daemon.url(""))
        .env("CONSOLE_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .env("CONSOLE_EDITOR_PASSWORD", EDITOR_PASSWORD)
        .env("CONSOLE_VIEWER_PASSWORD", VIEWER_PASSWORD)
        .env("CONSOLE_SCREENSHOTS", &screenshots)
        .env("CONSOLE_CHROMIUM", "/usr/bin/chromium");
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run node");
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "console scenario {scenario} failed:\n{text}\ndaemon log:\n{}",
        daemon.logs()
    );
    println!("{text}");
}

/// A daemon with an admin, an editor (erin) and a viewer (vera), and stories260K as the
/// generator answers stream from (its context is 512 tokens, so passages are cut short enough
/// for a few to fit); `more` adds configuration.
fn start(more: &str) -> (Setup, Daemon) {
    let stories = shared().join("models/stories260k/model.onnx");
    assert!(stories.is_file(), "{} is missing", stories.display());
    let setup = Setup::new().with(&format!(
        "[generators.stories]\nkind = \"onnx\"\nmodel = {:?}\ncontext_length = 512\n\
         [answers]\ntop_k = 3\nmax_answer_tokens = 32\nmax_passage_chars = 200\n{more}",
        stories.display().to_string()
    ));
    setup.write_config(None);
    setup.add_user("admin", "admin", ADMIN_PASSWORD);
    setup.add_user("erin", "editor", EDITOR_PASSWORD);
    setup.add_user("vera", "viewer", VIEWER_PASSWORD);
    let daemon = setup.start();
    daemon.wait_ready();
    (setup, daemon)
}

#[test]
fn a_person_signs_in_uploads_searches_and_asks() {
    require_browser();
    let (_setup, daemon) = start("");
    let docs = shared().join("data/docs");
    let files = [
        docs.join("docling/pdf/sources/multi_page.pdf"),
        docs.join("debian/basic-defs.en.html"),
    ];
    for f in &files {
        assert!(f.is_file(), "{} is missing", f.display());
    }
    run_scenario(
        "workflow",
        &daemon,
        &[
            ("CONSOLE_UPLOAD_A", files[0].display().to_string()),
            ("CONSOLE_UPLOAD_B", files[1].display().to_string()),
        ],
    );
}

#[test]
fn the_system_page_charts_each_gpu_and_its_xids() {
    require_browser();
    // Two H100s of the fake NVML library (this machine has no GPU): utilisation and power
    // move every second, and GPU 1 reports XID 31 (a page fault, the application's error).
    let mut host = fake_nvml::h100_host(2);
    for (i, gpu) in host["gpus"]
        .as_array_mut()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let steps = |low: u64, high: u64| -> serde_json::Value {
            (0..120u64)
                .map(|t| serde_json::json!([t * 1000, if t % 2 == 0 { low } else { high }]))
                .collect()
        };
        let i = i as u64;
        gpu["telemetry"]["gpu_util"] = steps(20 + i * 30, 70 + i * 20);
        gpu["telemetry"]["power_mw"] = steps(150_000 + i * 100_000, 450_000);
    }
    host["xids"] = serde_json::json!([{ "gpu": 1, "xid": 31, "at_ms": 1500 }]);
    let scenario = fake_nvml::Scenario::new(&host);
    // A backup target, so the Backups card's "Back up now" makes a real archive.
    let archives = tempfile::tempdir().expect("tempdir");
    let target = archives.path().display().to_string();
    let (_setup, daemon) = start(&format!(
        "[gpu]\nnvml_library = {:?}\nsample_interval_ms = 250\nsystem_bus = \"off\"\n\
         [backup]\ntarget = {target:?}\n",
        scenario.library().display().to_string()
    ));
    // A few seconds of history for the charts to draw.
    std::thread::sleep(std::time::Duration::from_secs(4));
    run_scenario("system", &daemon, &[("CONSOLE_BACKUP_TARGET", target)]);
}
