//! realtime-load: opens many Socket.IO connections to a realtime-bridge it starts itself,
//! publishes events to Kafka at a target rate, and reports latency, deliveries, losses and
//! the server's memory and CPU. One scenario per subcommand; see the README's Performance
//! section for the commands and this machine's results.

mod bridge;
mod client;
mod report;

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

#[derive(clap::Args)]
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
}

#[derive(Subcommand, Clone, Copy)]
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
    /// No sockets: records consumed, parsed, routed and stored per second.
    Ingest {
        #[arg(long, default_value_t = 200_000)]
        events: u64,
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
            Scenario::Ingest { .. } => "ingest",
            Scenario::Smoke => "smoke",
        }
    }
}

/// What one phase of a run does.
#[derive(Clone, Copy)]
struct Plan {
    connections: usize,
    /// Users the connections are spread over (connection `i` is user `i % users`).
    users: usize,
    inventory: bool,
    rate: u32,
    duration: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Each socket is a file: raise the soft limit to the hard one (20 000 here).
    let nofile = rlimit::increase_nofile_limit(u64::MAX).context("raising the open-file limit")?;
    let summaries = match cli.scenario {
        Scenario::Idle { connections, duration } => vec![
            run(
                &cli.opts,
                "idle",
                Plan {
                    connections,
                    users: connections,
                    inventory: false,
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
                    rate,
                    duration: Duration::from_secs(duration),
                },
            )
            .await?,
        ],
        Scenario::Ingest { events } => vec![ingest(&cli.opts, events).await?],
        Scenario::Smoke => vec![
            run(
                &cli.opts,
                "smoke-personal",
                Plan {
                    connections: 200,
                    users: 100,
                    inventory: false,
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
                    rate: 20,
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

async fn start_bridge(opts: &Opts, brokers: &str, connections: usize, offset_reset: &str) -> anyhow::Result<Bridge> {
    let bin = match &opts.bridge_bin {
        Some(b) => b.clone(),
        None => std::env::current_exe()?.with_file_name("realtime-bridge"),
    };
    let mut env: Vec<(String, String)> = [
        ("KAFKA_BROKERS", brokers.to_owned()),
        ("KAFKA_GROUP_ID", format!("realtime-load-{}", std::process::id())),
        ("KAFKA_TOPICS", format!("{ORDERS},{INVENTORY}")),
        ("KAFKA_SESSION_TIMEOUT_MS", "6000".to_owned()),
        // Neither tansu nor librdkafka's mock cluster answers a waiting fetch when data
        // arrives (Apache Kafka does): a 1 ms wait stands in for that.
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
    for kv in &opts.bridge_env {
        let (k, v) = kv.split_once('=').with_context(|| format!("--env {kv}: expected NAME=value"))?;
        env.push((k.to_owned(), v.to_owned()));
    }
    let bridge = Bridge::start(&bin, &env).await?;
    bridge.ready(Duration::from_secs(60)).await?;
    Ok(bridge)
}

/// Opens the connections, publishes for the plan's duration, and measures.
async fn run(opts: &Opts, scenario: &str, plan: Plan) -> anyhow::Result<Summary> {
    let (brokers, _dev) = broker(opts)?;
    let bridge = start_bridge(opts, &brokers, plan.connections, "latest").await?;
    let events = plan.rate as u64 * plan.duration.as_secs();
    let recorder = Arc::new(Recorder::new(plan.connections, events as usize + 1));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_kib(bridge.pid);

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
            server: bridge.addr,
            source: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (slot % usize::from(opts.sources.max(1))) as u8)),
            token: mint_hs256(SECRET, &format!("u{}", slot % plan.users), false, Duration::from_secs(24 * 3600)),
            subscribe_inventory: plan.inventory,
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
    let rss_connected = rss_kib(bridge.pid);
    let connections = connected.load(Ordering::Relaxed);
    eprintln!(
        "{scenario}: {connections} connected in {connect_secs:.1} s; measuring for {:?}",
        plan.duration
    );

    let (server_cpu0, loader_cpu0, t0) = (cpu_secs(bridge.pid), cpu_secs(std::process::id()), Instant::now());
    let published = if plan.rate == 0 {
        tokio::time::sleep(plan.duration).await;
        0
    } else {
        let users = plan.users;
        let rec = recorder.clone();
        let make = move |n: u64| {
            rec.produced(n);
            if plan.inventory {
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
        let expected = if plan.inventory {
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
    let server_cpu = (cpu_secs(bridge.pid) - server_cpu0) / secs * 100.0;
    let loader_cpu = (cpu_secs(std::process::id()) - loader_cpu0) / secs * 100.0;
    let rss_end = rss_kib(bridge.pid);
    let records_consumed = bridge.records_consumed().await.unwrap_or(0);

    stop.cancel();
    for t in tasks {
        let _ = t.await;
    }
    bridge.stop().await?;

    let users = plan.users;
    let audit = recorder.audit(published, |slot, n| plan.inventory || (n % users as u64) as usize == slot % users);
    Ok(Summary {
        scenario: scenario.to_owned(),
        machine: machine(),
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
        latency: recorder.latency(),
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

/// Publishes `events` records first, then starts the bridge on them with no sockets and
/// times how fast it consumes, parses, routes and stores them.
async fn ingest(opts: &Opts, events: u64) -> anyhow::Result<Summary> {
    let (brokers, _dev) = broker(opts)?;
    eprintln!("ingest: publishing {events} records");
    let make = |n: u64| {
        let user = format!("u{}", n % 5000);
        (
            ORDERS,
            user.clone(),
            json!({"orderId": format!("L{n}"), "buyerId": user, "status": "paid", "previousStatus": "pending"}),
        )
    };
    let published = demo::publish(&brokers, &Default::default(), 0, Some(events), CancellationToken::new(), make).await?;
    let bridge = start_bridge(opts, &brokers, 0, "earliest").await?;
    let rss_before = rss_kib(bridge.pid);
    let (cpu0, loader0) = (cpu_secs(bridge.pid), cpu_secs(std::process::id()));
    let mut first: Option<(Instant, u64)> = None;
    let mut last = (Instant::now(), 0u64);
    loop {
        let consumed = bridge.records_consumed().await?;
        let now = Instant::now();
        if consumed > 0 && first.is_none() {
            first = Some((now, consumed));
        }
        if consumed != last.1 {
            last = (now, consumed);
        }
        if consumed >= published || now - last.0 > Duration::from_secs(10) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (t0, c0) = first.context("the bridge consumed nothing")?;
    let secs = (last.0 - t0).as_secs_f64().max(1e-3);
    let rate = (last.1 - c0) as f64 / secs;
    let server_cpu = (cpu_secs(bridge.pid) - cpu0) / secs * 100.0;
    let loader_cpu = (cpu_secs(std::process::id()) - loader0) / secs * 100.0;
    let rss_end = rss_kib(bridge.pid);
    bridge.stop().await?;
    Ok(Summary {
        scenario: "ingest".to_owned(),
        machine: machine(),
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
        latency: Default::default(),
        rss_before_kib: rss_before,
        rss_connected_kib: rss_before,
        rss_end_kib: rss_end,
        rss_per_connection_bytes: 0,
        server_cpu_percent: server_cpu,
        loader_cpu_percent: loader_cpu,
    })
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
