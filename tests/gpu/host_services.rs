//! The host services the GPUs depend on, watched over D-Bus.
//!
//! The watcher ([`sparkbrain::gpu::host_services::HostServices`]) talks to a stand-in systemd
//! on a private `dbus-daemon` (see `systemd_standin.rs`), because tests cannot start, stop or
//! fail the host's real NVIDIA services, nor take its system bus away.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::systemd_standin::{StandIn, unit_path};
use sparkbrain::config::GpuConfig;
use sparkbrain::gpu::host_services::{
    BusStatus, HostServices, RECONNECT_INTERVAL, ServiceState, UnitState, fold,
};

const FABRIC: &str = "nvidia-fabricmanager.service";
const PERSISTENCED: &str = "nvidia-persistenced.service";
const DCGM: &str = "nvidia-dcgm.service";

/// A `[gpu]` section watching `units` on `bus`.
fn config(bus: &str, units: &[&str]) -> GpuConfig {
    GpuConfig {
        enabled: true,
        nvml_library: String::new(),
        sample_interval_ms: 1000,
        history_seconds: 600,
        history_minutes: 60,
        placement_memory_factor: 1.2,
        host_services: units.iter().map(|u| u.to_string()).collect(),
        system_bus: bus.to_string(),
    }
}

/// Every list of states `on_change` was called with.
type Calls = Arc<Mutex<Vec<Vec<ServiceState>>>>;

/// Starts a watcher that records its `on_change` calls.
async fn watch(config: &GpuConfig) -> (HostServices, Calls) {
    let calls: Calls = Arc::default();
    let recorded = calls.clone();
    let services = HostServices::start(config, move |states: &[ServiceState]| {
        recorded.lock().unwrap().push(states.to_vec());
    })
    .await;
    (services, calls)
}

/// Polls `done` until it holds or `within` passes; returns whether it held.
async fn wait_for(within: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn state_of(states: &[ServiceState], unit: &str) -> UnitState {
    states
        .iter()
        .find(|s| s.unit == unit)
        .map(|s| s.state.clone())
        .unwrap_or_else(|| panic!("{unit} is not in {states:?}"))
}

#[test]
fn unit_paths_are_escaped_like_systemd() {
    assert_eq!(
        unit_path(FABRIC),
        "/org/freedesktop/systemd1/unit/nvidia_2dfabricmanager_2eservice"
    );
    assert_eq!(
        unit_path("1password.service"),
        "/org/freedesktop/systemd1/unit/_31password_2eservice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_active_failed_and_not_installed_units() {
    let standin = StandIn::start(&[
        (FABRIC, "active", "loaded"),
        (PERSISTENCED, "failed", "loaded"),
        (DCGM, "inactive", "not-found"),
    ])
    .await;
    // A unit the stand-in has never heard of is loaded as a "not-found" stub, as by systemd.
    let (services, calls) = watch(&config(
        &standin.address(),
        &[FABRIC, PERSISTENCED, DCGM, "nvidia-imex.service"],
    ))
    .await;

    let (status, states) = services.snapshot();
    assert_eq!(status, BusStatus::Connected);
    assert_eq!(
        states,
        vec![
            ServiceState {
                unit: FABRIC.into(),
                state: UnitState::Active,
                sub_state: "running".into(),
                description: format!("{FABRIC} (stand-in)"),
            },
            ServiceState {
                unit: PERSISTENCED.into(),
                state: UnitState::Failed,
                sub_state: "failed".into(),
                description: format!("{PERSISTENCED} (stand-in)"),
            },
            ServiceState {
                unit: DCGM.into(),
                state: UnitState::NotInstalled,
                sub_state: "dead".into(),
                description: format!("{DCGM} (stand-in)"),
            },
            ServiceState {
                unit: "nvidia-imex.service".into(),
                state: UnitState::NotInstalled,
                sub_state: "dead".into(),
                description: "nvidia-imex.service".into(),
            },
        ]
    );
    assert_eq!(calls.lock().unwrap().last(), Some(&states));
    let reasons = fold(&states);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].starts_with("nvidia-persistenced is failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_is_seen_through_on_change_and_snapshot() {
    let standin = StandIn::start(&[
        (FABRIC, "active", "loaded"),
        (PERSISTENCED, "active", "loaded"),
    ])
    .await;
    let (services, calls) = watch(&config(&standin.address(), &[FABRIC, PERSISTENCED])).await;
    assert_eq!(services.snapshot().0, BusStatus::Connected);
    assert!(fold(&services.snapshot().1).is_empty());

    standin.set_state(FABRIC, "failed", "failed").await;
    let seen = wait_for(Duration::from_secs(2), || {
        calls
            .lock()
            .unwrap()
            .last()
            .is_some_and(|states| state_of(states, FABRIC) == UnitState::Failed)
    })
    .await;
    assert!(seen, "on_change calls: {:?}", calls.lock().unwrap());
    let (status, states) = services.snapshot();
    assert_eq!(status, BusStatus::Connected);
    assert_eq!(state_of(&states, FABRIC), UnitState::Failed);
    assert_eq!(states[0].sub_state, "failed");
    assert_eq!(state_of(&states, PERSISTENCED), UnitState::Active);
    let reasons = fold(&states);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].starts_with("nvidia-fabricmanager is failed: GPUs on NVSwitch systems"),
        "{reasons:?}"
    );

    // Back up; and a signal that only invalidates is followed by a read as well.
    standin.set_state(FABRIC, "active", "running").await;
    assert!(
        wait_for(Duration::from_secs(2), || state_of(
            &services.snapshot().1,
            FABRIC
        ) == UnitState::Active)
        .await
    );
    standin.set_state(PERSISTENCED, "activating", "start").await;
    standin.invalidate(PERSISTENCED).await;
    assert!(
        wait_for(Duration::from_secs(2), || state_of(
            &services.snapshot().1,
            PERSISTENCED
        ) == UnitState::Activating)
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_is_not_there_is_unavailable_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = format!("unix:path={}", dir.path().join("no-bus").display());
    let started = Instant::now();
    let (services, _calls) = watch(&config(&nowhere, &[FABRIC, DCGM])).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, states) = services.snapshot();
    let BusStatus::Unavailable(reason) = status else {
        panic!("expected Unavailable, got {status:?}");
    };
    assert!(reason.contains("does not exist"), "{reason}");
    assert!(reason.contains("system_bus"), "{reason}");
    assert_eq!(states.len(), 2);
    assert!(
        states
            .iter()
            .all(|s| matches!(s.state, UnitState::Unknown(_))),
        "{states:?}"
    );
    assert!(fold(&states).is_empty());

    // An address that is not a D-Bus address at all is no panic either.
    let (services, _calls) = watch(&config("this is not an address", &[FABRIC])).await;
    assert!(
        matches!(services.snapshot().0, BusStatus::Unavailable(_)),
        "{:?}",
        services.snapshot()
    );
    services.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_watches_nothing() {
    let (services, calls) = watch(&config("off", &[FABRIC, PERSISTENCED])).await;
    assert_eq!(services.snapshot(), (BusStatus::Off, Vec::new()));
    assert!(calls.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_bus_makes_states_unknown_and_a_new_bus_is_reconnected() {
    let mut standin = StandIn::start(&[(FABRIC, "active", "loaded")]).await;
    let (services, _calls) = watch(&config(&standin.address(), &[FABRIC])).await;
    assert_eq!(services.snapshot().0, BusStatus::Connected);

    standin.kill_bus();
    assert!(
        wait_for(Duration::from_secs(2), || matches!(
            services.snapshot(),
            (BusStatus::Unavailable(_), ref states)
                if matches!(states[0].state, UnitState::Unknown(_))
        ))
        .await,
        "{:?}",
        services.snapshot()
    );
    let (BusStatus::Unavailable(reason), _) = services.snapshot() else {
        unreachable!()
    };
    assert!(reason.contains("lost the connection"), "{reason}");

    // While it was away the unit failed; the new bus at the same address shows it.
    standin.restart_bus().await;
    standin.set_state(FABRIC, "failed", "failed").await;
    assert!(
        wait_for(RECONNECT_INTERVAL + Duration::from_secs(5), || {
            services.snapshot().0 == BusStatus::Connected
        })
        .await,
        "{:?}",
        services.snapshot()
    );
    assert_eq!(state_of(&services.snapshot().1, FABRIC), UnitState::Failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_reexecuting_on_the_same_bus_is_followed() {
    let mut standin = StandIn::start(&[(FABRIC, "active", "loaded")]).await;
    let (services, _calls) = watch(&config(&standin.address(), &[FABRIC])).await;
    assert_eq!(services.snapshot().0, BusStatus::Connected);

    // The unit fails while systemd re-executes: the watcher has to read it again, not wait
    // for a signal it missed, and not wait for its ten-second reconnect either.
    standin.set_state_quietly(FABRIC, "failed", "failed");
    standin.restart_systemd().await;
    assert!(
        wait_for(Duration::from_secs(3), || {
            let (status, states) = services.snapshot();
            status == BusStatus::Connected && state_of(&states, FABRIC) == UnitState::Failed
        })
        .await,
        "{:?}",
        services.snapshot()
    );
    // And it follows the new systemd's signals.
    standin.set_state(FABRIC, "active", "running").await;
    assert!(
        wait_for(Duration::from_secs(2), || state_of(
            &services.snapshot().1,
            FABRIC
        ) == UnitState::Active)
        .await
    );
}
