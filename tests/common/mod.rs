//! Test harness: starts the real `sparkbrain` binary on a temporary data directory and a free
//! loopback port, and talks to it over real HTTP.
//!
//! The ONNX Runtime library and embedding model come from `vendor/` (`just fetch`).

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_sparkbrain");

/// A password that satisfies the default policy.
pub const ADMIN_PASSWORD: &str = "admin-password-for-tests";

/// Repository's vendor folder (ONNX Runtime and the embedding model).
pub fn vendor() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor");
    assert!(
        dir.join("onnxruntime/libonnxruntime.so.1.31.1").is_file(),
        "vendor/ is missing ONNX Runtime: run `just fetch` first"
    );
    dir
}

/// A free TCP port on loopback (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A temporary directory with a config file for one daemon.
pub struct Setup {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub bind: String,
    /// Extra TOML appended to the generated config: whole sections the base does not write
    /// (`[auth]`, `[metrics]`, `[tls]`).
    pub extra: String,
    /// Extra `key = value` lines for the `[server]` section.
    pub server_extra: String,
}

impl Setup {
    /// Loopback bind, vendor runtime and model, terminal logs.
    pub fn new() -> Setup {
        let port = free_port();
        Setup {
            dir: tempfile::tempdir().expect("tempdir"),
            port,
            bind: format!("127.0.0.1:{port}"),
            extra: String::new(),
            server_extra: String::new(),
        }
    }

    /// Binds to 0.0.0.0 (non-loopback, so TLS 1.3); clients still connect to 127.0.0.1.
    pub fn tls(mut self) -> Setup {
        self.bind = format!("0.0.0.0:{}", self.port);
        self
    }

    /// Appends TOML sections the base config does not write (`[auth]`, `[metrics]`, `[tls]`).
    pub fn with(mut self, extra: &str) -> Setup {
        self.extra.push_str(extra);
        self.extra.push('\n');
        self
    }

    /// Appends a `key = value` line to the `[server]` section.
    pub fn server(mut self, line: &str) -> Setup {
        self.server_extra.push_str(line);
        self.server_extra.push('\n');
        self
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Writes the config file: `runtime` and `models` sections point at vendor/ unless
    /// `runtime_library` overrides the library path.
    pub fn write_config(&self, runtime_library: Option<&str>) -> PathBuf {
        let v = vendor();
        let lib = runtime_library.map(str::to_string).unwrap_or_else(|| {
            v.join("onnxruntime/libonnxruntime.so.1.31.1")
                .display()
                .to_string()
        });
        let text = format!(
            "data_dir = {data:?}\n\
             [server]\nbind = {bind:?}\nshutdown_grace_seconds = 10\n{server_extra}\
             [runtime]\nonnxruntime_library = {lib:?}\n\
             [models]\nembedding_model = {model:?}\nembedding_tokenizer = {tok:?}\n\
             embedding_query_model = {query:?}\n\
             [log]\nlevel = \"debug\"\nformat = \"terminal\"\n{extra}",
            data = self.data_dir().display().to_string(),
            bind = self.bind,
            lib = lib,
            model = v
                .join("models/all-MiniLM-L6-v2/model.onnx")
                .display()
                .to_string(),
            tok = v
                .join("models/all-MiniLM-L6-v2/tokenizer.json")
                .display()
                .to_string(),
            query = v
                .join("models/all-MiniLM-L6-v2/model.query-int8.onnx")
                .display()
                .to_string(),
            extra = self.extra,
            server_extra = self.server_extra,
        );
        let path = self.config_path();
        std::fs::write(&path, text).expect("write config");
        path
    }

    /// A `sparkbrain` command with this config and a clean environment.
    pub fn command(&self) -> Command {
        let mut cmd = bare_command();
        cmd.arg("--config").arg(self.config_path());
        cmd
    }

    /// Runs `sparkbrain user add NAME --role ROLE --password-stdin`.
    pub fn add_user(&self, name: &str, role: &str, password: &str) {
        let mut child = self
            .command()
            .args(["user", "add", name, "--role", role, "--password-stdin"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn user add");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{password}\n").as_bytes())
            .expect("write password");
        let out = child.wait_with_output().expect("user add");
        assert!(
            out.status.success(),
            "user add failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts `serve` (config must be written) and waits until `/healthz` answers.
    pub fn start(&self) -> Daemon {
        self.start_with(|_| {})
    }

    /// As [`start`], letting the caller adjust the command (e.g. environment) first.
    pub fn start_with(&self, adjust: impl FnOnce(&mut Command)) -> Daemon {
        let log = self.dir.path().join(format!("daemon-{}.log", now_nanos()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut cmd = self.command();
        cmd.arg("serve")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("clone log"))
            .stderr(log_file);
        adjust(&mut cmd);
        let child = cmd.spawn().expect("spawn serve");
        let tls = !self.bind.starts_with("127.");
        let daemon = Daemon {
            child,
            log,
            base: format!(
                "{}://127.0.0.1:{}",
                if tls { "https" } else { "http" },
                self.port
            ),
        };
        daemon.wait_healthy();
        daemon
    }
}

/// A `sparkbrain` command with no `--config` and none of the variables the daemon reads.
pub fn bare_command() -> Command {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("SPARKBRAIN_")
            || key == "ORT_DYLIB_PATH"
            || key == "NOTIFY_SOCKET"
            || key == "JOURNAL_STREAM"
            || key.starts_with("WATCHDOG_")
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A running daemon; killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
    /// `http://127.0.0.1:PORT` or `https://…`.
    pub base: String,
}

impl Daemon {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// A blocking HTTP client that accepts the daemon's self-signed certificate.
    pub fn client(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .danger_accept_invalid_certs(true)
            .no_proxy()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("client")
    }

    /// `GET path` without credentials.
    pub fn get(&self, path: &str) -> reqwest::blocking::Response {
        self.client()
            .get(self.url(path))
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn wait_healthy(&self) {
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(self.url("/healthz")).send()
                && r.status().is_success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "daemon did not answer /healthz in 30 s; log:\n{}",
            self.logs()
        );
    }

    /// Waits until `/readyz` answers 200.
    pub fn wait_ready(&self) {
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(self.url("/readyz")).send()
                && r.status().is_success()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("daemon did not become ready in 30 s; log:\n{}", self.logs());
    }

    /// Everything the daemon has logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Signs in with the password grant and returns the token response JSON.
    pub fn login(&self, user: &str, password: &str) -> serde_json::Value {
        let resp = self
            .client()
            .post(self.url("/api/v1/auth/token"))
            .form(&[("username", user), ("password", password)])
            .send()
            .expect("token request");
        assert_eq!(resp.status(), 200, "sign-in of {user} failed");
        resp.json().expect("token json")
    }

    /// An access token for the user.
    pub fn token(&self, user: &str, password: &str) -> String {
        self.login(user, password)["access_token"]
            .as_str()
            .expect("access_token")
            .to_string()
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("kill");
    }

    /// Waits for the process to exit, up to `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not exit in {limit:?}; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
