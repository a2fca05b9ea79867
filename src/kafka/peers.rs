//! Scaling out without a cluster adapter loses events silently: each record is consumed by
//! one member of the group and emitted only to that node's sockets, so a buyer connected to
//! another node never sees it and is never told (measured: 481 of 800 orders lost with two
//! nodes). Without `REDIS_URL` a node therefore watches its own consumer group and is not
//! ready while any other member shares it.
//!
//! Not ready rather than refusing to start: members come and go at run time (a replica
//! added later), a node that started alone has nothing to refuse then, and a node that
//! exited would crash-loop and take down the one deployment that works — a single replica.
//! Readiness keeps the orchestrator's traffic away and `/health` says why.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use tokio_util::sync::CancellationToken;

use crate::health::Health;
use rdkafka::ClientConfig;

/// How often the group's members are listed.
const CHECK_EVERY: Duration = Duration::from_secs(5);
/// How long one listing may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(5);

/// Members of `group` as its coordinator lists them, or `None` when it cannot be told
/// (broker away, a listing the broker refuses): then the last answer stands.
fn members(client: &BaseConsumer, group: &str) -> Option<usize> {
    match client.fetch_group_list(Some(group), LIST_TIMEOUT) {
        Ok(list) => Some(list.groups().iter().filter(|g| g.name() == group).map(|g| g.members().len()).sum()),
        Err(error) => {
            tracing::debug!(group, %error, "could not list the consumer group's members");
            None
        }
    }
}

/// Lists the group's members until `stop` fires; the node is not ready while there is more
/// than one (itself). Logs once per change of state.
/// `client` is the brokers' configuration with their security settings.
pub(crate) async fn watch(mut client: ClientConfig, group: String, health: Arc<Health>, stop: CancellationToken) -> anyhow::Result<()> {
    // A client of its own (no group.id: it joins nothing), so the listing never waits
    // behind the consumer's poll.
    let client: Arc<BaseConsumer> = Arc::new(client.set("client.id", "realtime-bridge-peers").create()?);
    let mut ticks = tokio::time::interval(CHECK_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        let (client, name) = (client.clone(), group.clone());
        // The listing blocks for up to its timeout (a broker away). On a thread of its own,
        // not tokio's blocking pool: the runtime's shutdown waits for that pool, and must
        // not wait for a listing nobody needs any more.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || tx.send(members(&client, &name)));
        let count = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            listed = rx => listed,
        };
        let Ok(Some(count)) = count else {
            continue;
        };
        if let Some(shared) = health.set_group_members(count) {
            if shared {
                tracing::warn!(
                    group = %group, members = count,
                    "other members share this consumer group but REDIS_URL is unset: each node would emit only to its own sockets and events would be lost; not ready until REDIS_URL is set on every node or this node is alone"
                );
            } else {
                tracing::info!(group = %group, members = count, "alone in the consumer group again; ready");
            }
        }
    }
}
