//! A stand-in for the host's systemd, on a private D-Bus bus.
//!
//! Tests cannot drive the real systemd (start, stop or fail NVIDIA's services, or make the
//! system bus vanish), so this module plays its part: it starts a private `dbus-daemon`
//! (`/usr/bin/dbus-daemon`, Debian package `dbus-daemon`) listening on a socket in a temporary
//! directory, takes the name `org.freedesktop.systemd1` on it, and serves what a client of
//! systemd reads:
//!
//! - at `/org/freedesktop/systemd1`, `org.freedesktop.systemd1.Manager` with only `LoadUnit(s)
//!   -> o` and `Subscribe()`, with systemd's real signatures. Like systemd, `LoadUnit` of a
//!   unit it does not know returns a "not-found" stub rather than an error;
//! - per unit, at systemd's escaped path (e.g.
//!   `/org/freedesktop/systemd1/unit/nvidia_2dfabricmanager_2eservice`),
//!   `org.freedesktop.systemd1.Unit` with the properties `ActiveState`, `SubState`, `LoadState`
//!   and `Description`. [`StandIn::set_state`] changes them and emits one `PropertiesChanged`,
//!   as systemd does.
//!
//! [`StandIn::kill_bus`] and [`StandIn::restart_bus`] make the bus vanish and come back at the
//! same address. The module depends only on zbus, tokio and tempfile, so another test target
//! can include it with `#[path = "../gpu/systemd_standin.rs"] mod systemd_standin;`.

#![allow(dead_code)] // Not every test target that includes it uses every helper.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zbus::object_server::{ObjectServer, SignalEmitter};
use zbus::{OwnedObjectPath, Variant};

/// systemd's well-known name.
pub const SYSTEMD: &str = "org.freedesktop.systemd1";
/// The manager's object path.
pub const MANAGER_PATH: &str = "/org/freedesktop/systemd1";
/// The unit interface's name.
pub const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";

/// The `dbus-daemon` binary the stand-in bus runs.
const DBUS_DAEMON: &str = "/usr/bin/dbus-daemon";

/// The properties of one unit, as the stand-in serves them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitProps {
    /// `ActiveState`.
    pub active: String,
    /// `SubState`.
    pub sub: String,
    /// `LoadState`.
    pub load: String,
    /// `Description`.
    pub description: String,
}

/// The units the stand-in knows, by name; shared by the manager (which adds stubs) and the
/// test API, and kept across a restart of the bus.
type Units = Arc<Mutex<BTreeMap<String, UnitProps>>>;

/// systemd's object path for a unit: `bus_label_escape` of its name under
/// `/org/freedesktop/systemd1/unit/` (every byte but ASCII letters, and digits after the first
/// byte, becomes `_xx` in lowercase hex).
pub fn unit_path(unit: &str) -> String {
    let mut label = String::new();
    for (i, b) in unit.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            label.push(b as char);
        } else {
            label.push_str(&format!("_{b:02x}"));
        }
    }
    if label.is_empty() {
        label.push('_');
    }
    format!("{MANAGER_PATH}/unit/{label}")
}

/// The `SubState` systemd's service units show in an active state.
fn sub_state_for(active: &str) -> &'static str {
    match active {
        "active" | "reloading" => "running",
        "activating" => "start",
        "deactivating" => "stop",
        "failed" => "failed",
        _ => "dead",
    }
}

/// The stand-in's `org.freedesktop.systemd1.Manager`.
struct Manager {
    units: Units,
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    /// `LoadUnit(in s name, out o unit)`. Like systemd, an unknown (but valid) name loads a
    /// "not-found" stub; an invalid name is refused.
    async fn load_unit(
        &self,
        name: &str,
        #[zbus(object_server)] server: &ObjectServer,
    ) -> zbus::fdo::Result<OwnedObjectPath> {
        if name.is_empty() || name.contains('/') || !name.contains('.') {
            return Err(zbus::fdo::Error::InvalidArgs(format!(
                "Unit name {name} is not valid."
            )));
        }
        let path = unit_path(name);
        let stub = {
            let mut units = self.units.lock().unwrap();
            if units.contains_key(name) {
                None
            } else {
                let props = UnitProps {
                    active: "inactive".into(),
                    sub: "dead".into(),
                    load: "not-found".into(),
                    description: name.into(),
                };
                units.insert(name.to_string(), props.clone());
                Some(props)
            }
        };
        if let Some(props) = stub {
            server
                .at(path.as_str(), Unit(props))
                .await
                .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        }
        OwnedObjectPath::try_from(path).map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
    }

    /// `Subscribe()`: systemd then emits change signals; the stand-in always does.
    async fn subscribe(&self) {}
}

/// The stand-in's `org.freedesktop.systemd1.Unit` for one unit.
struct Unit(UnitProps);

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl Unit {
    /// `ActiveState`.
    #[zbus(property)]
    fn active_state(&self) -> String {
        self.0.active.clone()
    }

    /// `SubState`.
    #[zbus(property)]
    fn sub_state(&self) -> String {
        self.0.sub.clone()
    }

    /// `LoadState`.
    #[zbus(property)]
    fn load_state(&self) -> String {
        self.0.load.clone()
    }

    /// `Description`.
    #[zbus(property)]
    fn description(&self) -> String {
        self.0.description.clone()
    }
}

/// A private bus with the stand-in systemd on it.
pub struct StandIn {
    /// Holds the bus's socket and configuration; removed on drop.
    dir: tempfile::TempDir,
    socket: PathBuf,
    daemon: Option<Child>,
    conn: Option<zbus::Connection>,
    units: Units,
}

impl StandIn {
    /// Starts a bus and the stand-in with `units` as `(name, ActiveState, LoadState)`; the
    /// `SubState` follows the active state as a service's would ("running", "failed", "dead").
    pub async fn start(units: &[(&str, &str, &str)]) -> StandIn {
        let dir = tempfile::Builder::new()
            .prefix("sb-dbus")
            .tempdir()
            .expect("temporary directory for the stand-in bus");
        let socket = dir.path().join("bus");
        let map = units
            .iter()
            .map(|&(name, active, load)| {
                let props = UnitProps {
                    active: active.to_string(),
                    sub: sub_state_for(active).to_string(),
                    load: load.to_string(),
                    description: format!("{name} (stand-in)"),
                };
                (name.to_string(), props)
            })
            .collect();
        let mut standin = StandIn {
            dir,
            socket,
            daemon: None,
            conn: None,
            units: Arc::new(Mutex::new(map)),
        };
        standin.restart_bus().await;
        standin
    }

    /// The bus address to configure as `[gpu] system_bus`. It names only the socket (no
    /// `guid=`), so that it still fits the bus [`StandIn::restart_bus`] starts.
    pub fn address(&self) -> String {
        format!("unix:path={}", self.socket.display())
    }

    /// The bus's socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sets a unit's `ActiveState` and `SubState` and emits `PropertiesChanged` with both, as
    /// systemd does. A unit the stand-in does not serve yet is added as loaded.
    pub async fn set_state(&self, unit: &str, active: &str, sub: &str) {
        let conn = self.conn.as_ref().expect("the stand-in bus is running");
        let path = unit_path(unit);
        let new = {
            let mut units = self.units.lock().unwrap();
            let props = units.entry(unit.to_string()).or_insert_with(|| UnitProps {
                active: String::new(),
                sub: String::new(),
                load: "loaded".into(),
                description: format!("{unit} (stand-in)"),
            });
            props.active = active.to_string();
            props.sub = sub.to_string();
            props.clone()
        };
        let server = conn.object_server();
        match server.interface::<_, Unit>(path.as_str()).await {
            Ok(iface) => {
                iface.get_mut().await.0 = new;
                let mut changed = HashMap::new();
                changed.insert("ActiveState", Variant::from(active));
                changed.insert("SubState", Variant::from(sub));
                let name = zbus::names::InterfaceName::try_from(UNIT_INTERFACE).unwrap();
                zbus::fdo::Properties::properties_changed(
                    iface.signal_emitter(),
                    name,
                    changed,
                    (&[] as &[&str]).into(),
                )
                .await
                .expect("emit PropertiesChanged");
            }
            Err(_) => {
                server
                    .at(path.as_str(), Unit(new))
                    .await
                    .expect("serve the new unit");
            }
        }
    }

    /// Emits `PropertiesChanged` for a unit with the properties invalidated only, without
    /// their values, which systemd does for some properties.
    pub async fn invalidate(&self, unit: &str) {
        let conn = self.conn.as_ref().expect("the stand-in bus is running");
        let emitter = SignalEmitter::new(conn, unit_path(unit)).unwrap();
        let name = zbus::names::InterfaceName::try_from(UNIT_INTERFACE).unwrap();
        zbus::fdo::Properties::properties_changed(
            &emitter,
            name,
            HashMap::new(),
            (&["ActiveState", "SubState"] as &[&str]).into(),
        )
        .await
        .expect("emit PropertiesChanged");
    }

    /// Kills the bus (`SIGKILL` to `dbus-daemon`), as a crash would; every client loses its
    /// connection.
    pub fn kill_bus(&mut self) {
        self.conn = None;
        if let Some(mut daemon) = self.daemon.take() {
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
    }

    /// Starts a bus at the same socket (killing the current one first, if any) and serves the
    /// units there again, with their current properties.
    pub async fn restart_bus(&mut self) {
        self.kill_bus();
        // A killed dbus-daemon leaves its socket file behind.
        let _ = std::fs::remove_file(&self.socket);
        let config = self.dir.path().join("bus.conf");
        let log = self.dir.path().join("dbus-daemon.log");
        std::fs::write(&config, bus_config(&self.socket)).expect("write the bus configuration");
        let mut daemon = Command::new(DBUS_DAEMON)
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .arg("--print-address=1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // It complains on stderr about fd limits it may not raise; keep that out of the
            // test output, but at hand if the bus does not come up.
            .stderr(std::fs::File::create(&log).expect("create the bus log"))
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run {DBUS_DAEMON} (Debian package dbus-daemon): {e}")
            });
        // The address is printed once the bus listens; that is the moment to connect.
        let stdout = daemon.stdout.take().expect("dbus-daemon's stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read dbus-daemon's address");
        assert!(
            line.starts_with("unix:"),
            "dbus-daemon printed no address: {line:?}; its log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.daemon = Some(daemon);
        self.serve().await;
    }

    /// Restarts the stand-in systemd on the running bus, as `systemctl daemon-reexec` does:
    /// its connection closes (so `org.freedesktop.systemd1` loses its owner) and a new one
    /// takes the name again.
    pub async fn restart_systemd(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.close().await.expect("close the stand-in's connection");
        }
        self.serve().await;
    }

    /// Connects to the bus, serves the manager and the units with their current properties,
    /// and takes systemd's name.
    async fn serve(&mut self) {
        let conn = connect(&self.address(), &self.units).await;
        let units: Vec<(String, UnitProps)> = self
            .units
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, props) in units {
            conn.object_server()
                .at(unit_path(&name).as_str(), Unit(props))
                .await
                .expect("serve a unit");
        }
        // The name comes last, so that a client that sees systemd appear finds every unit.
        conn.request_name(SYSTEMD)
            .await
            .expect("take org.freedesktop.systemd1");
        self.conn = Some(conn);
    }

    /// Changes a unit's properties without a signal, as if it changed while nobody watched.
    pub fn set_state_quietly(&self, unit: &str, active: &str, sub: &str) {
        if let Some(props) = self.units.lock().unwrap().get_mut(unit) {
            props.active = active.to_string();
            props.sub = sub.to_string();
        }
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.kill_bus();
    }
}

/// Connects to the new bus and serves the manager; retried briefly in case the socket is not
/// accepting yet.
async fn connect(address: &str, units: &Units) -> zbus::Connection {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let built = zbus::connection::Builder::address(address)
            .serve_at(
                MANAGER_PATH,
                Manager {
                    units: units.clone(),
                },
            )
            .build()
            .await;
        match built {
            Ok(conn) => return conn,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot connect to the stand-in bus at {address}: {e}"),
        }
    }
}

/// A bus configuration: one unix socket, EXTERNAL authentication, and a policy that allows
/// everything (the bus is private to the test).
fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow send_type="method_call"/>
    <allow send_type="signal"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#,
        socket.display()
    )
}
