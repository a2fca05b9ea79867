//! The `realtime-bridge` binary: the service, plus the demo producer and a token helper.

use std::time::Duration;

use clap::{Parser, Subcommand};
use realtime_bridge::{app, auth, config::Config, demo, telemetry};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "Kafka consumer group → typed events → Socket.IO rooms")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default); configured by environment variables, see the README.
    Serve,
    /// Publish the demo stream of order / inventory / product events to a broker.
    Demo {
        /// Bootstrap servers.
        #[arg(long, env = "KAFKA_BROKERS")]
        brokers: String,
        /// Events per second.
        #[arg(long, default_value_t = 5)]
        rate: u32,
        /// Stop after this many events (default: until Ctrl-C).
        #[arg(long)]
        count: Option<u64>,
        /// Compress record batches with this codec: none, gzip, snappy, lz4 or zstd.
        #[arg(long, default_value = "none", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
        compression: String,
    },
    /// Check an EVENT_MAPPING_FILE and print the event a record would become, or why not
    /// (exit 1). With SCHEMA_REGISTRY_URL set, a value in the Confluent wire format is read
    /// through that registry.
    CheckMapping {
        /// The mapping file (TOML).
        file: String,
        /// A file holding the record's value (JSON, or the bytes as produced).
        #[arg(long)]
        record: Option<std::path::PathBuf>,
        /// The record's topic (required with --record).
        #[arg(long, requires = "record")]
        topic: Option<String>,
        /// The record's key.
        #[arg(long, requires = "record")]
        key: Option<String>,
        /// A header NAME=VALUE (repeat for more).
        #[arg(long = "header", requires = "record", value_parser = header_arg)]
        headers: Vec<(String, String)>,
    },
    /// Print the OpenAPI document (how `openapi/openapi.json` is regenerated).
    Openapi,
    /// Print the AsyncAPI document (how `openapi/asyncapi.json` is regenerated).
    Asyncapi,
    /// Write the JSON Schema of each consumed topic's records into a directory (`schemas/`).
    RecordSchemas {
        /// The directory.
        #[arg(default_value = "schemas")]
        dir: std::path::PathBuf,
    },
    /// Exit 0 when GET /health/live on this container's PORT answers 200 (for Docker HEALTHCHECK).
    Healthcheck,
    /// Print an HS256 token signed with JWT_SECRET, for trying the service by hand.
    Token {
        /// The user id (`sub`).
        #[arg(long)]
        sub: String,
        /// Add the admin role.
        #[arg(long)]
        admin: bool,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = Config::from_env()?;
            telemetry::init(&config.log_level, config.log_format);
            // Every socket is a file: take the hard open-file limit (containers often start
            // with a soft limit of 1 024).
            match rlimit::increase_nofile_limit(u64::MAX) {
                Ok(limit) => tracing::info!(limit, "open-file limit"),
                Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
            }
            app::serve(config).await
        }
        Command::Demo {
            brokers,
            rate,
            count,
            compression,
        } => {
            telemetry::init("info", realtime_bridge::config::LogFormat::Pretty);
            let stop = CancellationToken::new();
            let trigger = stop.clone();
            tokio::spawn(async move {
                app::wait_for_signal().await;
                trigger.cancel();
            });
            // The same security settings as the service (KAFKA_SECURITY_PROTOCOL, …).
            let mut properties = realtime_bridge::config::kafka_client_from_env()?;
            properties.0.push(("compression.codec".to_owned(), compression));
            let sent = demo::run(&brokers, &properties, rate, count, stop).await?;
            println!("published {sent} demo events");
            Ok(())
        }
        Command::CheckMapping {
            file,
            record,
            topic,
            key,
            headers,
        } => check_mapping(&file, record, topic, key, headers).await,
        Command::Asyncapi => {
            println!("{}", serde_json::to_string_pretty(&realtime_bridge::contract::asyncapi())?);
            Ok(())
        }
        Command::RecordSchemas { dir } => {
            std::fs::create_dir_all(&dir)?;
            for (file, schema) in realtime_bridge::contract::record_schemas() {
                std::fs::write(dir.join(file), serde_json::to_string_pretty(&schema)? + "\n")?;
            }
            Ok(())
        }
        Command::Openapi => {
            println!("{}", realtime_bridge::http::openapi().to_pretty_json()?);
            Ok(())
        }
        Command::Healthcheck => {
            let port = std::env::var("PORT").ok().and_then(|p| p.parse().ok()).unwrap_or(3009);
            let status = probe_live(port).await?;
            anyhow::ensure!(status == 200, "GET /health/live answered {status}");
            Ok(())
        }
        Command::Token { sub, admin, ttl } => {
            let secret = std::env::var("JWT_SECRET").map_err(|_| anyhow::anyhow!("JWT_SECRET must be set to sign a token"))?;
            println!("{}", auth::mint_hs256(&secret, &sub, admin, Duration::from_secs(ttl)));
            Ok(())
        }
    }
}

/// `check-mapping`: prints the report; exits 1 when the record is not an event.
async fn check_mapping(
    file: &str,
    record: Option<std::path::PathBuf>,
    topic: Option<String>,
    key: Option<String>,
    headers: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let record = match record {
        Some(path) => Some(realtime_bridge::check::TryRecord {
            topic: topic.ok_or_else(|| anyhow::anyhow!("--topic is required with --record"))?,
            key,
            headers,
            value: std::fs::read(&path).map_err(|e| anyhow::anyhow!("--record {}: {e}", path.display()))?,
        }),
        None => None,
    };
    let registry = Config::registry_from_env()?
        .map(|r| realtime_bridge::decode::registry::Registry::new(&r))
        .transpose()?;
    let (report, is_event) = realtime_bridge::check::check(file, record, registry).await?;
    print!("{report}");
    std::process::exit(if is_event { 0 } else { 1 });
}

/// `NAME=VALUE`.
fn header_arg(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?}: expected NAME=VALUE"))
}

/// The HTTP status of `GET /health/live` on 127.0.0.1:`port`, within 3 s. Lets the
/// container image check itself without shipping curl.
async fn probe_live(port: u16) -> anyhow::Result<u16> {
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
        .map_err(|_| anyhow::anyhow!("health probe timed out"))?
}
