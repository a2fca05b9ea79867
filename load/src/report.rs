//! What a run measured: per-event latency (produce → receive), deliveries, losses and
//! duplicates per connection, and the server's memory and CPU; printed as one table and
//! written as JSON.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Histograms are sharded by connection so tasks rarely wait for each other.
const SHARDS: usize = 32;

/// Collects receipts from every client task.
pub struct Recorder {
    start: Instant,
    /// µs after `start` at which event `n` was handed to the producer (0: not yet).
    produced_at: Vec<AtomicU64>,
    latency: Vec<Mutex<Histogram<u64>>>,
    /// Event numbers received, per connection.
    received: Vec<Mutex<Vec<u32>>>,
    /// Events received.
    pub delivered: AtomicU64,
    /// Events without a tool number (connection:success aside: sync:position and the like).
    pub other_events: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
}

impl Recorder {
    /// Room for `connections` clients and up to `max_events` events.
    pub fn new(connections: usize, max_events: usize) -> Recorder {
        Recorder {
            start: Instant::now(),
            produced_at: (0..max_events).map(|_| AtomicU64::new(0)).collect(),
            latency: (0..SHARDS)
                .map(|_| Mutex::new(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid bounds")))
                .collect(),
            received: (0..connections).map(|_| Mutex::new(Vec::new())).collect(),
            delivered: AtomicU64::new(0),
            other_events: AtomicU64::new(0),
            first_us: AtomicU64::new(u64::MAX),
            last_us: AtomicU64::new(0),
        }
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Event `n` is being produced now.
    pub fn produced(&self, n: u64) {
        if let Some(at) = self.produced_at.get(n as usize) {
            at.store(self.now_us().max(1), Ordering::Release);
        }
    }

    /// Connection `slot` received event `n`.
    pub fn received(&self, slot: usize, n: u64) {
        let now = self.now_us();
        if let Some(sent) = self.produced_at.get(n as usize).map(|a| a.load(Ordering::Acquire))
            && sent > 0
        {
            let mut h = self.latency[slot % SHARDS].lock().unwrap_or_else(|p| p.into_inner());
            let _ = h.record(now.saturating_sub(sent).max(1));
        }
        self.delivered.fetch_add(1, Ordering::Relaxed);
        self.first_us.fetch_min(now, Ordering::Relaxed);
        self.last_us.fetch_max(now, Ordering::Relaxed);
        if let Some(list) = self.received.get(slot) {
            list.lock().unwrap_or_else(|p| p.into_inner()).push(n as u32);
        }
    }

    /// Latency percentiles, in milliseconds.
    pub fn latency(&self) -> Latency {
        let mut all = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("valid bounds");
        for h in &self.latency {
            let _ = all.add(&*h.lock().unwrap_or_else(|p| p.into_inner()));
        }
        let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
        Latency {
            samples: all.len(),
            p50_ms: ms(0.50),
            p90_ms: ms(0.90),
            p99_ms: ms(0.99),
            max_ms: all.max() as f64 / 1000.0,
        }
    }

    /// Records one duration (e.g. a handshake) in the latency histogram.
    pub fn timed(&self, took: std::time::Duration) {
        let mut h = self.latency[0].lock().unwrap_or_else(|p| p.into_inner());
        let _ = h.record((took.as_micros() as u64).max(1));
    }

    /// Deliveries per second, between the run's first and last receipt, to the connections
    /// `slot` selects (e.g. those of one node).
    pub fn delivery_rate_where(&self, slot: impl Fn(usize) -> bool) -> f64 {
        let (first, last) = (self.first_us.load(Ordering::Relaxed), self.last_us.load(Ordering::Relaxed));
        if first >= last {
            return 0.0;
        }
        let count: usize = self
            .received
            .iter()
            .enumerate()
            .filter(|(s, _)| slot(*s))
            .map(|(_, list)| list.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum();
        count as f64 / ((last - first) as f64 / 1e6)
    }

    /// Deliveries per second between the first and the last receipt.
    pub fn delivery_rate(&self) -> f64 {
        let (first, last) = (self.first_us.load(Ordering::Relaxed), self.last_us.load(Ordering::Relaxed));
        if first >= last {
            return 0.0;
        }
        self.delivered.load(Ordering::Relaxed) as f64 / ((last - first) as f64 / 1e6)
    }

    /// Compares what each connection received with what it should have: `expected(slot, n)`
    /// says whether event `n` (of `published`) was meant for connection `slot`.
    pub fn audit(&self, published: u64, expected: impl Fn(usize, u64) -> bool) -> Audit {
        let mut audit = Audit::default();
        for (slot, list) in self.received.iter().enumerate() {
            let mut got = list.lock().unwrap_or_else(|p| p.into_inner()).clone();
            got.sort_unstable();
            let before = got.len();
            got.dedup();
            audit.duplicated += (before - got.len()) as u64;
            let mut meant = 0u64;
            let mut found = 0u64;
            for n in 0..published {
                if expected(slot, n) {
                    meant += 1;
                    if got.binary_search(&(n as u32)).is_ok() {
                        found += 1;
                    }
                }
            }
            audit.expected += meant;
            audit.lost += meant - found;
            audit.misrouted += got.len() as u64 - found;
        }
        audit
    }
}

/// Latency percentiles of every delivered event.
#[derive(Debug, Default, Serialize)]
pub struct Latency {
    /// Deliveries measured.
    pub samples: u64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Worst, ms.
    pub max_ms: f64,
}

/// Deliveries compared with what was meant.
#[derive(Debug, Default, Serialize)]
pub struct Audit {
    /// Deliveries meant (events × connections they were for).
    pub expected: u64,
    /// Meant but never received.
    pub lost: u64,
    /// Received more than once.
    pub duplicated: u64,
    /// Received by a connection they were not meant for (an isolation failure).
    pub misrouted: u64,
}

/// One run's results.
#[derive(Debug, Serialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// The machine, for the record.
    pub machine: String,
    /// Bridge processes (more than one: cluster mode, Redis between them).
    pub nodes: usize,
    /// Whether the history (and, with several nodes, the adapter) was in Redis.
    pub redis: bool,
    /// Connections asked for.
    pub connections_wanted: usize,
    /// Connections established.
    pub connections: usize,
    /// Connections that failed to establish.
    pub connect_failures: usize,
    /// Connections the server or network dropped during the run.
    pub dropped: usize,
    /// Seconds taken to open every connection.
    pub connect_secs: f64,
    /// Events published to Kafka.
    pub events_published: u64,
    /// Records the bridge consumed.
    pub records_consumed: u64,
    /// Records per second the bridge consumed (ingest scenario).
    pub records_per_sec: f64,
    /// Deliveries compared with what was meant.
    pub audit: Audit,
    /// Deliveries per second, first to last receipt.
    pub deliveries_per_sec: f64,
    /// Produce → receive latency.
    pub latency: Latency,
    /// Deliveries per second to each node's connections.
    pub per_node_deliveries_per_sec: Vec<f64>,
    /// Handshake → `connection:success` of connections opened during the run (ingest).
    pub handshake: Latency,
    /// Redis commands per record by command (`INFO commandstats`; commands run inside
    /// scripts are counted too), the busiest first.
    pub redis_per_record: Vec<(String, f64)>,
    /// Server RSS before any connection, KiB.
    pub rss_before_kib: u64,
    /// Server RSS with every connection open, KiB.
    pub rss_connected_kib: u64,
    /// Server RSS at the end, KiB.
    pub rss_end_kib: u64,
    /// (connected − before) / connections, bytes.
    pub rss_per_connection_bytes: u64,
    /// Server CPU during the measured phase, % of one core.
    pub server_cpu_percent: f64,
    /// This tool's CPU during the measured phase, % of one core (it shares the machine).
    pub loader_cpu_percent: f64,
}

impl Summary {
    /// The table printed at the end of a run.
    pub fn table(&self) -> String {
        let rows: Vec<(&str, String)> = vec![
            ("scenario", self.scenario.clone()),
            ("machine", self.machine.clone()),
            (
                "topology",
                format!(
                    "{} node{}, history {}",
                    self.nodes,
                    if self.nodes == 1 { "" } else { "s (Redis adapter)" },
                    if self.redis { "in Redis" } else { "in memory" }
                ),
            ),
            (
                "connections",
                format!(
                    "{} of {} ({} failed, {} dropped), opened in {:.1} s",
                    self.connections, self.connections_wanted, self.connect_failures, self.dropped, self.connect_secs
                ),
            ),
            ("events published", self.events_published.to_string()),
            (
                "records consumed",
                format!("{} ({:.0} records/s)", self.records_consumed, self.records_per_sec),
            ),
            (
                "deliveries",
                format!(
                    "{} expected, {} lost, {} duplicated, {} misrouted",
                    self.audit.expected, self.audit.lost, self.audit.duplicated, self.audit.misrouted
                ),
            ),
            (
                "deliveries/s",
                format!(
                    "{:.0} (per node: {})",
                    self.deliveries_per_sec,
                    self.per_node_deliveries_per_sec
                        .iter()
                        .map(|d| format!("{d:.0}"))
                        .collect::<Vec<_>>()
                        .join(" / ")
                ),
            ),
            (
                "latency p50/p90/p99/max",
                format!(
                    "{:.2} / {:.2} / {:.2} / {:.2} ms ({} samples)",
                    self.latency.p50_ms, self.latency.p90_ms, self.latency.p99_ms, self.latency.max_ms, self.latency.samples
                ),
            ),
            (
                "handshakes p50/p99/max",
                format!(
                    "{:.2} / {:.2} / {:.2} ms ({} timed)",
                    self.handshake.p50_ms, self.handshake.p99_ms, self.handshake.max_ms, self.handshake.samples
                ),
            ),
            (
                "Redis commands per record",
                self.redis_per_record
                    .iter()
                    .take(8)
                    .map(|(name, per)| format!("{name} {per:.3}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            (
                "server RSS before/connected/end",
                format!(
                    "{:.1} / {:.1} / {:.1} MiB",
                    self.rss_before_kib as f64 / 1024.0,
                    self.rss_connected_kib as f64 / 1024.0,
                    self.rss_end_kib as f64 / 1024.0
                ),
            ),
            (
                "RSS per connection",
                format!("{:.1} KiB", self.rss_per_connection_bytes as f64 / 1024.0),
            ),
            (
                "CPU server / load tool",
                format!("{:.0} % / {:.0} % of one core", self.server_cpu_percent, self.loader_cpu_percent),
            ),
        ];
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter().map(|(k, v)| format!("{k:<width$}  {v}\n")).collect()
    }
}
