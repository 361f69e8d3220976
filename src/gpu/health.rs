//! Health of one GPU from its samples, its XIDs and the host services: healthy, degraded
//! (usable, needs attention) or failed (no work is placed on it).

use serde::Serialize;

use super::reading::GpuSample;
use super::xid::{self, XidClass};

/// A GPU's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Works normally.
    Healthy,
    /// Works, but something needs attention; it still takes work.
    Degraded,
    /// Cannot be trusted with work until it is reset or replaced.
    Failed,
}

impl Health {
    /// The lowercase name used in the API, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Failed => "failed",
        }
    }
}

/// A health and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthState {
    /// The health.
    pub health: Health,
    /// What makes it less than healthy, each a sentence an operator can act on.
    pub reasons: Vec<String>,
}

/// Thermal and power slowdowns in NVML's throttle-reason mask: hardware slowdown (0x8),
/// software thermal (0x20), hardware thermal (0x40) and power-brake (0x80). The software power
/// cap (0x4) is left out: a busy GPU sits at its power limit as a matter of course.
const THROTTLE_DEGRADING: &[(u64, &str)] = &[
    (0x8, "hardware slowdown"),
    (0x20, "software thermal slowdown"),
    (0x40, "hardware thermal slowdown"),
    (0x80, "power brake slowdown"),
];

/// How long a rise in corrected ECC errors or a degrading XID keeps a GPU degraded.
const RECENT_MS: i64 = 10 * 60 * 1000;

/// Remembers what one sample cannot say: earlier ECC counts, XIDs, a failure that stays.
#[derive(Debug, Default)]
pub struct Tracker {
    /// Why the GPU failed; a failure stays until the daemon restarts (after the GPU's reset).
    fatal: Option<String>,
    last_sbe: Option<u64>,
    sbe_rose_at: Option<i64>,
    degrading_xid: Option<(u64, i64)>,
    /// Samples in a row in which NVML could read nothing of the GPU.
    unreadable: u32,
}

/// Samples in a row NVML may fail to read anything of a GPU before it counts as failed: one
/// or two are a hiccup (degraded), more are a device NVML has lost touch with.
const UNREADABLE_LIMIT: u32 = 3;

impl Tracker {
    /// Takes an XID into account.
    pub fn xid(&mut self, number: u64, at_ms: i64) {
        let (meaning, class) = xid::describe(number);
        match class {
            XidClass::Fatal => {
                if self.fatal.is_none() {
                    self.fatal = Some(format!("XID {number}: {meaning}"));
                }
            }
            XidClass::Degrading => self.degrading_xid = Some((number, at_ms)),
            XidClass::Application => {}
        }
    }

    /// Marks the GPU failed for a reason found outside its samples.
    pub fn fail(&mut self, reason: String) {
        if self.fatal.is_none() {
            self.fatal = Some(reason);
        }
    }

    /// The health after `sample`, with `host` the reasons host services give to degrade.
    pub fn evaluate(&mut self, sample: &GpuSample, host: &[String]) -> HealthState {
        if sample.gpu_lost {
            self.fail(format!(
                "NVML reports the GPU is lost ({})",
                sample.errors.join("; ")
            ));
        }
        if sample.ecc_dbe_volatile.is_some_and(|n| n > 0) {
            self.fail(format!(
                "{} uncorrectable (double-bit) ECC errors since boot",
                sample.ecc_dbe_volatile.unwrap_or_default()
            ));
        }
        if sample.remap_failed == Some(true) {
            self.fail("a row remapping failed: the GPU needs service".to_string());
        }
        if sample.errors.is_empty() || readable(sample) {
            self.unreadable = 0;
        } else {
            self.unreadable += 1;
            if self.unreadable >= UNREADABLE_LIMIT {
                self.fail(format!(
                    "NVML could read nothing of the GPU in {UNREADABLE_LIMIT} samples in a row ({})",
                    sample.errors.join("; ")
                ));
            }
        }
        if let Some(reason) = &self.fatal {
            return HealthState {
                health: Health::Failed,
                reasons: vec![reason.clone()],
            };
        }
        let mut reasons = Vec::new();
        if let Some(mask) = sample.throttle_reasons {
            let slow: Vec<&str> = THROTTLE_DEGRADING
                .iter()
                .filter(|(bit, _)| mask & bit != 0)
                .map(|(_, name)| *name)
                .collect();
            if !slow.is_empty() {
                reasons.push(format!("clocks throttled: {}", slow.join(", ")));
            }
        }
        if let Some(sbe) = sample.ecc_sbe_volatile {
            if self.last_sbe.is_some_and(|last| sbe > last) {
                self.sbe_rose_at = Some(sample.at_ms);
            }
            self.last_sbe = Some(sbe);
        }
        if self
            .sbe_rose_at
            .is_some_and(|at| sample.at_ms - at < RECENT_MS)
        {
            reasons.push(format!(
                "corrected (single-bit) ECC errors are rising: {} since boot",
                self.last_sbe.unwrap_or_default()
            ));
        }
        if sample.remap_pending == Some(true) {
            reasons.push("a row remapping is pending: reset the GPU to apply it".to_string());
        }
        if sample.retired_pages_pending == Some(true) {
            reasons.push("a page retirement is pending: reload the driver to apply it".to_string());
        }
        if let Some((number, at)) = self.degrading_xid
            && sample.at_ms - at < RECENT_MS
        {
            reasons.push(format!("XID {number}: {}", xid::describe(number).0));
        }
        if !sample.errors.is_empty() {
            reasons.push(format!("NVML errors: {}", sample.errors.join("; ")));
        }
        reasons.extend(host.iter().cloned());
        HealthState {
            health: if reasons.is_empty() {
                Health::Healthy
            } else {
                Health::Degraded
            },
            reasons,
        }
    }
}

/// Whether any telemetry field of the sample was read.
fn readable(s: &GpuSample) -> bool {
    s.gpu_util_pct.is_some()
        || s.fb_used_bytes.is_some()
        || s.gpu_temp_c.is_some()
        || s.power_watts.is_some()
        || s.sm_clock_mhz.is_some()
        || s.energy_mj.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: i64) -> GpuSample {
        GpuSample {
            at_ms,
            ecc_sbe_volatile: Some(0),
            ecc_dbe_volatile: Some(0),
            throttle_reasons: Some(0x1),
            ..GpuSample::default()
        }
    }

    #[test]
    fn a_quiet_gpu_is_healthy_and_idle_clocks_are_not_throttling() {
        let mut t = Tracker::default();
        let h = t.evaluate(&sample(0), &[]);
        assert_eq!(h.health, Health::Healthy, "{h:?}");
    }

    #[test]
    fn thermal_throttling_rising_sbe_and_host_services_degrade() {
        let mut t = Tracker::default();
        let hot = GpuSample {
            throttle_reasons: Some(0x40),
            ..sample(0)
        };
        let h = t.evaluate(&hot, &[]);
        assert_eq!(h.health, Health::Degraded);
        assert!(h.reasons[0].contains("hardware thermal"), "{h:?}");

        let mut t = Tracker::default();
        t.evaluate(&sample(0), &[]);
        let rose = GpuSample {
            ecc_sbe_volatile: Some(3),
            ..sample(1000)
        };
        let h = t.evaluate(&rose, &[]);
        assert!(h.reasons.iter().any(|r| r.contains("single-bit")), "{h:?}");
        // Still degraded shortly after, healthy once the rise is old.
        assert_eq!(
            t.evaluate(
                &GpuSample {
                    ecc_sbe_volatile: Some(3),
                    ..sample(5000)
                },
                &[]
            )
            .health,
            Health::Degraded
        );
        let later = GpuSample {
            ecc_sbe_volatile: Some(3),
            ..sample(1000 + RECENT_MS)
        };
        assert_eq!(t.evaluate(&later, &[]).health, Health::Healthy);

        let h = Tracker::default().evaluate(&sample(0), &["fabric manager failed".into()]);
        assert_eq!(h.health, Health::Degraded);
    }

    #[test]
    fn fatal_xid_double_bit_ecc_and_lost_gpu_fail_and_stay_failed() {
        let mut t = Tracker::default();
        t.xid(13, 0);
        assert_eq!(t.evaluate(&sample(0), &[]).health, Health::Healthy);
        t.xid(79, 10);
        let h = t.evaluate(&sample(20), &[]);
        assert_eq!(h.health, Health::Failed);
        assert!(h.reasons[0].contains("XID 79"), "{h:?}");
        assert_eq!(t.evaluate(&sample(99_000_000), &[]).health, Health::Failed);

        let dbe = GpuSample {
            ecc_dbe_volatile: Some(1),
            ..sample(0)
        };
        assert_eq!(
            Tracker::default().evaluate(&dbe, &[]).health,
            Health::Failed
        );
        let lost = GpuSample {
            gpu_lost: true,
            errors: vec!["temperature: GPU is lost".into()],
            ..sample(0)
        };
        let h = Tracker::default().evaluate(&lost, &[]);
        assert_eq!(h.health, Health::Failed);
        assert!(h.reasons[0].contains("lost"), "{h:?}");
    }

    #[test]
    fn a_gpu_nvml_cannot_read_at_all_fails_after_three_samples() {
        let mut t = Tracker::default();
        let dead = |at| GpuSample {
            at_ms: at,
            errors: vec![
                "utilization: Unknown Error".into(),
                "temperature: Unknown Error".into(),
            ],
            ..GpuSample::default()
        };
        assert_eq!(t.evaluate(&dead(0), &[]).health, Health::Degraded);
        assert_eq!(t.evaluate(&dead(1), &[]).health, Health::Degraded);
        let h = t.evaluate(&dead(2), &[]);
        assert_eq!(h.health, Health::Failed);
        assert!(h.reasons[0].contains("could read nothing"), "{h:?}");
    }

    #[test]
    fn intermittent_nvml_errors_degrade_without_failing() {
        let flaky = GpuSample {
            errors: vec!["power: Unknown Error".into()],
            ..sample(0)
        };
        let h = Tracker::default().evaluate(&flaky, &[]);
        assert_eq!(h.health, Health::Degraded);
        assert!(h.reasons[0].contains("power"), "{h:?}");
    }
}
