//! realtime-load: opens many Socket.IO connections to a realtime-bridge it starts itself,
//! publishes events to Kafka at a target rate, and reports latency, deliveries, losses and
//! the server's memory and CPU. One scenario per subcommand; see the README's Performance
//! section for the commands and this machine's results.

mod bridge;
mod client;
mod formats;
mod report;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use realtime_bridge::auth::mint_hs256;
use realtime_bridge::demo;
use realtime_bridge::kafka::dev_broker::DevBroker;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use bridge::{Bridge, cpu_secs, rss_kib};
use client::{Client, Target};
use report::{Recorder, Summary};

const SECRET: &str = "realtime-load-secret-realtime-load-secret";
const ORDERS: &str = "order.updated";
const INVENTORY: &str = "inventory.updated";
const DLQ: &str = "realtime-bridge.dlq";

#[derive(Parser)]
#[command(about = "Load generator and benchmark scenarios for realtime-bridge")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
    #[command(flatten)]
    opts: Opts,
}

#[derive(clap::Args, Clone)]
struct Opts {
    /// The bridge binary to start (default: `realtime-bridge` next to this tool).
    #[arg(long, global = true)]
    bridge_bin: Option<PathBuf>,
    /// Kafka bootstrap servers (default: an in-process librdkafka mock cluster).
    #[arg(long, global = true)]
    brokers: Option<String>,
    /// Connections opened per second.
    #[arg(long, global = true, default_value_t = 2000)]
    ramp: u32,
    /// Source addresses 127.0.0.1… to spread connections over (ephemeral ports per address).
    #[arg(long, global = true, default_value_t = 8)]
    sources: u8,
    /// Where to write the JSON summary (default: target/load/<scenario>.json).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Extra bridge settings, `NAME=value` (repeatable), e.g. `--env SOCKET_BUFFER=64`.
    #[arg(long = "env", global = true)]
    bridge_env: Vec<String>,
    /// Cluster mode: this many bridge processes in one consumer group with Redis between
    /// them (`--cluster` alone: 2); connections are spread over them.
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "2")]
    cluster: Option<usize>,
    /// One node, its history in Redis (the cluster's store without a second node).
    #[arg(long, global = true)]
    redis: bool,
    /// The Redis of `--cluster` and `--redis` (each run uses a key prefix of its own).
    #[arg(long, global = true, default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

impl Opts {
    fn nodes(&self) -> usize {
        self.cluster.unwrap_or(1).max(1)
    }

    fn uses_redis(&self) -> bool {
        self.redis || self.cluster.is_some()
    }
}

#[derive(Subcommand, Clone)]
enum Scenario {
    /// Many idle connections, heartbeats on: memory per connection, none dropped.
    Idle {
        #[arg(long, default_value_t = 19_000)]
        connections: usize,
        /// Seconds to hold them.
        #[arg(long, default_value_t = 60)]
        duration: u64,
    },
    /// Order events to their buyers' sockets: latency, none lost, none misrouted.
    Personal {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 5_000)]
        users: usize,
        /// Events per second.
        #[arg(long, default_value_t = 2_000)]
        rate: u32,
        #[arg(long, default_value_t = 60)]
        duration: u64,
    },
    /// Inventory events to every connection (all in `inventory:updates`): deliveries/s.
    Fanout {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        #[arg(long, default_value_t = 50)]
        rate: u32,
        #[arg(long, default_value_t = 60)]
        duration: u64,
    },
    /// Product pages: each connection watches `per` products of a catalogue
    /// (`subscribe:products`); inventory events spread over the catalogue reach their
    /// watchers only.
    Products {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
        /// Products in the catalogue.
        #[arg(long, default_value_t = 50_000)]
        catalogue: usize,
        /// Products each connection watches.
        #[arg(long, default_value_t = 5)]
        per: usize,
        /// Inventory events per second, across the catalogue.
        #[arg(long, default_value_t = 2_000)]
        rate: u32,
        #[arg(long, default_value_t = 60)]
        duration: u64,
    },
    /// No sockets: records consumed, parsed, routed and stored per second; meanwhile new
    /// connections are opened and timed (handshake → `connection:success`).
    Ingest {
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Connections opened per second while the records are consumed (0: none).
        #[arg(long, default_value_t = 100)]
        handshakes: u32,
        /// The records' format: the bridge's JSON, or Avro / Protobuf in the Confluent wire
        /// format through `--registry`.
        #[arg(long, value_enum, default_value = "json")]
        format: formats::Format,
        /// A schema registry's Confluent-compatible API (for avro and protobuf), e.g.
        /// `http://127.0.0.1:8080/apis/ccompat/v7`; the bridge is given it too.
        #[arg(long)]
        registry: Option<String>,
    },
    /// A small personal + fan-out run (CI keeps the tool from rotting).
    Smoke,
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Idle { .. } => "idle",
            Scenario::Personal { .. } => "personal",
            Scenario::Fanout { .. } => "fanout",
            Scenario::Products { .. } => "products",
            Scenario::Ingest { .. } => "ingest",
            Scenario::Smoke => "smoke",
        }
    }
}

/// The products scenario's catalogue: connection `slot` watches the `per` products from
/// `slot × per` on (mod `size`); event `n` updates product `n × 7919 mod size`.
#[derive(Clone, Copy)]
struct Catalogue {
    size: usize,
    per: usize,
}

impl Catalogue {
    fn product(&self, n: u64) -> String {
        format!("P{}", (n * 7919) % self.size as u64)
    }

    fn first(&self, slot: usize) -> usize {
        (slot * self.per) % self.size
    }

    fn subscribe(&self, slot: usize) -> String {
        let ids: Vec<String> = (0..self.per)
            .map(|j| format!("\"P{}\"", (self.first(slot) + j) % self.size))
            .collect();
        format!(r#"["subscribe:products",{{"productIds":[{}]}}]"#, ids.join(","))
    }

    fn watches(&self, slot: usize, n: u64) -> bool {
        let k = ((n * 7919) % self.size as u64) as usize;
        (k + self.size - self.first(slot)) % self.size < self.per
    }

    /// How many of `connections` watch each product.
    fn watchers(&self, connections: usize) -> Vec<u64> {
        let mut counts = vec![0; self.size];
        for slot in 0..connections {
            for j in 0..self.per {
                counts[(self.first(slot) + j) % self.size] += 1;
            }
        }
        counts
    }
}

/// What one phase of a run does.
#[derive(Clone, Copy)]
struct Plan {
    connections: usize,
    /// Users the connections are spread over (connection `i` is user `i % users`).
    users: usize,
    inventory: bool,
    /// Per-product subscriptions: (catalogue size, products watched per connection).
    products: Option<Catalogue>,
    rate: u32,
    duration: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Each socket is a file: raise the soft limit to the hard one (20 000 here).
    let nofile = rlimit::increase_nofile_limit(u64::MAX).context("raising the open-file limit")?;
    let summaries = match cli.scenario.clone() {
        Scenario::Idle { connections, duration } => vec![
            run(
                &cli.opts,
                "idle",
                Plan {
                    connections,
                    users: connections,
                    inventory: false,
                    products: None,
                    rate: 0,
                    duration: Duration::from_secs(duration),
                },
            )
            .await?,
        ],
        Scenario::Personal {
            connections,
            users,
            rate,
            duration,
        } => vec![
            run(
                &cli.opts,
                "personal",
                Plan {
                    connections,
                    users,
                    inventory: false,
                    products: None,
                    rate,
                    duration: Duration::from_secs(duration),
                },
            )
            .await?,
        ],
        Scenario::Fanout {
            connections,
            rate,
            duration,
        } => vec![
            run(
                &cli.opts,
                "fanout",
                Plan {
                    connections,
                    users: connections,
                    inventory: true,
                    products: None,
                    rate,
                    duration: Duration::from_secs(duration),
                },
            )
            .await?,
        ],
        Scenario::Products {
            connections,
            catalogue,
            per,
            rate,
            duration,
        } => vec![
            run(
                &cli.opts,
                "products",
                Plan {
                    connections,
                    users: connections,
                    inventory: false,
                    products: Some(Catalogue {
                        size: catalogue.max(1),
                        per: per.clamp(1, 50),
                    }),
                    rate,
                    duration: Duration::from_secs(duration),
                },
            )
            .await?,
        ],
        Scenario::Ingest {
            events,
            handshakes,
            format,
            registry,
        } => vec![ingest(&cli.opts, events, handshakes, format, registry.as_deref()).await?],
        Scenario::Smoke => vec![
            run(
                &cli.opts,
                "smoke-personal",
                Plan {
                    connections: 200,
                    users: 100,
                    inventory: false,
                    products: None,
                    rate: 200,
                    duration: Duration::from_secs(5),
                },
            )
            .await?,
            run(
                &cli.opts,
                "smoke-fanout",
                Plan {
                    connections: 200,
                    users: 200,
                    inventory: true,
                    products: None,
                    rate: 20,
                    duration: Duration::from_secs(5),
                },
            )
            .await?,
            run(
                &cli.opts,
                "smoke-products",
                Plan {
                    connections: 200,
                    users: 200,
                    inventory: false,
                    products: Some(Catalogue { size: 500, per: 5 }),
                    rate: 200,
                    duration: Duration::from_secs(5),
                },
            )
            .await?,
        ],
    };
    let out = cli
        .opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("target/load/{}.json", cli.scenario.name())));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&summaries)?)?;
    for s in &summaries {
        println!("{}", s.table());
    }
    println!("(open-file limit {nofile}; JSON written to {})", out.display());
    if cli.scenario.name() == "smoke" {
        check_smoke(&summaries)?;
    }
    Ok(())
}

/// The smoke run must actually have worked: every connection, every delivery, no loss.
fn check_smoke(summaries: &[Summary]) -> anyhow::Result<()> {
    for s in summaries {
        let a = &s.audit;
        anyhow::ensure!(
            s.connections == s.connections_wanted
                && s.dropped == 0
                && a.expected > 0
                && a.lost == 0
                && a.misrouted == 0
                && s.latency.samples > 0,
            "{}: smoke run failed: {} of {} connected, {} dropped, {} lost, {} misrouted",
            s.scenario,
            s.connections,
            s.connections_wanted,
            s.dropped,
            a.lost,
            a.misrouted
        );
    }
    Ok(())
}

/// The broker to use: the given one, or a mock cluster in this process (kept alive by the handle).
fn broker(opts: &Opts) -> anyhow::Result<(String, Option<DevBroker>)> {
    match &opts.brokers {
        Some(b) => Ok((b.clone(), None)),
        None => {
            let dev = DevBroker::start(&[ORDERS, INVENTORY, DLQ], 4)?;
            Ok((dev.bootstrap_servers().to_owned(), Some(dev)))
        }
    }
}

/// Starts the bridge processes of a run (one, or `--cluster` of them in one group) and
/// waits until each is ready.
async fn start_nodes(opts: &Opts, brokers: &str, connections: usize, offset_reset: &str) -> anyhow::Result<Nodes> {
    let bin = match &opts.bridge_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("realtime-bridge"),
    };
    let run = std::process::id();
    let mut env: Vec<(String, String)> = [
        ("KAFKA_BROKERS", brokers.to_owned()),
        ("KAFKA_GROUP_ID", format!("realtime-load-{run}")),
        ("KAFKA_TOPICS", format!("{ORDERS},{INVENTORY}")),
        ("KAFKA_SESSION_TIMEOUT_MS", "6000".to_owned()),
        // librdkafka's mock cluster does not answer a waiting fetch when data arrives
        // (Apache Kafka does): a 1 ms wait stands in for that.
        ("KAFKA_FETCH_WAIT_MAX_MS", "1".to_owned()),
        ("KAFKA_AUTO_OFFSET_RESET", offset_reset.to_owned()),
        ("JWT_SECRET", SECRET.to_owned()),
        ("LOG_LEVEL", "warn,realtime_bridge::app=info".to_owned()),
        ("MAX_CONNECTIONS", (connections + 100).to_string()),
        ("HANDSHAKES_PER_MINUTE_PER_IP", "1000000".to_owned()),
        // The ramp opens thousands of sessions per second on purpose.
        ("MAX_PENDING_SESSIONS", (connections + 100).to_string()),
        ("DEV_DEMO_RATE", "0".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if opts.uses_redis() {
        env.push(("REDIS_URL".to_owned(), opts.redis_url.clone()));
        env.push(("REDIS_PREFIX".to_owned(), format!("realtime-load-{run}:")));
    }
    for kv in &opts.bridge_env {
        let (k, v) = kv.split_once('=').with_context(|| format!("--env {kv}: expected NAME=value"))?;
        env.push((k.to_owned(), v.to_owned()));
    }
    let mut bridges = Vec::new();
    for _ in 0..opts.nodes() {
        bridges.push(Bridge::start(&bin, &env).await?);
    }
    for bridge in &bridges {
        bridge.ready(Duration::from_secs(60)).await?;
    }
    Ok(Nodes { bridges })
}

/// The bridges of a run, measured together.
struct Nodes {
    bridges: Vec<Bridge>,
}

impl Nodes {
    /// The bridge connection `slot` goes to.
    fn for_slot(&self, slot: usize) -> &Bridge {
        &self.bridges[slot % self.bridges.len()]
    }

    fn rss_kib(&self) -> u64 {
        self.bridges.iter().map(|b| rss_kib(b.pid)).sum()
    }

    fn cpu_secs(&self) -> f64 {
        self.bridges.iter().map(|b| cpu_secs(b.pid)).sum()
    }

    async fn records_consumed(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for b in &self.bridges {
            total += b.records_consumed().await?;
        }
        Ok(total)
    }

    async fn stop(self) -> anyhow::Result<()> {
        for b in self.bridges {
            b.stop().await?;
        }
        Ok(())
    }
}

/// Redis's command counts (`INFO commandstats`), by command.
async fn redis_commands(opts: &Opts) -> anyhow::Result<BTreeMap<String, u64>> {
    if !opts.uses_redis() {
        return Ok(BTreeMap::new());
    }
    let client = redis::Client::open(opts.redis_url.as_str())?;
    let mut conn = client.get_multiplexed_async_connection().await.context("connecting to Redis")?;
    let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut conn).await?;
    Ok(info
        .lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = rest.strip_prefix("calls=")?.split(',').next()?.parse().ok()?;
            Some((name.to_owned(), calls))
        })
        .collect())
}

/// Commands per record between two `INFO commandstats`, the busiest first.
fn per_record(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>, records: u64) -> Vec<(String, f64)> {
    let mut rows: Vec<(String, f64)> = after
        .iter()
        .map(|(name, calls)| {
            let delta = calls.saturating_sub(before.get(name).copied().unwrap_or(0));
            (name.clone(), delta as f64 / records.max(1) as f64)
        })
        .filter(|(name, per)| *per > 0.0 && name != "info")
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows
}

/// Opens the connections, publishes for the plan's duration, and measures.
async fn run(opts: &Opts, scenario: &str, plan: Plan) -> anyhow::Result<Summary> {
    let (brokers, _dev) = broker(opts)?;
    let nodes = start_nodes(opts, &brokers, plan.connections, "latest").await?;
    let events = plan.rate as u64 * plan.duration.as_secs();
    let recorder = Arc::new(Recorder::new(plan.connections, events as usize + 1));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = nodes.rss_kib();

    eprintln!("{scenario}: opening {} connections at {}/s", plan.connections, opts.ramp);
    let stop = CancellationToken::new();
    let dropped = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let connected = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let handshakes = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(plan.connections);
    for slot in 0..plan.connections {
        // Ramp: connection `slot` starts at slot / ramp seconds.
        let due = started + Duration::from_secs_f64(slot as f64 / f64::from(opts.ramp.max(1)));
        tokio::time::sleep_until(due.into()).await;
        let permit = handshakes.clone().acquire_owned().await?;
        let target = Target {
            server: nodes.for_slot(slot).addr,
            source: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (slot % usize::from(opts.sources.max(1))) as u8)),
            token: mint_hs256(SECRET, &format!("u{}", slot % plan.users), false, Duration::from_secs(24 * 3600)),
            subscribe: if plan.inventory {
                Some(r#"["subscribe:inventory"]"#.to_owned())
            } else {
                plan.products.map(|c| c.subscribe(slot))
            },
        };
        let (recorder, stop, dropped, failures, connected) =
            (recorder.clone(), stop.clone(), dropped.clone(), failures.clone(), connected.clone());
        tasks.push(tokio::spawn(async move {
            let client = Client::connect(&target).await;
            drop(permit);
            match client {
                Ok(client) => {
                    connected.fetch_add(1, Ordering::Relaxed);
                    if !client.run(recorder, slot, stop).await {
                        dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(error) => {
                    if failures.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("connection {slot} failed: {error:#}");
                    }
                }
            }
        }));
    }
    while connected.load(Ordering::Relaxed) + failures.load(Ordering::Relaxed) < plan.connections {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Let allocations settle before reading memory (a benchmark, not a test: no condition to await).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_connected = nodes.rss_kib();
    let connections = connected.load(Ordering::Relaxed);
    eprintln!(
        "{scenario}: {connections} connected in {connect_secs:.1} s; measuring for {:?}",
        plan.duration
    );

    let redis_before = redis_commands(opts).await?;
    let (server_cpu0, loader_cpu0, t0) = (nodes.cpu_secs(), cpu_secs(std::process::id()), Instant::now());
    let published = if plan.rate == 0 {
        tokio::time::sleep(plan.duration).await;
        0
    } else {
        let users = plan.users;
        let rec = recorder.clone();
        let make = move |n: u64| {
            rec.produced(n);
            if let Some(catalogue) = plan.products {
                // The product is spread over the catalogue; the sku carries the event number.
                (
                    INVENTORY,
                    catalogue.product(n),
                    json!({"productId": catalogue.product(n), "stock": 100, "previousStock": 101, "sku": format!("L{n}")}),
                )
            } else if plan.inventory {
                (
                    INVENTORY,
                    format!("L{n}"),
                    json!({"productId": format!("L{n}"), "stock": 100, "previousStock": 101}),
                )
            } else {
                let user = format!("u{}", n % users as u64);
                (
                    ORDERS,
                    user.clone(),
                    json!({"orderId": format!("L{n}"), "buyerId": user, "status": "paid", "previousStatus": "pending"}),
                )
            }
        };
        let sent = demo::publish(
            &brokers,
            &Default::default(),
            plan.rate,
            Some(events),
            CancellationToken::new(),
            make,
        )
        .await?;
        // Drain: until every delivery arrived, or nothing more arrives for 5 s.
        let expected = if let Some(catalogue) = plan.products {
            let watchers = catalogue.watchers(connections);
            (0..sent).map(|n| watchers[((n * 7919) % catalogue.size as u64) as usize]).sum()
        } else if plan.inventory {
            sent * connections as u64
        } else {
            sent * (connections as u64 / users as u64).max(1)
        };
        let mut last = (recorder.delivered.load(Ordering::Relaxed), Instant::now());
        while recorder.delivered.load(Ordering::Relaxed) < expected && last.1.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = recorder.delivered.load(Ordering::Relaxed);
            if now != last.0 {
                last = (now, Instant::now());
            }
        }
        sent
    };
    let secs = t0.elapsed().as_secs_f64();
    let server_cpu = (nodes.cpu_secs() - server_cpu0) / secs * 100.0;
    let loader_cpu = (cpu_secs(std::process::id()) - loader_cpu0) / secs * 100.0;
    let rss_end = nodes.rss_kib();
    let records_consumed = nodes.records_consumed().await.unwrap_or(0);
    let redis_per_record = per_record(&redis_before, &redis_commands(opts).await?, published);
    let node_count = nodes.bridges.len();
    let per_node_deliveries_per_sec = (0..node_count)
        .map(|k| recorder.delivery_rate_where(|slot| slot % node_count == k))
        .collect();

    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    nodes.stop().await?;

    let users = plan.users;
    let audit = recorder.audit(published, |slot, n| match plan.products {
        Some(catalogue) => catalogue.watches(slot, n),
        None => plan.inventory || (n % users as u64) as usize == slot % users,
    });
    Ok(Summary {
        scenario: scenario.to_owned(),
        machine: machine(),
        nodes: node_count,
        redis: opts.uses_redis(),
        connections_wanted: plan.connections,
        connections,
        connect_failures: failures.load(Ordering::Relaxed),
        dropped: dropped.load(Ordering::Relaxed),
        connect_secs,
        events_published: published,
        records_consumed,
        records_per_sec: 0.0,
        audit,
        deliveries_per_sec: recorder.delivery_rate(),
        per_node_deliveries_per_sec,
        latency: recorder.latency(),
        handshake: Default::default(),
        redis_per_record,
        rss_before_kib: rss_before,
        rss_connected_kib: rss_connected,
        rss_end_kib: rss_end,
        rss_per_connection_bytes: (rss_connected.saturating_sub(rss_before) * 1024)
            .checked_div(connections as u64)
            .unwrap_or(0),
        server_cpu_percent: server_cpu,
        loader_cpu_percent: loader_cpu,
    })
}

/// Publishes `events` records first, then starts the bridges on them with no sockets and
/// times how fast they consume, parse, route and store them. Meanwhile `handshakes`
/// connections per second are opened, spread over the nodes, and timed (handshake →
/// `connection:success`), then closed.
async fn ingest(opts: &Opts, events: u64, handshakes: u32, format: formats::Format, registry: Option<&str>) -> anyhow::Result<Summary> {
    let (brokers, _dev) = broker(opts)?;
    let encoder = formats::Encoder::new(format, registry, ORDERS).await?;
    eprintln!("ingest: publishing {events} records ({format:?})");
    let make = |n: u64| {
        let user = format!("u{}", n % 5000);
        let order = [
            ("orderId", format!("L{n}")),
            ("buyerId", user.clone()),
            ("status", "paid".to_owned()),
            ("previousStatus", "pending".to_owned()),
        ];
        (ORDERS, user, encoder.encode(&order))
    };
    let published = demo::publish_bytes(&brokers, &Default::default(), 0, Some(events), CancellationToken::new(), make).await?;
    let redis_before = redis_commands(opts).await?;
    let mut opts_env;
    let opts = match registry {
        Some(url) => {
            opts_env = opts.clone();
            opts_env.bridge_env.push(format!("SCHEMA_REGISTRY_URL={url}"));
            &opts_env
        }
        None => opts,
    };
    let nodes = start_nodes(opts, &brokers, handshakes as usize * 60, "earliest").await?;
    let rss_before = nodes.rss_kib();
    let (cpu0, loader0) = (nodes.cpu_secs(), cpu_secs(std::process::id()));
    let timing = Arc::new(Recorder::new(0, 0));
    let stop = CancellationToken::new();
    let mut first: Option<(Instant, u64)> = None;
    let mut last = (Instant::now(), 0u64);
    let mut opener = None;
    loop {
        let consumed = nodes.records_consumed().await?;
        let now = Instant::now();
        if consumed > 0 && first.is_none() {
            first = Some((now, consumed));
            if handshakes > 0 {
                let targets: Vec<_> = nodes.bridges.iter().map(|b| b.addr).collect();
                opener = Some(tokio::spawn(open_and_time(targets, handshakes, timing.clone(), stop.clone())));
            }
        }
        if consumed != last.1 {
            last = (now, consumed);
        }
        if consumed >= published || now - last.0 > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    if let Some(opener) = opener {
        opener.await?;
    }
    let (t0, c0) = first.context("the bridge consumed nothing")?;
    let secs = (last.0 - t0).as_secs_f64().max(1e-3);
    let rate = (last.1 - c0) as f64 / secs;
    let server_cpu = (nodes.cpu_secs() - cpu0) / secs * 100.0;
    let loader_cpu = (cpu_secs(std::process::id()) - loader0) / secs * 100.0;
    let rss_end = nodes.rss_kib();
    let node_count = nodes.bridges.len();
    nodes.stop().await?;
    let redis_per_record = per_record(&redis_before, &redis_commands(opts).await?, last.1);
    Ok(Summary {
        scenario: "ingest".to_owned(),
        machine: machine(),
        nodes: node_count,
        redis: opts.uses_redis(),
        connections_wanted: 0,
        connections: 0,
        connect_failures: 0,
        dropped: 0,
        connect_secs: 0.0,
        events_published: published,
        records_consumed: last.1,
        records_per_sec: rate,
        audit: Default::default(),
        deliveries_per_sec: 0.0,
        per_node_deliveries_per_sec: Vec::new(),
        latency: Default::default(),
        handshake: timing.latency(),
        redis_per_record,
        rss_before_kib: rss_before,
        rss_connected_kib: rss_before,
        rss_end_kib: rss_end,
        rss_per_connection_bytes: 0,
        server_cpu_percent: server_cpu,
        loader_cpu_percent: loader_cpu,
    })
}

/// Opens `per_sec` connections a second over `targets` until `stop`, recording each one's
/// handshake → `connection:success` time in `timing`; each is closed once connected.
async fn open_and_time(targets: Vec<std::net::SocketAddr>, per_sec: u32, timing: Arc<Recorder>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_sec.max(1))));
    let mut tasks = Vec::new();
    for slot in 0usize.. {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let target = Target {
            server: targets[slot % targets.len()],
            source: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (slot % 8) as u8)),
            token: mint_hs256(SECRET, &format!("h{slot}"), false, Duration::from_secs(3600)),
            subscribe: None,
        };
        let timing = timing.clone();
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            if Client::connect(&target).await.is_ok() {
                timing.timed(started.elapsed());
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// CPU model and count, for the record.
fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} × {model}")
}
