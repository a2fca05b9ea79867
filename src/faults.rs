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
    /// A socket's connect handler starts late (as on a busy runtime), so its transport can
    /// close before it registers its disconnect handler.
    SlowConnect,
    /// A socket's history read (head, open, snapshot) takes long (as a Redis round trip may), so
    /// what the socket does after it can land after a disconnect or a client event.
    SlowRead,
}

/// How long a slow fault ([`Fault::SlowConnect`], [`Fault::SlowRead`]) delays.
pub const SLOW_FAULT_DELAY: std::time::Duration = std::time::Duration::from_millis(400);

/// The faults armed in one app.
#[derive(Debug, Default)]
pub struct Faults {
    #[cfg(feature = "fault-injection")]
    armed: [std::sync::atomic::AtomicU32; 5],
    /// Slow faults whose delay has ended.
    #[cfg(feature = "fault-injection")]
    delayed: std::sync::atomic::AtomicU32,
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

    /// Waits [`SLOW_FAULT_DELAY`] if `fault` fires now.
    pub(crate) async fn delay(&self, fault: Fault) {
        if self.fire(fault) {
            tokio::time::sleep(SLOW_FAULT_DELAY).await;
            #[cfg(feature = "fault-injection")]
            self.delayed.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        }
    }

    /// How many slow faults have ended their delay.
    #[cfg(feature = "fault-injection")]
    pub fn delayed(&self) -> u32 {
        self.delayed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Makes `fault` fire the next `times` times its place is reached.
    #[cfg(feature = "fault-injection")]
    pub fn arm(&self, fault: Fault, times: u32) {
        self.armed[fault as usize].fetch_add(times, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The history as socket handlers see it: with the `fault-injection` feature, reads that
/// [`Fault::SlowRead`] can delay; otherwise `history` itself.
pub(crate) fn socket_history(
    history: std::sync::Arc<dyn crate::history::History>,
    faults: &std::sync::Arc<Faults>,
) -> std::sync::Arc<dyn crate::history::History> {
    #[cfg(feature = "fault-injection")]
    {
        std::sync::Arc::new(SlowReads {
            inner: history,
            faults: faults.clone(),
        })
    }
    #[cfg(not(feature = "fault-injection"))]
    {
        let _ = faults;
        history
    }
}

#[cfg(feature = "fault-injection")]
struct SlowReads {
    inner: std::sync::Arc<dyn crate::history::History>,
    faults: std::sync::Arc<Faults>,
}

#[cfg(feature = "fault-injection")]
#[async_trait::async_trait]
impl crate::history::History for SlowReads {
    async fn append_all(
        &self,
        entries: Vec<crate::history::NewEntry>,
    ) -> Result<Vec<std::sync::Arc<crate::history::Entry>>, crate::history::HistoryError> {
        self.inner.append_all(entries).await
    }
    async fn head(&self, room: &str) -> Result<crate::history::Cursor, crate::history::HistoryError> {
        self.faults.delay(Fault::SlowRead).await;
        self.inner.head(room).await
    }
    async fn open(&self, room: &str) -> Result<crate::history::Cursor, crate::history::HistoryError> {
        self.faults.delay(Fault::SlowRead).await;
        self.inner.open(room).await
    }
    async fn snapshot(&self, room: &str) -> Result<crate::history::Snapshot, crate::history::HistoryError> {
        self.faults.delay(Fault::SlowRead).await;
        self.inner.snapshot(room).await
    }
    async fn since(&self, room: &str, cursor: &crate::history::Cursor) -> Result<crate::history::Replay, crate::history::HistoryError> {
        self.inner.since(room, cursor).await
    }
}
