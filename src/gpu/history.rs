//! A bounded in-memory history of a GPU's telemetry for charts: every sample for a recent
//! window, and one averaged point per minute for a longer one.

use std::collections::VecDeque;

use serde::Serialize;

use super::reading::GpuSample;

/// One point of a chart: the fields a console plots.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Point {
    /// Milliseconds since the Unix epoch (the start of the minute for per-minute points).
    pub at_ms: i64,
    /// GPU utilisation, percent.
    pub gpu_util_pct: Option<f64>,
    /// Memory-copy utilisation, percent.
    pub mem_copy_util_pct: Option<f64>,
    /// Framebuffer used, bytes.
    pub fb_used_bytes: Option<f64>,
    /// GPU temperature, °C.
    pub gpu_temp_c: Option<f64>,
    /// Memory temperature, °C.
    pub memory_temp_c: Option<f64>,
    /// Power draw, watts.
    pub power_watts: Option<f64>,
    /// SM clock, MHz.
    pub sm_clock_mhz: Option<f64>,
    /// Memory clock, MHz.
    pub mem_clock_mhz: Option<f64>,
}

impl Point {
    fn of(s: &GpuSample) -> Point {
        let f = |v: Option<u32>| v.map(f64::from);
        Point {
            at_ms: s.at_ms,
            gpu_util_pct: f(s.gpu_util_pct),
            mem_copy_util_pct: f(s.mem_copy_util_pct),
            fb_used_bytes: s.fb_used_bytes.map(|b| b as f64),
            gpu_temp_c: f(s.gpu_temp_c),
            memory_temp_c: f(s.memory_temp_c),
            power_watts: s.power_watts,
            sm_clock_mhz: f(s.sm_clock_mhz),
            mem_clock_mhz: f(s.mem_clock_mhz),
        }
    }

    fn fields_mut(&mut self) -> [&mut Option<f64>; 8] {
        [
            &mut self.gpu_util_pct,
            &mut self.mem_copy_util_pct,
            &mut self.fb_used_bytes,
            &mut self.gpu_temp_c,
            &mut self.memory_temp_c,
            &mut self.power_watts,
            &mut self.sm_clock_mhz,
            &mut self.mem_clock_mhz,
        ]
    }
}

/// Sums of the samples of the minute being filled, per field: (sum, count).
#[derive(Debug, Default)]
struct MinuteSums {
    minute: i64,
    sums: [(f64, u32); 8],
}

/// The history of one GPU.
#[derive(Debug)]
pub struct History {
    recent: VecDeque<Point>,
    recent_cap: usize,
    minutes: VecDeque<Point>,
    minutes_cap: usize,
    filling: Option<MinuteSums>,
}

/// Which resolution a caller wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Every sample.
    Samples,
    /// One averaged point per minute.
    Minutes,
}

const MINUTE_MS: i64 = 60_000;

impl History {
    /// A history keeping `recent_cap` samples and `minutes_cap` per-minute points.
    pub fn new(recent_cap: usize, minutes_cap: usize) -> History {
        History {
            recent: VecDeque::with_capacity(recent_cap.min(4096)),
            recent_cap,
            minutes: VecDeque::with_capacity(minutes_cap.min(4096)),
            minutes_cap,
            filling: None,
        }
    }

    /// Adds a sample.
    pub fn push(&mut self, sample: &GpuSample) {
        let mut point = Point::of(sample);
        if self.recent_cap > 0 {
            if self.recent.len() == self.recent_cap {
                self.recent.pop_front();
            }
            self.recent.push_back(point);
        }
        let minute = sample.at_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        if self.filling.as_ref().is_some_and(|f| f.minute != minute) {
            self.close_minute();
        }
        let filling = self.filling.get_or_insert_with(|| MinuteSums {
            minute,
            ..MinuteSums::default()
        });
        for (slot, value) in filling.sums.iter_mut().zip(point.fields_mut()) {
            if let Some(v) = value {
                slot.0 += *v;
                slot.1 += 1;
            }
        }
    }

    fn close_minute(&mut self) {
        let Some(filling) = self.filling.take() else {
            return;
        };
        if self.minutes_cap == 0 {
            return;
        }
        let mut point = Point {
            at_ms: filling.minute,
            ..Point::default()
        };
        for (value, (sum, count)) in point.fields_mut().into_iter().zip(filling.sums) {
            *value = (count > 0).then(|| sum / f64::from(count));
        }
        if self.minutes.len() == self.minutes_cap {
            self.minutes.pop_front();
        }
        self.minutes.push_back(point);
    }

    /// Points at or after `since_ms`, oldest first; per-minute points exclude the minute being
    /// filled.
    pub fn points(&self, resolution: Resolution, since_ms: i64) -> Vec<Point> {
        let ring = match resolution {
            Resolution::Samples => &self.recent,
            Resolution::Minutes => &self.minutes,
        };
        let start = ring.partition_point(|p| p.at_ms < since_ms);
        ring.range(start..).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64, util: u32) -> GpuSample {
        GpuSample {
            at_ms: ms,
            gpu_util_pct: Some(util),
            ..GpuSample::default()
        }
    }

    #[test]
    fn recent_samples_are_bounded_and_minutes_are_averaged() {
        let mut h = History::new(3, 2);
        for (i, util) in [10, 20, 30, 40].into_iter().enumerate() {
            h.push(&at(i as i64 * 1000, util));
        }
        let recent = h.points(Resolution::Samples, 0);
        assert_eq!(recent.len(), 3);
        assert_eq!(recent[0].gpu_util_pct, Some(20.0));
        assert_eq!(h.points(Resolution::Samples, 2500).len(), 1);
        // The first minute closes when a sample of the next arrives.
        assert!(h.points(Resolution::Minutes, 0).is_empty());
        h.push(&at(60_000, 90));
        let minutes = h.points(Resolution::Minutes, 0);
        assert_eq!(minutes.len(), 1);
        assert_eq!(minutes[0].gpu_util_pct, Some(25.0));
        assert_eq!(minutes[0].power_watts, None);
        h.push(&at(120_000, 0));
        h.push(&at(180_000, 0));
        let minutes = h.points(Resolution::Minutes, 0);
        assert_eq!(minutes.len(), 2, "bounded to two minutes");
        assert_eq!(minutes[0].at_ms, 60_000);
    }
}
