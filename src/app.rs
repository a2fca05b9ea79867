//! Builds every component from the configuration, runs them, and shuts them down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::serve::ListenerExt;
use futures_util::FutureExt;
use socketioxide::SocketIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::Verifier;
use crate::config::{AppEnv, ClientProperties, Config};
use crate::delivery::Delivery;
use crate::drain;
use crate::faults::{Fault, Faults};
use crate::health::Health;
use crate::history::{History, MemoryHistory};
use crate::http::{self, HttpState};
use crate::kafka::consumer::{self, GroupConsumer, Sinks};
use crate::kafka::dead_letter::DeadLetters;
use crate::kafka::{DEV_TOPICS, dev_broker::DevBroker};
use crate::redis::Links;
use crate::redis::adapter::{ClusterAdapter, PubSub};
use crate::redis::history::RedisHistory;
use crate::router::{self, AttachSockets};
use crate::routing::RoutingRules;
use crate::socket::gate::Gate;
use crate::socket::hub::{Hub, SocketHub};
use crate::stats::Stats;
use crate::supervisor::{Supervisor, every};
use crate::{demo, socket};

/// A built, bound, not yet running service.
pub struct App {
    config: Config,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    router: Router,
    consumer: GroupConsumer,
    sinks: Sinks,
    hub: Arc<dyn Hub>,
    memory_history: Option<Arc<MemoryHistory>>,
    redis: Option<Links>,
    limiter: Arc<socket::Limiter>,
    expiries: Arc<socket::Expiries>,
    health: Arc<Health>,
    faults: Arc<Faults>,
    brokers: String,
    /// Security and pass-through properties for the consumer it rebuilds.
    client: ClientProperties,
    // Kept alive for the life of the app; dropping it stops the broker.
    dev_broker: Option<DevBroker>,
}

/// The decoding stage of `config`: its mapping, and the registry client when
/// `SCHEMA_REGISTRY_URL` is set.
fn decoder(config: &Config, health: &Health) -> anyhow::Result<crate::decode::Decoder> {
    crate::decode::confluent::limit_allocations(config.kafka.max_record_bytes);
    let registry = match &config.schema_registry {
        Some(registry) => {
            health.enable_registry();
            Some(Arc::new(crate::decode::registry::Registry::new(registry)?))
        }
        None => None,
    };
    if config.mapping.file_sources() > 0 {
        tracing::info!(sources = config.mapping.file_sources(), topics = ?config.mapping.subscriptions(), "event mapping loaded");
    }
    Ok(crate::decode::Decoder::new(config.mapping.clone(), registry))
}

impl App {
    /// Starts the development broker if needed, binds the port and creates the consumer.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let (brokers, dev_broker) = brokers(&config)?;

        let health = Arc::new(Health::new(dev_broker.is_some()));
        let stats = Arc::new(Stats::default());
        let verifier = verifier(&config)?;
        let (history, memory_history, redis) = history_backend(&config, &health)?;
        let gate = Arc::new(Gate::default());

        let limiter = socket::Limiter::new(config.limits);
        let admission = socket::Admission {
            limiter: limiter.clone(),
            stats: stats.clone(),
            health: health.clone(),
        };
        let sockets = SocketState::new(&verifier, &stats, &history, &gate);
        let (expiries, faults) = (sockets.expiries.clone(), sockets.faults.clone());
        let (attach_sockets, hub, redis) = socket_server(&config, admission, sockets, redis)?;

        let rules = RoutingRules {
            low_stock_threshold: config.low_stock_threshold,
        };
        let delivery = Delivery::new(
            hub.clone(),
            rules,
            stats.clone(),
            history.clone(),
            gate,
            config.kafka.max_record_bytes,
        )
        .with_decoder(decoder(&config, &health)?);
        let redis = redis.map(|links| Links {
            delivery: Some(delivery.clone()),
            ..links
        });
        let http_state = HttpState {
            health: health.clone(),
            stats: stats.clone(),
            verifier,
            api_keys: Arc::new(config.api_keys.clone()),
            delivery: delivery.clone(),
            hub: hub.clone(),
            rules,
            group_id: config.kafka.group_id.as_str().into(),
            history: history.clone(),
        };
        crate::metrics::handle();
        let router = public_router(&config, http_state, attach_sockets)?;

        let (listener, metrics_listener) = listeners(&config).await?;
        let (client, consumer, dead_letters) = kafka_clients(&config, &brokers, dev_broker.is_some(), &health, &stats)?;

        Ok(App {
            config,
            listener,
            metrics_listener,
            router,
            consumer,
            sinks: Sinks {
                delivery,
                dead_letters,
                stats,
                health: health.clone(),
                faults: faults.clone(),
            },
            hub,
            memory_history,
            redis,
            limiter,
            expiries,
            health,
            faults,
            brokers,
            client,
            dev_broker,
        })
    }

    /// The Kafka bootstrap servers in use (the embedded broker's when none is configured).
    pub fn brokers(&self) -> &str {
        &self.brokers
    }

    /// The address the server is bound to (useful with `PORT=0`).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The app's injectable faults (test builds with the `fault-injection` feature).
    #[cfg(feature = "fault-injection")]
    pub fn faults(&self) -> Arc<Faults> {
        self.faults.clone()
    }

    /// Serves until `shutdown` fires, then drains: readiness off, consumer stopped and
    /// committed, sockets closed so clients reconnect elsewhere, HTTP closed — all within
    /// the configured grace period. A long-lived task that fails fires `shutdown` itself
    /// (see [`crate::supervisor`]); then the drain runs and the result is that failure.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let App {
            config,
            listener,
            metrics_listener,
            router,
            consumer,
            sinks,
            hub,
            memory_history,
            redis,
            limiter,
            expiries,
            health,
            faults,
            brokers,
            client,
            dev_broker,
        } = self;
        tracing::info!(addr = %listener.local_addr()?, "listening");
        let supervisor = Supervisor::new(health.clone(), sinks.stats.clone(), shutdown.clone());
        let consumer_stop = CancellationToken::new();
        let consumer = spawn_consumer(&supervisor, consumer, sinks, &config, (&brokers, &client), &health, &consumer_stop);
        spawn_housekeeping(
            &supervisor,
            &config,
            redis,
            memory_history,
            limiter,
            faults,
            (&brokers, &client),
            &health,
            &shutdown,
        );
        // Disconnects sockets whose token expired (one task for all of them).
        supervisor.spawn("token-expiry", {
            let shutdown = shutdown.clone();
            async move {
                expiries.run(shutdown).await;
                Ok(())
            }
        });
        spawn_metrics_server(&supervisor, metrics_listener, &shutdown)?;
        if dev_broker.is_some() {
            demo::print_banner(&config, &brokers, listener.local_addr()?);
            spawn_demo(&supervisor, &brokers, config.dev_demo_rate, &shutdown);
        }
        let http_stop = CancellationToken::new();
        let server = spawn_http_server(&supervisor, listener, router, &http_stop);

        shutdown.cancelled().await;
        drain::drain(drain::Drain {
            grace: config.shutdown_grace,
            delay: config.shutdown_delay,
            health: &health,
            consumer_stop: &consumer_stop,
            consumer,
            hub: hub.as_ref(),
            http_stop: &http_stop,
            server,
        })
        .await;
        drop(dev_broker);
        match supervisor.failure() {
            Some(failure) => {
                tracing::error!(%failure, "shutdown: done; exiting non-zero");
                Err(anyhow::anyhow!(failure))
            }
            None => {
                tracing::info!("shutdown: done");
                Ok(())
            }
        }
    }
}

/// The Kafka clients and the properties they were made with: the embedded broker speaks
/// plaintext only; a real one gets the configured security.
fn kafka_clients(
    config: &Config,
    brokers: &str,
    embedded: bool,
    health: &Arc<Health>,
    stats: &Arc<Stats>,
) -> anyhow::Result<(ClientProperties, GroupConsumer, DeadLetters)> {
    let client = if embedded {
        ClientProperties::default()
    } else {
        config.kafka.client.clone()
    };
    let consumer =
        consumer::create(&config.kafka, brokers, &client, health.clone(), stats.clone()).context("creating the Kafka consumer")?;
    let dead_letters = DeadLetters::new(brokers, &client, &config.kafka.dlq_topic).context("creating the dead-letter producer")?;
    Ok((client, consumer, dead_letters))
}

impl SocketState {
    /// The handlers' state over these shared parts; the socket history is the one faults can
    /// slow (test builds).
    fn new(verifier: &Arc<Verifier>, stats: &Arc<Stats>, history: &Arc<dyn History>, gate: &Arc<Gate>) -> Self {
        let faults = Arc::new(Faults::default());
        SocketState {
            verifier: verifier.clone(),
            stats: stats.clone(),
            history: crate::faults::socket_history(history.clone(), &faults),
            gate: gate.clone(),
            expiries: Arc::new(socket::Expiries::default()),
            faults,
        }
    }
}

/// The JWT verifier, warning when tokens of any audience would be accepted in production.
fn verifier(config: &Config) -> anyhow::Result<Arc<Verifier>> {
    let verifier = Verifier::new(&config.jwt_key)?.expecting(&config.jwt_audience, config.jwt_issuer.as_deref());
    if config.app_env == AppEnv::Production && config.jwt_audience.is_empty() {
        tracing::warn!("JWT_AUDIENCE is not set: tokens minted for any service that shares the key are accepted");
    }
    Ok(Arc::new(verifier))
}

/// The router of the public port: the API (and the dashboard where it is served), the
/// Socket.IO layer, CORS.
fn public_router(config: &Config, state: HttpState, sockets: AttachSockets) -> anyhow::Result<Router> {
    // Development: the dashboard, and `/` leads to it. Production: only when enabled.
    let dashboard = match config.app_env {
        AppEnv::Development => Some(true),
        AppEnv::Production => config.dashboard_enabled.then_some(false),
    };
    let api = http::router(state, config.rest_max_body_bytes, config.metrics_port.is_none(), dashboard);
    router::router(api, sockets, &config.cors_origins)
}

/// `/metrics` on its own port, when configured.
fn spawn_metrics_server(supervisor: &Arc<Supervisor>, listener: Option<TcpListener>, shutdown: &CancellationToken) -> anyhow::Result<()> {
    if let Some(listener) = listener {
        tracing::info!(addr = %listener.local_addr()?, "metrics listening");
        let stop = shutdown.clone();
        supervisor.spawn("metrics-server", async move {
            axum::serve(listener, http::metrics_router())
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
                .context("metrics server")
        });
    }
    Ok(())
}

/// The development demo stream on the embedded broker (`DEV_DEMO_RATE`, 0 = off).
fn spawn_demo(supervisor: &Arc<Supervisor>, brokers: &str, rate: u32, shutdown: &CancellationToken) {
    if rate > 0 {
        let (brokers, stop) = (brokers.to_owned(), shutdown.clone());
        supervisor.spawn("demo-producer", async move {
            demo::run(&brokers, &ClientProperties::default(), rate, None, stop)
                .await
                .context("demo producer")?;
            Ok(())
        });
    }
}

/// The public port, until `http_stop` fires.
fn spawn_http_server(supervisor: &Arc<Supervisor>, listener: TcpListener, router: Router, http_stop: &CancellationToken) -> JoinHandle<()> {
    supervisor.spawn(
        "http-server",
        // The peer address feeds the per-IP handshake limit.
        axum::serve(
            // Without TCP_NODELAY, two small writes in a row (the handshake's answer and
            // `connection:success`, or two envelopes) wait for the client's delayed ACK:
            // 40 ms on Linux.
            listener.tap_io(|tcp| {
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, "could not set TCP_NODELAY");
                }
            }),
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(http_stop.clone().cancelled_owned())
        .into_future()
        .map(|served| served.context("HTTP server")),
    )
}

/// What the socket handlers extract (socketioxide state, one value per type).
struct SocketState {
    verifier: Arc<Verifier>,
    stats: Arc<Stats>,
    history: Arc<dyn History>,
    gate: Arc<Gate>,
    expiries: Arc<socket::Expiries>,
    faults: Arc<Faults>,
}

/// The Socket.IO server, with its state and limits. With Redis, room broadcasts and
/// cluster queries go through the Redis adapter, and the namespace exists once its channels
/// are subscribed (see [`Links::run`]); alone, it is registered here.
fn socket_server(
    config: &Config,
    admission: socket::Admission,
    state: SocketState,
    redis: Option<RedisHistory>,
) -> anyhow::Result<(AttachSockets, Arc<dyn Hub>, Option<Links>)> {
    let stats = state.stats.clone();
    let builder = SocketIo::builder()
        // The same packet limit for both transports (the WebSocket default is 64 MiB).
        .max_payload(config.limits.max_payload_bytes)
        .ws_max_message_size(config.limits.max_payload_bytes as usize)
        .ws_max_frame_size(config.limits.max_payload_bytes as usize)
        .max_buffer_size(config.limits.socket_buffer)
        // Clients send little (acks, pongs, a few events): a small read buffer per
        // socket (the default is 4 KiB); larger frames are still read, in more calls.
        .ws_read_buffer_size(1024)
        // Sessions that never send a Socket.IO connect are closed this soon (default 45 s).
        .connect_timeout(config.limits.connect_timeout)
        .with_state(admission.limiter.clone())
        .with_state(state.verifier)
        .with_state(state.stats)
        .with_state(state.history)
        .with_state(state.gate)
        .with_state(state.expiries)
        .with_state(state.faults);
    Ok(match redis.zip(config.redis_url.as_deref()) {
        Some((history, url)) => {
            let pubsub = PubSub::new(url, stats.clone()).context("REDIS_URL")?;
            let (layer, io) = builder
                .with_adapter::<ClusterAdapter>(pubsub.clone().adapter(&config.redis_prefix))
                .build_layer();
            let hub: Arc<dyn Hub> = SocketHub::new(io.clone(), stats.clone());
            let links = Links {
                history,
                pubsub,
                io,
                hub: hub.clone(),
                delivery: None,
                stats: stats.clone(),
            };
            (router::attach(layer, admission), hub, Some(links))
        }
        None => {
            let (layer, io) = builder.build_layer();
            socket::register(&io);
            (router::attach(layer, admission), SocketHub::new(io, stats.clone()), None)
        }
    })
}

/// The brokers to use: the configured ones, or an embedded development broker started here
/// (kept alive by the returned handle).
fn brokers(config: &Config) -> anyhow::Result<(String, Option<DevBroker>)> {
    if let Some(brokers) = &config.kafka.brokers {
        return Ok((brokers.clone(), None));
    }
    let mut topics = DEV_TOPICS.to_vec();
    topics.push(&config.kafka.dlq_topic);
    let broker = DevBroker::start(&topics, 3).context("starting the embedded development broker")?;
    tracing::warn!(
        bootstrap = broker.bootstrap_servers(),
        "KAFKA_BROKERS is not set: using an EMBEDDED DEVELOPMENT BROKER (in memory, this process only). Never use this in production."
    );
    Ok((broker.bootstrap_servers().to_owned(), Some(broker)))
}

/// The replay history: in memory (which needs sweeping) unless Redis is configured (which
/// expires keys itself, and is not ready until its first PING answers).
type HistoryBackend = (Arc<dyn History>, Option<Arc<MemoryHistory>>, Option<RedisHistory>);

fn history_backend(config: &Config, health: &Health) -> anyhow::Result<HistoryBackend> {
    Ok(match &config.redis_url {
        Some(url) => {
            let redis = RedisHistory::connect(url, &config.redis_prefix, config.history).context("REDIS_URL")?;
            tracing::info!(prefix = %config.redis_prefix, "replay history in Redis");
            health.set_redis(false);
            (Arc::new(redis.clone()), None, Some(redis))
        }
        None => {
            let memory = Arc::new(MemoryHistory::new(config.history));
            (memory.clone(), Some(memory), None)
        }
    })
}

/// The public port, and the metrics port when it is separate.
async fn listeners(config: &Config) -> anyhow::Result<(TcpListener, Option<TcpListener>)> {
    let listener = TcpListener::bind(config.bind)
        .await
        .with_context(|| format!("binding {} (PORT)", config.bind))?;
    let metrics = match config.metrics_port {
        Some(port) => {
            let addr = SocketAddr::new(config.bind.ip(), port);
            Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr} (METRICS_PORT)"))?,
            )
        }
        None => None,
    };
    Ok((listener, metrics))
}

/// The consumer, with the restart policy: a failed consumer is rebuilt (not ready until it
/// has rejoined the group), resuming from the last committed offsets.
fn spawn_consumer(
    supervisor: &Arc<Supervisor>,
    consumer: GroupConsumer,
    sinks: Sinks,
    config: &Config,
    (brokers, client): (&str, &ClientProperties),
    health: &Arc<Health>,
    stop: &CancellationToken,
) -> JoinHandle<()> {
    let (mut first, kafka, brokers, client) = (Some(consumer), config.kafka.clone(), brokers.to_owned(), client.clone());
    let (health, stats, run_stop) = (health.clone(), sinks.stats.clone(), stop.clone());
    let on_failure = {
        let health = health.clone();
        move || health.kafka_restarting()
    };
    supervisor.spawn_restarting(
        "consumer",
        stop.clone(),
        move || {
            let consumer = first
                .take()
                .map_or_else(|| consumer::create(&kafka, &brokers, &client, health.clone(), stats.clone()), Ok);
            let (sinks, stop) = (sinks.clone(), run_stop.clone());
            async move { consumer::run(consumer.context("re-creating the Kafka consumer")?, sinks, stop).await }
        },
        on_failure,
    )
}

/// The loops beside the pipeline, with the exit policy (see [`crate::supervisor`]).
#[allow(clippy::too_many_arguments)] // each is one loop's input; a struct would only rename them
fn spawn_housekeeping(
    supervisor: &Arc<Supervisor>,
    config: &Config,
    redis: Option<Links>,
    memory_history: Option<Arc<MemoryHistory>>,
    limiter: Arc<socket::Limiter>,
    faults: Arc<Faults>,
    (brokers, client): (&str, &ClientProperties),
    health: &Arc<Health>,
    shutdown: &CancellationToken,
) {
    match redis {
        Some(redis) => supervisor.spawn("redis-links", redis.run(health.clone(), shutdown.clone())),
        // Alone is the only safe way to run without Redis (see `kafka::peers`).
        None => supervisor.spawn(
            "group-peers",
            crate::kafka::peers::watch(
                super::kafka::client_config(brokers, client),
                config.kafka.group_id.clone(),
                health.clone(),
                shutdown.clone(),
            ),
        ),
    };
    if let Some(memory) = memory_history {
        supervisor.spawn("history-sweep", sweep_history(memory, config.history.max_age, shutdown.clone()));
    }
    // Keeps the Prometheus histograms bounded (we serve /metrics ourselves, so the
    // exporter's own upkeep does not run).
    supervisor.spawn(
        "metrics-upkeep",
        every(Duration::from_secs(5), shutdown.clone(), move || {
            if faults.fire(Fault::HousekeepingPanic) {
                panic!("injected fault: housekeeping");
            }
            crate::metrics::upkeep();
            std::future::ready(())
        }),
    );
    // Forgets handshake budgets that have refilled.
    supervisor.spawn(
        "limiter-sweep",
        every(Duration::from_secs(60), shutdown.clone(), move || {
            limiter.sweep();
            std::future::ready(())
        }),
    );
}

/// Expires old history entries and forgets idle rooms, several times per age bound.
async fn sweep_history(history: Arc<MemoryHistory>, max_age: Duration, stop: CancellationToken) -> anyhow::Result<()> {
    let period = (max_age / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    every(period, stop, || {
        let rooms = history.sweep(std::time::Instant::now());
        tracing::trace!(rooms, "history swept");
        std::future::ready(())
    })
    .await
}

/// Runs the service until SIGTERM or SIGINT.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let app = App::build(config).await?;
    let shutdown = CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        trigger.cancel();
    });
    app.run(shutdown).await
}

/// Waits for SIGTERM or SIGINT. Handling SIGTERM matters as PID 1 in a container, where a
/// signal without a handler is ignored (the container would be killed after its grace).
pub async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
