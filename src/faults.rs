//! Faults a test build can inject, to prove the supervision works (feature
//! `fault-injection`, enabled by the test command only). Without the feature every check
//! is a constant `false` and nothing here can be triggered.

/// A place where a fault can be injected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The consumer loop panics after receiving a record, before settling it.
    ConsumerPanic,
    /// Handling one record panics (as a bug in parsing or routing would).
    RecordPanic,
    /// A housekeeping loop panics.
    HousekeepingPanic,
}

/// The faults armed in one app.
#[derive(Debug, Default)]
pub struct Faults {
    #[cfg(feature = "fault-injection")]
    armed: [std::sync::atomic::AtomicU32; 3],
}

impl Faults {
    /// Whether `fault` fires now (each arming fires once).
    #[inline]
    pub(crate) fn fire(&self, fault: Fault) -> bool {
        #[cfg(feature = "fault-injection")]
        {
            use std::sync::atomic::Ordering;
            self.armed[fault as usize]
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                .is_ok()
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            let _ = fault;
            false
        }
    }

    /// Makes `fault` fire the next `times` times its place is reached.
    #[cfg(feature = "fault-injection")]
    pub fn arm(&self, fault: Fault, times: u32) {
        self.armed[fault as usize].fetch_add(times, std::sync::atomic::Ordering::AcqRel);
    }
}
