//! Where model instances run. The serving runtime asks a [`Placement`]; the GPU supervisor will
//! provide one that offers only healthy GPUs with enough free memory. Until then every instance
//! is placed on the CPU.

use super::model_config::{InstanceGroup, InstanceKind};

/// A device an instance can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// A GPU by its index.
    Gpu(u32),
}

/// Decides the device of each instance of a model.
pub trait Placement: Send + Sync {
    /// Devices for the instances of one group (one entry per instance), for a model whose file
    /// is `model_bytes` long. An empty answer means the group cannot be placed.
    fn place(&self, model: &str, group: &InstanceGroup, model_bytes: u64) -> Vec<Device>;
}

/// Places every instance on the CPU: the state of a box without a usable GPU.
#[derive(Debug, Default, Clone, Copy)]
pub struct CpuOnly;

impl Placement for CpuOnly {
    fn place(&self, _model: &str, group: &InstanceGroup, _model_bytes: u64) -> Vec<Device> {
        let count = usize::try_from(group.count).unwrap_or(0).max(1);
        match group.kind {
            // A group that insists on GPUs gets them from a GPU-aware placement only.
            InstanceKind::Gpu => Vec::new(),
            InstanceKind::Auto | InstanceKind::Cpu | InstanceKind::Model => {
                vec![Device::Cpu; count]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_only_places_cpu_and_auto_groups_and_refuses_gpu_groups() {
        let group = |kind, count| InstanceGroup {
            kind,
            count,
            ..InstanceGroup::default()
        };
        assert_eq!(
            CpuOnly.place("m", &group(InstanceKind::Auto, 0), 1),
            vec![Device::Cpu]
        );
        assert_eq!(CpuOnly.place("m", &group(InstanceKind::Cpu, 3), 1).len(), 3);
        assert!(
            CpuOnly
                .place("m", &group(InstanceKind::Gpu, 2), 1)
                .is_empty()
        );
    }
}
