//! The host services the GPUs depend on, watched over D-Bus.
//!
//! A DGX box's GPUs need host daemons: `nvidia-persistenced` keeps them initialised between
//! clients, on NVSwitch systems `nvidia-fabricmanager` must run or the GPUs refuse work, and
//! `nvidia-dcgm` is often there for monitoring. systemd owns those daemons, so their state is
//! read from systemd over the system bus (`org.freedesktop.systemd1`): each unit is resolved
//! with `Manager.LoadUnit`, its `org.freedesktop.systemd1.Unit` properties are read, and its
//! `PropertiesChanged` signals are followed after `Manager.Subscribe` (systemd only emits them
//! while somebody is subscribed).
//!
//! No system bus at all (a container, a dev machine) is a normal state: it is reported as
//! [`BusStatus::Unavailable`] with a reason the operator can act on, and the watcher keeps
//! trying to connect in the background. Nothing here panics on what the bus sends.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Serialize, Serializer};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use zbus::proxy::CacheProperties;

use crate::config::GpuConfig;

/// How long the watcher waits before trying a bus again after it was unreachable or lost.
pub const RECONNECT_INTERVAL: Duration = Duration::from_secs(10);

/// The bus address used when `[gpu] system_bus` is empty and `$DBUS_SYSTEM_BUS_ADDRESS` unset.
pub const DEFAULT_SYSTEM_BUS: &str = "unix:path=/run/dbus/system_bus_socket";

/// Connecting includes authentication and `Hello`; a bus that accepts the socket but never
/// answers must not keep [`HostServices::start`] (or the reconnect loop) waiting forever.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Every call to systemd is bounded so that a stuck systemd cannot stall the watcher.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A bus on which systemd re-registered (daemon-reexec) is retried at once, but not in a hot
/// loop if it keeps flapping.
const QUICK_RETRY: Duration = Duration::from_millis(500);

/// systemd's well-known name on the system bus.
const SYSTEMD: &str = "org.freedesktop.systemd1";

/// The D-Bus error systemd answers `LoadUnit` with when it will not even make a stub unit.
const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";

/// `org.freedesktop.systemd1.Manager`, only the two calls the watcher needs, with systemd's
/// real signatures: `LoadUnit(s name) -> o unit` and `Subscribe()`.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
trait Manager {
    /// Loads the unit (a stub with `LoadState` "not-found" if it has no unit file) and returns
    /// its object path.
    fn load_unit(&self, name: &str) -> zbus::Result<zbus::OwnedObjectPath>;

    /// Asks systemd to emit change signals, which it does only while a client is subscribed.
    fn subscribe(&self) -> zbus::Result<()>;
}

/// `org.freedesktop.systemd1.Unit`, the properties the watcher reads.
#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
trait Unit {
    /// "active", "reloading", "inactive", "failed", "activating", "deactivating", …
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;

    /// The unit type's own finer state, e.g. "running", "dead", "exited".
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;

    /// "loaded", "not-found", "bad-setting", "error", "masked", …
    #[zbus(property)]
    fn load_state(&self) -> zbus::Result<String>;

    /// The unit's `Description=`.
    #[zbus(property)]
    fn description(&self) -> zbus::Result<String>;
}

/// The state of one systemd unit, from its `ActiveState` and `LoadState`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitState {
    /// Running.
    Active,
    /// Running and reloading its configuration.
    Reloading,
    /// Starting.
    Activating,
    /// Stopping.
    Deactivating,
    /// Stopped (cleanly, or never started).
    Inactive,
    /// Stopped after a failure (crash, non-zero exit, start timeout, …).
    Failed,
    /// systemd has no unit file for it: the service is not installed on this host.
    NotInstalled,
    /// Not known: the bus is unavailable, the unit could not be read, or systemd reported an
    /// `ActiveState` this code does not know (kept here as it was sent, e.g. "maintenance").
    Unknown(String),
}

impl UnitState {
    /// Interprets systemd's `ActiveState` and `LoadState`. A unit without a unit file is loaded
    /// as a "not-found" stub that reads "inactive", so the load state decides first.
    pub fn from_systemd(active_state: &str, load_state: &str) -> UnitState {
        if load_state == "not-found" {
            return UnitState::NotInstalled;
        }
        match active_state {
            "active" => UnitState::Active,
            "reloading" => UnitState::Reloading,
            "activating" => UnitState::Activating,
            "deactivating" => UnitState::Deactivating,
            "inactive" => UnitState::Inactive,
            "failed" => UnitState::Failed,
            other => UnitState::Unknown(other.to_string()),
        }
    }

    /// The lowercase name it is serialized as, e.g. "not-installed"; every
    /// [`UnitState::Unknown`] is "unknown" so that clients see a closed set of values.
    pub fn as_str(&self) -> &'static str {
        match self {
            UnitState::Active => "active",
            UnitState::Reloading => "reloading",
            UnitState::Activating => "activating",
            UnitState::Deactivating => "deactivating",
            UnitState::Inactive => "inactive",
            UnitState::Failed => "failed",
            UnitState::NotInstalled => "not-installed",
            UnitState::Unknown(_) => "unknown",
        }
    }
}

impl std::fmt::Display for UnitState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for UnitState {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// What is known of one watched unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceState {
    /// The unit name as configured, e.g. `nvidia-fabricmanager.service`.
    pub unit: String,
    /// Its state.
    pub state: UnitState,
    /// systemd's `SubState` ("running", "dead", …); empty when not known.
    pub sub_state: String,
    /// The unit's description; empty when not known.
    pub description: String,
}

impl ServiceState {
    /// A unit whose state is not known, and why.
    fn unknown(unit: &str, why: &str) -> ServiceState {
        ServiceState {
            unit: unit.to_string(),
            state: UnitState::Unknown(why.to_string()),
            sub_state: String::new(),
            description: String::new(),
        }
    }
}

/// Whether the system bus can be watched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "reason", rename_all = "lowercase")]
pub enum BusStatus {
    /// `[gpu] system_bus = "off"`: nothing is watched.
    Off,
    /// The bus or systemd on it cannot be reached; the text says why and what to do. The
    /// watcher keeps retrying every [`RECONNECT_INTERVAL`].
    Unavailable(String),
    /// Connected and reading the units.
    Connected,
}

/// Why the GPUs are degraded by the state of their host services: one sentence per unit that
/// holds them back, empty when none does.
///
/// - `nvidia-fabricmanager` installed but failed, inactive or stopping: on NVSwitch systems the
///   GPUs refuse work without it. ("Activating" is not counted: it is on its way up.)
/// - `nvidia-persistenced` failed. Merely stopped is a choice (persistence mode can be set
///   with `nvidia-smi -pm 1` instead), so only a failure counts.
/// - `nvidia-dcgm` never: it only monitors.
/// - Any other configured unit failed: the configuration lists it as something the GPUs
///   depend on.
///
/// A unit that is not installed or whose state is unknown never degrades: the first is a host
/// without that service (no NVSwitch, say), the second is reported through [`BusStatus`].
pub fn fold(states: &[ServiceState]) -> Vec<String> {
    let mut reasons = Vec::new();
    for s in states {
        let name = s.unit.strip_suffix(".service").unwrap_or(&s.unit);
        let reason = match (name, &s.state) {
            (_, UnitState::NotInstalled | UnitState::Unknown(_)) => None,
            ("nvidia-dcgm", _) => None,
            (
                "nvidia-fabricmanager",
                UnitState::Failed | UnitState::Inactive | UnitState::Deactivating,
            ) => Some(format!(
                "nvidia-fabricmanager is {}: GPUs on NVSwitch systems refuse work without it",
                s.state
            )),
            ("nvidia-persistenced", UnitState::Failed) => Some(
                "nvidia-persistenced is failed: without it the driver tears the GPUs down between \
                 clients, so every start is slow and GPU settings are lost"
                    .to_string(),
            ),
            ("nvidia-fabricmanager" | "nvidia-persistenced", _) => None,
            (_, UnitState::Failed) => Some(format!(
                "{} is failed: it is configured as a host service the GPUs depend on",
                s.unit
            )),
            _ => None,
        };
        reasons.extend(reason);
    }
    reasons
}

/// What the watcher knows, shared with [`HostServices::snapshot`].
#[derive(Debug, Clone, PartialEq)]
struct Shared {
    status: BusStatus,
    states: Vec<ServiceState>,
}

/// The callback handed to [`HostServices::start`].
type OnChange = Arc<dyn Fn(&[ServiceState]) + Send + Sync>;

/// The background task's handle on the shared state and the callback.
#[derive(Clone)]
struct Watch {
    shared: Arc<Mutex<Shared>>,
    on_change: OnChange,
}

/// Locks the shared state. A panic inside `on_change` never happens under this lock (it is
/// called after the lock is released), so a poisoned lock still holds consistent data.
fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Watch {
    /// Applies `f` and calls `on_change` (outside the lock) if anything changed.
    fn update(&self, f: impl FnOnce(&mut Shared)) {
        let changed = {
            let mut shared = lock(&self.shared);
            let before = shared.clone();
            f(&mut shared);
            (*shared != before).then(|| shared.states.clone())
        };
        if let Some(states) = changed {
            (self.on_change)(&states);
        }
    }

    /// Marks the bus unavailable and every unit unknown: with no bus nothing is known.
    fn unavailable(&self, reason: &str) {
        self.update(|s| {
            s.status = BusStatus::Unavailable(reason.to_string());
            for state in &mut s.states {
                *state = ServiceState::unknown(&state.unit, reason);
            }
        });
    }
}

/// Watches the configured host services over D-Bus in a background task.
///
/// Dropping it (or [`HostServices::stop`]) ends the task and its bus connection.
pub struct HostServices {
    shared: Arc<Mutex<Shared>>,
    task: Option<JoinHandle<()>>,
}

impl HostServices {
    /// Starts watching `config.host_services` on `config.system_bus` and returns once the
    /// first attempt has an outcome (bounded by a few seconds), so that the first
    /// [`HostServices::snapshot`] is meaningful.
    ///
    /// It never fails: a bus that cannot be reached becomes [`BusStatus::Unavailable`] and is
    /// retried every [`RECONNECT_INTERVAL`]; a lost connection makes every unit unknown until
    /// the bus is back. `on_change` is called with all units' states after every change.
    /// Must be called within a Tokio runtime.
    pub async fn start(
        config: &GpuConfig,
        on_change: impl Fn(&[ServiceState]) + Send + Sync + 'static,
    ) -> HostServices {
        let bus = config.system_bus.trim();
        if bus == "off" {
            return HostServices {
                shared: Arc::new(Mutex::new(Shared {
                    status: BusStatus::Off,
                    states: Vec::new(),
                })),
                task: None,
            };
        }
        let address = if bus.is_empty() {
            // zbus's own default is /var/run/…, a symlink that not every container has.
            std::env::var("DBUS_SYSTEM_BUS_ADDRESS")
                .ok()
                .filter(|a| !a.trim().is_empty())
                .unwrap_or_else(|| DEFAULT_SYSTEM_BUS.to_string())
        } else {
            bus.to_string()
        };
        let mut units: Vec<String> = Vec::new();
        for unit in &config.host_services {
            if !units.contains(unit) {
                units.push(unit.clone());
            }
        }
        let connecting = format!("connecting to the system bus at {address}");
        let shared = Arc::new(Mutex::new(Shared {
            status: BusStatus::Unavailable(connecting.clone()),
            states: units
                .iter()
                .map(|u| ServiceState::unknown(u, &connecting))
                .collect(),
        }));
        let watch = Watch {
            shared: shared.clone(),
            on_change: Arc::new(on_change),
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(run(watch, units, address, ready_tx));
        // The first attempt reports through `ready`; the bound is a safety net only, the
        // attempt's own steps are bounded by CONNECT_TIMEOUT and CALL_TIMEOUT.
        let _ = tokio::time::timeout(CONNECT_TIMEOUT + 2 * CALL_TIMEOUT, ready_rx).await;
        HostServices {
            shared,
            task: Some(task),
        }
    }

    /// The bus status and every watched unit's state, as last read.
    pub fn snapshot(&self) -> (BusStatus, Vec<ServiceState>) {
        let shared = lock(&self.shared);
        (shared.status.clone(), shared.states.clone())
    }

    /// Ends the background task and its bus connection; the last snapshot stays readable.
    pub fn stop(&self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl Drop for HostServices {
    fn drop(&mut self) {
        self.stop();
    }
}

/// When to try the bus again after a session ended.
enum Retry {
    /// systemd re-registered on a bus that is still there: read everything again now.
    Soon,
    /// The bus or systemd is gone: wait [`RECONNECT_INTERVAL`].
    Later,
}

/// The background task: one session per connection, forever, until aborted.
async fn run(watch: Watch, units: Vec<String>, address: String, ready: oneshot::Sender<()>) {
    let mut ready = Some(ready);
    let mut last_reason = String::new();
    loop {
        let (reason, retry) = session(&watch, &units, &address, &mut ready).await;
        watch.unavailable(&reason);
        if let Some(ready) = ready.take() {
            let _ = ready.send(());
        }
        // The same reason every ten seconds would flood the log of a host without a bus.
        if reason != last_reason {
            tracing::warn!(bus = %address, "host services: {reason}");
            last_reason = reason;
        } else {
            tracing::debug!(bus = %address, "host services: {reason}");
        }
        tokio::time::sleep(match retry {
            Retry::Soon => QUICK_RETRY,
            Retry::Later => RECONNECT_INTERVAL,
        })
        .await;
    }
}

/// Connects, reads every unit, then follows changes until something ends the session; returns
/// why (worded for the operator) and when to retry.
async fn session(
    watch: &Watch,
    units: &[String],
    address: &str,
    ready: &mut Option<oneshot::Sender<()>>,
) -> (String, Retry) {
    let builder = zbus::connection::Builder::address(address).method_timeout(CALL_TIMEOUT);
    let conn = match tokio::time::timeout(CONNECT_TIMEOUT, builder.build()).await {
        Err(_) => {
            return (
                format!(
                    "the system bus at {address} did not answer within {} s; check that \
                     dbus-daemon is healthy, or set [gpu] system_bus = \"off\"",
                    CONNECT_TIMEOUT.as_secs()
                ),
                Retry::Later,
            );
        }
        Ok(Err(e)) => return (connect_error(address, &e), Retry::Later),
        Ok(Ok(conn)) => conn,
    };
    match follow(watch, units, address, &conn, ready).await {
        Ok(ended) => ended,
        // A failed call on a closed connection is the connection's loss, not the call's.
        Err(_) if conn.is_closed() => (lost(address), Retry::Later),
        Err(e) => (call_error(address, &e), Retry::Later),
    }
}

/// The session on an open connection. `Err` is a failed setup call.
async fn follow(
    watch: &Watch,
    units: &[String],
    address: &str,
    conn: &zbus::Connection,
    ready: &mut Option<oneshot::Sender<()>>,
) -> zbus::Result<(String, Retry)> {
    let manager = ManagerProxy::builder(conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    // Before anything is read, so that a systemd restart in between is not missed.
    let mut owner = manager.inner().receive_owner_changed().await?;

    let mut proxies: Vec<Option<UnitProxy<'static>>> = Vec::with_capacity(units.len());
    let mut change_streams = Vec::new();
    for (index, unit) in units.iter().enumerate() {
        let path = match manager.load_unit(unit).await {
            Ok(path) => path,
            Err(zbus::Error::MethodError(name, _, _)) if name.as_str() == NO_SUCH_UNIT => {
                proxies.push(None);
                continue;
            }
            Err(e) => return Err(e),
        };
        let properties = zbus::fdo::PropertiesProxy::builder(conn)
            .destination(SYSTEMD)
            .path(path.clone())
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        // Subscribed before the first read, for the same reason as `owner`.
        let changes = properties.receive_properties_changed().await?;
        change_streams.push(changes.map(move |_| index));
        proxies.push(Some(
            UnitProxy::builder(conn)
                .path(path)
                .cache_properties(CacheProperties::No)
                .build()
                .await?,
        ));
    }
    let mut changes = futures_util::stream::select_all(change_streams);

    // Without a subscriber systemd emits no PropertiesChanged; a refusal (an old systemd with
    // a strict policy) still leaves the first read, so it is logged, not fatal.
    if let Err(e) = manager.subscribe().await {
        tracing::warn!(bus = %address, error = %e, "host services: systemd refused Subscribe; unit changes will not be seen until the next reconnect");
    }

    let mut states = Vec::with_capacity(units.len());
    for (unit, proxy) in units.iter().zip(&proxies) {
        states.push(read_unit(unit, proxy.as_ref()).await);
    }
    watch.update(|s| {
        s.status = BusStatus::Connected;
        s.states = states;
    });
    if let Some(ready) = ready.take() {
        let _ = ready.send(());
    }

    // systemd dropped its name and has not taken it again yet.
    let mut systemd_gone = false;
    loop {
        tokio::select! {
            _ = conn.closed() => return Ok((lost(address), Retry::Later)),
            owner_change = owner.next() => match owner_change {
                Some(Some(_)) => {
                    return Ok((
                        "systemd re-registered on the system bus; reading its units again"
                            .to_string(),
                        Retry::Soon,
                    ));
                }
                Some(None) => {
                    // systemd re-executing (daemon-reexec, an upgrade) drops its name for a
                    // moment: stay on the bus and start over as soon as it is back.
                    let reason = format!(
                        "systemd left the system bus at {address}; unit states are unknown \
                         until it is back"
                    );
                    tracing::warn!(bus = %address, "host services: {reason}");
                    watch.unavailable(&reason);
                    systemd_gone = true;
                }
                None => return Ok((lost(address), Retry::Later)),
            },
            changed = changes.next(), if !changes.is_empty() => match changed {
                Some(_) if systemd_gone => {}
                Some(index) => {
                    let (Some(unit), Some(proxy)) = (units.get(index), proxies.get(index)) else {
                        continue;
                    };
                    // The signal may carry only some properties, or only invalidate them:
                    // reading all four again is simpler and always right.
                    let state = read_unit(unit, proxy.as_ref()).await;
                    watch.update(|s| {
                        if let Some(slot) = s.states.get_mut(index) {
                            *slot = state;
                        }
                    });
                }
                None => return Ok((lost(address), Retry::Later)),
            },
        }
    }
}

/// Reads one unit's properties; a unit systemd has no object for is not installed.
async fn read_unit(unit: &str, proxy: Option<&UnitProxy<'static>>) -> ServiceState {
    let Some(proxy) = proxy else {
        return ServiceState {
            unit: unit.to_string(),
            state: UnitState::NotInstalled,
            sub_state: String::new(),
            description: String::new(),
        };
    };
    let read = tokio::try_join!(
        proxy.active_state(),
        proxy.sub_state(),
        proxy.load_state(),
        proxy.description(),
    );
    match read {
        Ok((active, sub_state, load, description)) => ServiceState {
            unit: unit.to_string(),
            state: UnitState::from_systemd(&active, &load),
            sub_state,
            description,
        },
        Err(e) => ServiceState::unknown(unit, &format!("reading {unit} from systemd failed: {e}")),
    }
}

/// The reason for a lost connection.
fn lost(address: &str) -> String {
    format!(
        "lost the connection to the system bus at {address}; unit states are unknown, \
         reconnecting every {} s",
        RECONNECT_INTERVAL.as_secs()
    )
}

/// An operator-facing reason for a failed connect.
fn connect_error(address: &str, e: &zbus::Error) -> String {
    let off = "or set [gpu] system_bus = \"off\" to watch nothing";
    let io = match e {
        zbus::Error::Connection(io, _) | zbus::Error::InputOutput(io) => Some(io.kind()),
        _ => None,
    };
    match io {
        Some(std::io::ErrorKind::NotFound) => format!(
            "no system bus at {address} (the socket does not exist); in a container, mount the \
             host's /run/dbus/system_bus_socket, point [gpu] system_bus at it, {off}"
        ),
        Some(std::io::ErrorKind::ConnectionRefused) => {
            format!("nothing listens at {address}; check that dbus-daemon runs, {off}")
        }
        Some(std::io::ErrorKind::PermissionDenied) => format!(
            "not allowed to connect to the system bus at {address}; check the socket's \
             permissions, {off}"
        ),
        _ => format!("cannot connect to the system bus at {address}: {e}; {off}"),
    }
}

/// An operator-facing reason for a failed setup call.
fn call_error(address: &str, e: &zbus::Error) -> String {
    if let zbus::Error::FDO(fdo) = e
        && matches!(
            **fdo,
            zbus::fdo::Error::ServiceUnknown(_) | zbus::fdo::Error::NameHasNoOwner(_)
        )
    {
        return format!(
            "systemd (org.freedesktop.systemd1) is not on the system bus at {address}; the \
             host services cannot be read without it"
        );
    }
    if let zbus::Error::FDO(fdo) = e
        && matches!(**fdo, zbus::fdo::Error::AccessDenied(_))
    {
        return format!(
            "the system bus at {address} denies reading systemd's units: {e}; allow this user \
             in the bus policy"
        );
    }
    format!("asking systemd on the system bus at {address} failed: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(unit: &str, state: UnitState) -> ServiceState {
        ServiceState {
            unit: unit.to_string(),
            state,
            sub_state: String::new(),
            description: String::new(),
        }
    }

    #[test]
    fn unit_state_from_systemd() {
        assert_eq!(
            UnitState::from_systemd("active", "loaded"),
            UnitState::Active
        );
        assert_eq!(
            UnitState::from_systemd("failed", "loaded"),
            UnitState::Failed
        );
        assert_eq!(
            UnitState::from_systemd("inactive", "not-found"),
            UnitState::NotInstalled
        );
        assert_eq!(
            UnitState::from_systemd("maintenance", "loaded"),
            UnitState::Unknown("maintenance".into())
        );
    }

    #[test]
    fn serializes_as_lowercase_strings() {
        let json = serde_json::to_value(state("x.service", UnitState::NotInstalled)).unwrap();
        assert_eq!(json["state"], "not-installed");
        let json = serde_json::to_value(UnitState::Unknown("why".into())).unwrap();
        assert_eq!(json, "unknown");
        let json = serde_json::to_value(BusStatus::Unavailable("no bus".into())).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"status": "unavailable", "reason": "no bus"})
        );
        let json = serde_json::to_value(BusStatus::Off).unwrap();
        assert_eq!(json, serde_json::json!({"status": "off"}));
    }

    #[test]
    fn fold_all_active_is_healthy() {
        let states = [
            state("nvidia-persistenced.service", UnitState::Active),
            state("nvidia-fabricmanager.service", UnitState::Active),
            state("nvidia-dcgm.service", UnitState::Active),
        ];
        assert!(fold(&states).is_empty());
    }

    #[test]
    fn fold_fabricmanager_failed_or_inactive_degrades() {
        for s in [
            UnitState::Failed,
            UnitState::Inactive,
            UnitState::Deactivating,
        ] {
            let reasons = fold(&[state("nvidia-fabricmanager.service", s.clone())]);
            assert_eq!(reasons.len(), 1, "{s:?}");
            assert!(
                reasons[0].starts_with(&format!("nvidia-fabricmanager is {s}: ")),
                "{reasons:?}"
            );
            assert!(reasons[0].contains("NVSwitch"), "{reasons:?}");
        }
        for s in [
            UnitState::Active,
            UnitState::Activating,
            UnitState::Reloading,
        ] {
            assert!(fold(&[state("nvidia-fabricmanager.service", s)]).is_empty());
        }
    }

    #[test]
    fn fold_persistenced_only_failed_degrades() {
        let reasons = fold(&[state("nvidia-persistenced.service", UnitState::Failed)]);
        assert_eq!(reasons.len(), 1);
        assert!(reasons[0].starts_with("nvidia-persistenced is failed: "));
        assert!(fold(&[state("nvidia-persistenced.service", UnitState::Inactive)]).is_empty());
    }

    #[test]
    fn fold_dcgm_never_degrades() {
        for s in [UnitState::Failed, UnitState::Inactive] {
            assert!(fold(&[state("nvidia-dcgm.service", s)]).is_empty());
        }
    }

    #[test]
    fn fold_not_installed_or_unknown_never_degrades() {
        for unit in [
            "nvidia-fabricmanager.service",
            "nvidia-persistenced.service",
            "other.service",
        ] {
            assert!(fold(&[state(unit, UnitState::NotInstalled)]).is_empty());
            assert!(fold(&[state(unit, UnitState::Unknown("no bus".into()))]).is_empty());
        }
    }

    #[test]
    fn fold_other_failed_unit_degrades_and_reasons_keep_order() {
        let reasons = fold(&[
            state("nvidia-persistenced.service", UnitState::Failed),
            state("my-infiniband.service", UnitState::Failed),
            state("nvidia-fabricmanager.service", UnitState::Failed),
            state("my-infiniband-helper.service", UnitState::Inactive),
        ]);
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].starts_with("nvidia-persistenced"));
        assert!(reasons[1].starts_with("my-infiniband.service is failed"));
        assert!(reasons[2].starts_with("nvidia-fabricmanager"));
    }
}
