//! Where model instances may run: only healthy GPUs with enough free memory, as
//! Triton places instance groups (`count` instances on each selected GPU).

use crate::inference::model_config::{InstanceGroup, InstanceKind};
use crate::inference::placement::{Device, Placement};

use super::health::Health;
use super::supervisor::{Gpus, NvmlStatus};

/// Places instances with the supervisor's latest view of the GPUs.
pub struct GpuPlacement {
    gpus: std::sync::Arc<Gpus>,
    /// A GPU instance needs this many times its model file's size free.
    memory_factor: f64,
}

impl GpuPlacement {
    /// A placement over `gpus`.
    pub fn new(gpus: std::sync::Arc<Gpus>, memory_factor: f64) -> GpuPlacement {
        GpuPlacement {
            gpus,
            memory_factor,
        }
    }

    /// GPUs that can take an instance of `model_bytes` now, by index, most free memory first,
    /// with their free bytes. A GPU not yet sampled is taken at its total memory.
    fn usable(&self, group: &InstanceGroup, model_bytes: u64) -> Vec<(u32, u64)> {
        if *self.gpus.nvml_status() != NvmlStatus::Ok {
            return Vec::new();
        }
        let need = (model_bytes as f64 * self.memory_factor) as u64;
        let mut usable: Vec<(u32, u64)> = self
            .gpus
            .statuses()
            .into_iter()
            // A degraded GPU keeps what it runs but takes nothing new: a throttling GPU or one
            // without its fabric manager is where new work would suffer first.
            .filter(|g| g.health.health == Health::Healthy)
            .filter(|g| {
                group.gpus.is_empty()
                    || group
                        .gpus
                        .iter()
                        .any(|&i| i64::from(i) == i64::from(g.inventory.index))
            })
            .map(|g| {
                let free = g
                    .sample
                    .as_ref()
                    .and_then(|s| s.fb_free_bytes)
                    .unwrap_or(g.inventory.memory_total_bytes);
                (g.inventory.index, free)
            })
            .filter(|(_, free)| *free >= need)
            .collect();
        usable.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        usable
    }
}

impl Placement for GpuPlacement {
    fn place(&self, _model: &str, group: &InstanceGroup, model_bytes: u64) -> Vec<Device> {
        let count = usize::try_from(group.count).unwrap_or(0).max(1);
        let on_gpus = |usable: &[(u32, u64)]| -> Vec<Device> {
            usable
                .iter()
                .flat_map(|(index, _)| std::iter::repeat_n(Device::Gpu(*index), count))
                .collect()
        };
        match group.kind {
            InstanceKind::Gpu => on_gpus(&self.usable(group, model_bytes)),
            // Triton's KIND_AUTO: the GPUs when there are usable ones, else the CPU.
            InstanceKind::Auto => {
                let usable = self.usable(group, model_bytes);
                if usable.is_empty() {
                    vec![Device::Cpu; count]
                } else {
                    on_gpus(&usable)
                }
            }
            InstanceKind::Cpu | InstanceKind::Model => vec![Device::Cpu; count],
        }
    }
}
