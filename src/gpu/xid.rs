//! What an XID number means, and what it says about the GPU's health. The driver logs XIDs
//! as bare numbers; an operator needs the meaning to know whether the application or the GPU
//! is at fault.

/// What an XID says about the GPU that reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XidClass {
    /// The running program is at fault; the GPU is fine.
    Application,
    /// The GPU still works but needs attention (a reset, a recording event, link errors).
    Degrading,
    /// The GPU cannot be trusted with work until it is reset or replaced.
    Fatal,
}

/// The meaning and class of an XID. Unknown numbers are application-class: the driver uses
/// new numbers mostly for program faults, and a false "failed" would move every model away.
pub fn describe(xid: u64) -> (&'static str, XidClass) {
    use XidClass::{Application, Degrading, Fatal};
    match xid {
        13 => (
            "graphics engine exception: a program faulted on the GPU",
            Application,
        ),
        31 => (
            "GPU memory page fault: a program accessed memory it does not own",
            Application,
        ),
        32 => ("invalid or corrupted push buffer stream", Degrading),
        38 => ("driver firmware error", Degrading),
        43 => (
            "GPU stopped processing: a program hit an error and was stopped",
            Application,
        ),
        45 => (
            "preemptive cleanup after an earlier error: a program was ended",
            Application,
        ),
        48 => ("double-bit ECC error: uncorrectable memory error", Fatal),
        61 => ("internal micro-controller breakpoint or warning", Degrading),
        62 => ("internal micro-controller halt", Fatal),
        63 => (
            "ECC page retirement or row remapping recorded: reset the GPU to apply it",
            Degrading,
        ),
        64 => (
            "ECC page retirement or row remapping could not be recorded",
            Fatal,
        ),
        68 => ("video processor exception", Degrading),
        69 => ("graphics engine class error", Application),
        74 => ("NVLink error", Degrading),
        79 => ("GPU has fallen off the bus", Fatal),
        92 => ("high single-bit ECC error rate", Degrading),
        94 => (
            "contained ECC error: the affected program was ended",
            Degrading,
        ),
        95 => (
            "uncontained ECC error: every program on the GPU is affected",
            Fatal,
        ),
        119 => ("GSP firmware did not answer in time", Fatal),
        120 => ("GSP firmware error", Fatal),
        _ => (
            "not in sparkbrain's table; see NVIDIA's XID catalogue",
            Application,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fell_off_the_bus_class_is_fatal_and_program_faults_are_not() {
        for fatal in [48, 79, 95] {
            assert_eq!(describe(fatal).1, XidClass::Fatal, "XID {fatal}");
        }
        for app in [13, 31, 43, 45] {
            assert_eq!(describe(app).1, XidClass::Application, "XID {app}");
        }
        assert_eq!(describe(63).1, XidClass::Degrading);
        assert!(describe(79).0.contains("fallen off the bus"));
        assert!(describe(4242).0.contains("catalogue"));
    }
}
