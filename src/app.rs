//! Builds every component from the configuration, runs them, and shuts them down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderValue, Method};
use futures_util::FutureExt;
use socketioxide::SocketIo;
use socketioxide::layer::SocketIoLayer;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{Verifier, mint_hs256};
use crate::cluster::{ClusterAdapter, PubSub};
use crate::config::{AppEnv, Config, CorsOrigins, JwtKey};
use crate::delivery::Delivery;
use crate::faults::{Fault, Faults};
use crate::health::Health;
use crate::history::redis::RedisHistory;
use crate::history::{History, MemoryHistory};
use crate::http::{self, HttpState};
use crate::kafka::consumer::{self, GroupConsumer, Sinks};
use crate::kafka::dead_letter::DeadLetters;
use crate::kafka::{DEV_TOPICS, dev_broker::DevBroker};
use crate::routing::RoutingRules;
use crate::socket::gate::Gate;
use crate::socket::hub::{Hub, SocketHub};
use crate::stats::Stats;
use crate::supervisor::Supervisor;
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
    redis: Option<RedisLinks>,
    limiter: Arc<socket::Limiter>,
    health: Arc<Health>,
    faults: Arc<Faults>,
    brokers: String,
    // Kept alive for the life of the app; dropping it stops the broker.
    dev_broker: Option<DevBroker>,
}

impl App {
    /// Starts the development broker if needed, binds the port and creates the consumer.
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let dev_broker = match &config.kafka.brokers {
            Some(_) => None,
            None => {
                let mut topics = DEV_TOPICS.to_vec();
                topics.push(&config.kafka.dlq_topic);
                let broker = DevBroker::start(&topics, 3).context("starting the embedded development broker")?;
                tracing::warn!(
                    bootstrap = broker.bootstrap_servers(),
                    "KAFKA_BROKERS is not set: using an EMBEDDED DEVELOPMENT BROKER (in memory, this process only). Never use this in production."
                );
                Some(broker)
            }
        };
        let brokers = match (&config.kafka.brokers, &dev_broker) {
            (Some(b), _) => b.clone(),
            (None, Some(d)) => d.bootstrap_servers().to_owned(),
            (None, None) => unreachable!("a dev broker is started whenever no brokers are configured"),
        };

        let health = Arc::new(Health::new(dev_broker.is_some()));
        let stats = Arc::new(Stats::default());
        let verifier = Arc::new(Verifier::new(&config.jwt_key)?.expecting(&config.jwt_audience, config.jwt_issuer.as_deref()));
        if config.app_env == AppEnv::Production && config.jwt_audience.is_empty() {
            tracing::warn!("JWT_AUDIENCE is not set: tokens minted for any service that shares the key are accepted");
        }
        // Memory unless Redis is configured; the memory store needs sweeping, Redis expires keys itself.
        let (history, memory_history, redis): (Arc<dyn History>, Option<Arc<MemoryHistory>>, Option<RedisHistory>) = match &config.redis_url
        {
            Some(url) => {
                let redis = RedisHistory::connect(url, &config.redis_prefix, config.history).context("REDIS_URL")?;
                tracing::info!(prefix = %config.redis_prefix, "replay history in Redis");
                // Not ready until the first PING answers.
                health.set_redis(false);
                (Arc::new(redis.clone()), None, Some(redis))
            }
            None => {
                let memory = Arc::new(MemoryHistory::new(config.history));
                (memory.clone(), Some(memory), None)
            }
        };
        let gate = Arc::new(Gate::default());

        let limiter = socket::Limiter::new(config.limits);
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
            .with_state(limiter.clone())
            .with_state(verifier.clone())
            .with_state(stats.clone())
            .with_state(history.clone())
            .with_state(gate.clone());
        // With Redis, room broadcasts and cluster queries go through the Redis adapter; the
        // namespace exists once its channels are subscribed (see `RedisLinks::run`).
        let (attach_sockets, hub, redis): (AttachSockets, Arc<dyn Hub>, _) = match redis.zip(config.redis_url.as_deref()) {
            Some((history, url)) => {
                let pubsub = PubSub::new(url, stats.clone()).context("REDIS_URL")?;
                let (layer, io) = builder
                    .with_adapter::<ClusterAdapter>(pubsub.clone().adapter(&config.redis_prefix))
                    .build_layer();
                let hub: Arc<dyn Hub> = SocketHub::new(io.clone(), stats.clone());
                let links = RedisLinks {
                    history,
                    pubsub,
                    io,
                    hub: hub.clone(),
                    delivery: None,
                };
                (attach(layer, (limiter.clone(), stats.clone())), hub, Some(links))
            }
            None => {
                let (layer, io) = builder.build_layer();
                socket::register(&io);
                (
                    attach(layer, (limiter.clone(), stats.clone())),
                    SocketHub::new(io, stats.clone()),
                    None,
                )
            }
        };

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
        );
        let redis = redis.map(|links| RedisLinks {
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
        };
        crate::metrics::handle();
        let router = attach_sockets(http::router(http_state, config.rest_max_body_bytes, config.metrics_port.is_none()))
            .layer(cors_layer(&config.cors_origins)?);

        let listener = TcpListener::bind(config.bind)
            .await
            .with_context(|| format!("binding {} (PORT)", config.bind))?;
        let metrics_listener = match config.metrics_port {
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
        let consumer = consumer::create(&config.kafka, &brokers, health.clone(), stats.clone()).context("creating the Kafka consumer")?;
        let dead_letters = DeadLetters::new(&brokers, &config.kafka.dlq_topic).context("creating the dead-letter producer")?;
        let faults = Arc::new(Faults::default());

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
            health,
            faults,
            brokers,
            dev_broker,
        })
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
            health,
            faults,
            brokers,
            dev_broker,
        } = self;
        tracing::info!(addr = %listener.local_addr()?, "listening");
        let supervisor = Supervisor::new(health.clone(), sinks.stats.clone(), shutdown.clone());

        // Restart policy: a failed consumer is rebuilt (not ready until it has rejoined the
        // group), resuming from the last committed offsets.
        let consumer_stop = CancellationToken::new();
        let consumer_task = {
            let (mut first, stop, kafka, brokers) = (Some(consumer), consumer_stop.clone(), config.kafka.clone(), brokers.clone());
            let (health, stats) = (health.clone(), sinks.stats.clone());
            let on_failure = {
                let health = health.clone();
                move || health.kafka_restarting()
            };
            supervisor.spawn_restarting(
                "consumer",
                consumer_stop.clone(),
                move || {
                    let consumer = first
                        .take()
                        .map_or_else(|| consumer::create(&kafka, &brokers, health.clone(), stats.clone()), Ok);
                    let (sinks, stop) = (sinks.clone(), stop.clone());
                    async move { consumer::run(consumer.context("re-creating the Kafka consumer")?, sinks, stop).await }
                },
                on_failure,
            )
        };
        // Exit policy for everything else.
        if let Some(redis) = redis {
            supervisor.spawn("redis-links", redis.run(health.clone(), shutdown.clone()));
        }
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
        if let Some(listener) = metrics_listener {
            tracing::info!(addr = %listener.local_addr()?, "metrics listening");
            let stop = shutdown.clone();
            supervisor.spawn("metrics-server", async move {
                axum::serve(listener, http::metrics_router())
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
                    .context("metrics server")
            });
        }

        if dev_broker.is_some() {
            print_dev_banner(&config, &brokers, listener.local_addr()?);
            if config.dev_demo_rate > 0 {
                let (brokers, rate, stop) = (brokers.clone(), config.dev_demo_rate, shutdown.clone());
                supervisor.spawn("demo-producer", async move {
                    demo::run(&brokers, rate, None, stop).await.context("demo producer")?;
                    Ok(())
                });
            }
        }

        let http_stop = CancellationToken::new();
        let server = supervisor.spawn(
            "http-server",
            // The peer address feeds the per-IP handshake limit.
            axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(http_stop.clone().cancelled_owned())
                .into_future()
                .map(|served| served.context("HTTP server")),
        );

        shutdown.cancelled().await;
        let deadline = tokio::time::Instant::now() + config.shutdown_grace;
        tracing::info!(grace = ?config.shutdown_grace, "shutdown: readiness is now false");
        health.start_draining();

        tracing::info!("shutdown: stopping the consumer after the record in flight");
        consumer_stop.cancel();
        if tokio::time::timeout_at(deadline, consumer_task).await.is_err() {
            tracing::warn!("shutdown: consumer did not stop within the grace period");
        }

        // Closing the transports (not a Socket.IO disconnect, which tells socket.io-client
        // to stay away) makes clients see "transport close" and reconnect — behind a load
        // balancer, to a live node, where they resume from their positions.
        let sockets = hub.local().sockets;
        tracing::info!(sockets, "shutdown: closing socket transports so clients reconnect elsewhere");
        if tokio::time::timeout_at(deadline, hub.close()).await.is_err() {
            tracing::warn!("shutdown: sockets did not close within the grace period");
        }

        tracing::info!("shutdown: closing the HTTP server");
        http_stop.cancel();
        if tokio::time::timeout_at(deadline, server).await.is_err() {
            tracing::warn!("shutdown: grace period over, dropping remaining connections");
        }
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

/// Runs `work` every `period` until `stop` fires: the housekeeping tasks below. Returns
/// only then (a supervised task that returns earlier has failed).
async fn every<F, Fut>(period: Duration, stop: CancellationToken, mut work: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tick.tick() => work().await,
        }
    }
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

/// Puts the Socket.IO layer (whatever its adapter) on the router.
type AttachSockets = Box<dyn FnOnce(Router) -> Router + Send>;

fn attach<A: socketioxide::adapter::Adapter>(layer: SocketIoLayer<A>, admission: (Arc<socket::Limiter>, Arc<Stats>)) -> AttachSockets {
    Box::new(move |router: Router| {
        router
            .layer(layer)
            .layer(axum::middleware::map_request(socket::detach_head))
            .layer(axum::middleware::from_fn_with_state(admission, socket::admit))
    })
}

/// What this node has in Redis: the history and the adapter's pub/sub connection.
struct RedisLinks {
    history: RedisHistory,
    pubsub: PubSub,
    io: SocketIo<ClusterAdapter>,
    hub: Arc<dyn Hub>,
    /// For heads to announce after broadcasts the cluster did not take (set once built).
    delivery: Option<Delivery>,
}

impl RedisLinks {
    /// Subscribes the namespace's adapter channels (retrying until Redis answers), then
    /// pings both connections every second; readiness follows, and each change is logged.
    /// The connection managers reconnect (and re-subscribe) by themselves once Redis is back;
    /// then clients are told their rooms' heads, to resync what they missed meanwhile.
    async fn run(self, health: Arc<Health>, stop: CancellationToken) -> anyhow::Result<()> {
        let subscribed = async {
            loop {
                match socket::register(&self.io).await {
                    Ok(()) => return tracing::info!("Socket.IO adapter subscribed to Redis"),
                    Err(error) => tracing::warn!(%error, "Socket.IO adapter cannot subscribe to Redis yet; retrying"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = subscribed => {}
        }
        every(Duration::from_secs(1), stop, || async {
            let timeout = Duration::from_secs(1);
            let (history, pubsub) = tokio::join!(self.history.ping(timeout), self.pubsub.ping(timeout));
            let up = history && pubsub;
            // Back after a drop (however short): broadcasts published meanwhile never came.
            if up && self.pubsub.take_dropped() {
                let rooms = self.hub.announce_heads(&self.history).await;
                tracing::info!(
                    rooms,
                    "Redis pub/sub reconnected and re-subscribed; room heads announced so clients resync"
                );
            }
            if up && let Some(delivery) = &self.delivery {
                let rooms = delivery.announce_unannounced().await;
                if rooms > 0 {
                    tracing::info!(rooms, "announced the heads of rooms whose broadcast the cluster had not taken");
                }
            }
            if health.set_redis(up) {
                if up {
                    tracing::info!("Redis is reachable again; ready");
                } else {
                    tracing::warn!(history, pubsub, "Redis is unreachable; not ready until it answers again");
                }
            }
        })
        .await
    }
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

async fn wait_for_signal() {
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

/// The HTTP status of `GET /health/live` on 127.0.0.1:`port`, within 3 s. Lets the
/// container image check itself without shipping curl.
pub async fn probe_live(port: u16) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        conn.write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).await?;
        // "HTTP/1.1 200"
        let code = std::str::from_utf8(&head[9..12])?.parse::<u16>()?;
        anyhow::Ok(code)
    };
    tokio::time::timeout(Duration::from_secs(3), probe)
        .await
        .context("health probe timed out")?
}

fn cors_layer(origins: &CorsOrigins) -> anyhow::Result<CorsLayer> {
    let allow = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => {
            let values = list
                .iter()
                .map(|o| HeaderValue::from_str(o).with_context(|| format!("CORS_ORIGINS: {o:?} is not a valid header value")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            AllowOrigin::list(values)
        }
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([axum::http::header::AUTHORIZATION, axum::http::header::CONTENT_TYPE])
        .max_age(Duration::from_secs(600)))
}

fn print_dev_banner(config: &Config, brokers: &str, addr: SocketAddr) {
    if config.app_env != AppEnv::Development {
        return;
    }
    let mut banner = format!(
        "\n==== realtime-bridge DEVELOPMENT MODE ====\n\
         Embedded Kafka (development only): {brokers}\n\
         Socket.IO / HTTP: http://127.0.0.1:{port}   probes: /health/ready\n\
         Demo events: {rate}/s (DEV_DEMO_RATE); more with: realtime-bridge demo --brokers {brokers}\n",
        port = addr.port(),
        rate = config.dev_demo_rate,
    );
    if let JwtKey::GeneratedDev(secret) = &config.jwt_key {
        let day = Duration::from_secs(24 * 3600);
        banner.push_str(&format!(
            "JWT key: generated for this run only (set JWT_SECRET to choose one).\n\
             Buyer token ({buyer}): {}\n\
             Admin token (admin):      {}\n",
            mint_hs256(secret, demo::DEMO_BUYER, false, day),
            mint_hs256(secret, "admin", true, day),
            buyer = demo::DEMO_BUYER,
        ));
    }
    banner.push_str("==========================================\n");
    println!("{banner}");
}
