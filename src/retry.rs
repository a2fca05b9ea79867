//! Retrying with exponential backoff, the one way the service waits for something outside
//! it to come back (the history store, the cluster link, the dead-letter topic, a failed
//! component): each pause doubles up to a ceiling, and a pause ends early when its stop
//! token fires.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The pauses between attempts: `min`, doubling up to `max`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        Backoff { next: min, min, max }
    }

    /// The pause before the next attempt; the one after it is twice as long (up to `max`).
    pub(crate) fn next_pause(&mut self) -> Duration {
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }

    /// How long the next pause will be (for the log line announcing it).
    pub(crate) fn upcoming(&self) -> Duration {
        self.next
    }

    /// Back to the shortest pause (after a success that lasted).
    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }

    /// Sleeps the next pause; `false` when `stop` fired first (give up).
    pub(crate) async fn pause(&mut self, stop: &CancellationToken) -> bool {
        let pause = self.next_pause();
        tokio::select! {
            _ = stop.cancelled() => false,
            _ = tokio::time::sleep(pause) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_up_to_the_ceiling_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let pauses: Vec<u128> = (0..4).map(|_| b.next_pause().as_millis()).collect();
        assert_eq!(pauses, [100, 200, 350, 350]);
        b.reset();
        assert_eq!(b.next_pause(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_ends_when_stopped() {
        let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let stop = CancellationToken::new();
        let stopper = stop.clone();
        tokio::spawn(async move { stopper.cancel() });
        assert!(!b.pause(&stop).await);
        assert!(b.pause(&CancellationToken::new()).await, "an unstopped pause runs out");
    }
}
