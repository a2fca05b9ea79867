//! librdkafka's mock cluster, run in process so the service starts with no Kafka configured.
//!
//! Development only: it keeps records in memory and speaks enough of the Kafka protocol
//! for producers and consumer groups. The mock cluster is `!Send`, so it lives on its own
//! thread until the handle is dropped.

use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::Context;
use rdkafka::mocking::MockCluster;

/// A running development broker; dropping it stops the broker.
pub struct DevBroker {
    bootstrap: String,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl DevBroker {
    /// Starts a one-broker mock cluster and creates `topics` with `partitions` each.
    pub fn start(topics: &[&str], partitions: i32) -> anyhow::Result<DevBroker> {
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new().name("dev-broker".into()).spawn(move || {
            let cluster = match MockCluster::new(1) {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready_tx.send(Err(e).context("starting the mock cluster"));
                    return;
                }
            };
            for t in &topics {
                if let Err(e) = cluster.create_topic(t, partitions, 1) {
                    let _ = ready_tx.send(Err(e).with_context(|| format!("creating topic {t}")));
                    return;
                }
            }
            let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
            // Returns when the handle is dropped (the sender goes away).
            let _ = stop_rx.recv();
        })?;
        let bootstrap = ready_rx.recv().context("dev broker thread exited")??;
        Ok(DevBroker {
            bootstrap,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// `host:port` to give producers and consumers.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }
}

impl Drop for DevBroker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
