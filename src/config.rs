//! Every environment variable the service reads, with defaults and validation.
//!
//! The configuration is loaded once at start. A bad value stops the process with an
//! error naming the variable, so a misconfigured pod fails its rollout instead of
//! running half-working.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::history::HistoryLimits;

/// The default topic subscriptions: one regex per event family.
pub(crate) const DEFAULT_TOPICS: &str = r"^order\..*,^inventory\..*,^product\..*";
/// The dead-letter topic when `KAFKA_DLQ_TOPIC` is not set.
pub(crate) const DEFAULT_DLQ_TOPIC: &str = "realtime-bridge.dlq";

/// A configuration problem, always naming the variable at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// The value could not be parsed or is out of range.
    #[error("{var}: {reason}")]
    Invalid {
        /// The environment variable.
        var: &'static str,
        /// What is wrong with it (never the value itself for secrets).
        reason: String,
    },
    /// A variable that production requires is missing.
    #[error("{var} must be set when APP_ENV=production ({reason})")]
    RequiredInProduction {
        /// The environment variable.
        var: &'static str,
        /// Why production needs it.
        reason: &'static str,
    },
}

/// Whether the process runs as a developer's playground or for real.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppEnv {
    /// Lenient defaults: embedded broker, generated JWT key, any CORS origin.
    Development,
    /// Strict: every secret and endpoint must be given explicitly.
    Production,
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines, for terminals.
    Pretty,
    /// One JSON object per line, for log collectors.
    Json,
}

/// The key that verifies client JWTs; the algorithm is pinned by the key type.
#[derive(Clone, PartialEq, Eq)]
pub enum JwtKey {
    /// HS256 with a shared secret.
    Hs256Secret(String),
    /// RS256 with a PEM-encoded public key.
    Rs256PublicPem(String),
    /// Development only: a random HS256 secret generated at start.
    GeneratedDev(String),
}

impl std::fmt::Debug for JwtKey {
    // Never print key material, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JwtKey::Hs256Secret(_) => f.write_str("Hs256Secret(<redacted>)"),
            JwtKey::Rs256PublicPem(_) => f.write_str("Rs256PublicPem(<public key>)"),
            JwtKey::GeneratedDev(_) => f.write_str("GeneratedDev(<redacted>)"),
        }
    }
}

/// What one client may do (see the README's "Limits and security").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// Sockets one user may hold at once; the next is refused.
    pub max_connections_per_user: usize,
    /// Sockets this node holds at most.
    pub max_connections: usize,
    /// Handshakes one IP address may start per minute (burst of the same size).
    pub handshakes_per_minute_per_ip: u32,
    /// Client events one socket may send per second (burst of the same size).
    pub client_events_per_second: u32,
    /// Largest Engine.IO packet a client may send.
    pub max_payload_bytes: u64,
    /// Packets buffered per socket before it counts as slow.
    pub socket_buffer: usize,
    /// Take the client address from the last `X-Forwarded-For` entry (behind a trusted proxy).
    pub trust_forwarded_for: bool,
    /// Engine.IO sessions opened but not (yet) joined to Socket.IO this node holds at most.
    pub max_pending_sessions: u32,
    /// How long an Engine.IO session may wait for its Socket.IO connect before it is closed.
    pub connect_timeout: Duration,
    /// Envelopes replayed on reconnect per client address per minute (burst of the same size).
    pub replay_per_minute_per_ip: u32,
    /// Product rooms (`subscribe:products`) one socket may be in.
    pub max_product_subscriptions: usize,
}

/// Service API keys accepted in `X-API-Key` by the REST API; never printed.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ApiKeys(pub Vec<String>);

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys(<{} redacted>)", self.0.len())
    }
}

/// Which origins browsers may call from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// Any origin, without credentials (development only).
    Any,
    /// Exactly these origins.
    List(Vec<String>),
}

/// Where `auto.offset.reset` starts a group that has no committed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// Only records produced after the group first joins.
    Latest,
    /// Everything the topic still retains.
    Earliest,
}

impl OffsetReset {
    /// The librdkafka spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OffsetReset::Latest => "latest",
            OffsetReset::Earliest => "earliest",
        }
    }
}

/// The consumer group protocol (`KAFKA_GROUP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupProtocol {
    /// The classic protocol: client-side assignment, eager rebalances, client-side regexes.
    Classic,
    /// KIP-848: the broker assigns, incrementally, and matches regexes in full (RE2J).
    Consumer,
}

/// Kafka consumer settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaConfig {
    /// Bootstrap servers; `None` starts the embedded development broker.
    pub brokers: Option<String>,
    /// Consumer group id.
    pub group_id: String,
    /// Topic names or `^`-prefixed regexes.
    pub topics: Vec<String>,
    /// `session.timeout.ms` (classic group protocol only).
    pub session_timeout_ms: u32,
    /// The consumer group protocol.
    pub group_protocol: GroupProtocol,
    /// `fetch.wait.max.ms`.
    pub fetch_wait_max_ms: u32,
    /// `topic.metadata.refresh.interval.ms`: how fast new topics matching a regex are seen.
    pub metadata_refresh_ms: u32,
    /// `auto.offset.reset`.
    pub offset_reset: OffsetReset,
    /// Where records that cannot become events are produced, with their coordinates.
    pub dlq_topic: String,
    /// Records with a larger value are dead-lettered instead of sent to clients.
    pub max_record_bytes: usize,
    /// Security and pass-through properties every Kafka client of the bridge gets.
    pub client: ClientProperties,
}

/// librdkafka properties given to every Kafka client of the bridge (consumer, dead-letter
/// producer, demo producer): security from the `KAFKA_SECURITY_*` / `KAFKA_SASL_*` /
/// `KAFKA_SSL_*` variables, then anything from `KAFKA_PROPERTIES_FILE`. `Debug` shows the
/// keys and only the values known not to be secret.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientProperties(pub Vec<(String, String)>);

/// Properties whose values may be printed.
const PUBLIC_PROPERTIES: [&str; 6] = [
    "security.protocol",
    "sasl.mechanism",
    "sasl.username",
    "ssl.ca.location",
    "ssl.certificate.location",
    "ssl.key.location",
];

impl std::fmt::Debug for ClientProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(self.0.iter().map(|(k, v)| {
                let shown = if PUBLIC_PROPERTIES.contains(&k.as_str()) {
                    v.as_str()
                } else {
                    "<redacted>"
                };
                (k, shown)
            }))
            .finish()
    }
}

/// Properties the bridge sets itself for its guarantees (at-least-once, the DLQ's
/// idempotence, lag statistics, its own variables): never taken from `KAFKA_PROPERTIES_FILE`.
const PROTECTED_PROPERTIES: [&str; 13] = [
    "bootstrap.servers",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.commit.interval.ms",
    "auto.offset.reset",
    "enable.idempotence",
    "statistics.interval.ms",
    "session.timeout.ms",
    "fetch.wait.max.ms",
    "topic.metadata.refresh.interval.ms",
    "allow.auto.create.topics",
    "message.max.bytes",
];

/// The whole service configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Development or production.
    pub app_env: AppEnv,
    /// Address the HTTP / Socket.IO server binds.
    pub bind: SocketAddr,
    /// Kafka settings.
    pub kafka: KafkaConfig,
    /// Client JWT verification key.
    pub jwt_key: JwtKey,
    /// Accepted `aud` values (`JWT_AUDIENCE`, comma-separated); when set, tokens must name
    /// one of them. Unset: `aud` is not checked.
    pub jwt_audience: Vec<String>,
    /// Required `iss` (`JWT_ISSUER`); unset: not checked.
    pub jwt_issuer: Option<String>,
    /// Allowed browser origins.
    pub cors_origins: CorsOrigins,
    /// Stock at or below which an `admin:inventory:low-stock` alert is raised.
    pub low_stock_threshold: i64,
    /// `tracing` filter directives.
    pub log_level: String,
    /// Log line format.
    pub log_format: LogFormat,
    /// Serve `/dashboard` in production (always served in development).
    pub dashboard_enabled: bool,
    /// How long shutdown may take before the process exits anyway.
    pub shutdown_grace: Duration,
    /// How long a draining node keeps serving its sockets (refusing new handshakes) before
    /// closing them, so load balancers see it not ready first.
    pub shutdown_delay: Duration,
    /// Demo events per second published to the embedded broker (0 = none).
    pub dev_demo_rate: u32,
    /// Bounds of each room's replay history.
    pub history: HistoryLimits,
    /// Keys other services may use on the REST API.
    pub api_keys: ApiKeys,
    /// Largest REST request body accepted.
    pub rest_max_body_bytes: usize,
    /// When set, `/metrics` is served on this port (bound to `HOST`) instead of the main one.
    pub metrics_port: Option<u16>,
    /// Limits on clients.
    pub limits: ClientLimits,
    /// Redis: the shared replay history and the Socket.IO adapter between nodes.
    pub redis_url: Option<String>,
    /// Prefix of every Redis key this deployment writes.
    pub redis_prefix: String,
    /// Which event each record is: `EVENT_MAPPING_FILE`'s sources, then the built-in one.
    pub mapping: crate::mapping::Mapping,
    /// The schema registry for the Confluent wire format (`SCHEMA_REGISTRY_URL`).
    pub schema_registry: Option<RegistryConfig>,
}

/// `SCHEMA_REGISTRY_*`. `Debug` never shows the password or the token.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    /// The Confluent-compatible API's base URL (Apicurio: `…/apis/ccompat/v7`).
    pub url: String,
    /// Basic auth user.
    pub username: Option<String>,
    /// Basic auth password.
    pub password: Option<String>,
    /// Bearer token (when no user is set).
    pub token: Option<String>,
    /// A PEM file of the CAs to trust for HTTPS, besides the bundled web roots.
    pub ca_file: Option<String>,
    /// Schemas kept, at most.
    pub cache_size: usize,
}

impl std::fmt::Debug for RegistryConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("RegistryConfig")
            .field("url", &self.url)
            .field("username", &self.username)
            .field("password", &redacted(&self.password))
            .field("token", &redacted(&self.token))
            .field("ca_file", &self.ca_file)
            .field("cache_size", &self.cache_size)
            .finish()
    }
}

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        Self::from_lookup(|k| vars.get(k).cloned())
    }

    /// `SCHEMA_REGISTRY_*` alone, from the process environment (for `check-mapping`).
    pub fn registry_from_env() -> Result<Option<RegistryConfig>, ConfigError> {
        let vars: HashMap<String, String> = std::env::vars().collect();
        let get = trimmed(|k: &str| vars.get(k).cloned());
        schema_registry(&get)
    }

    /// Reads the configuration from any key lookup (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = trimmed(get);
        let get: Lookup<'_> = &get;

        let app_env = match get("APP_ENV").as_deref() {
            None | Some("development") | Some("dev") => AppEnv::Development,
            Some("production") | Some("prod") => AppEnv::Production,
            Some(other) => {
                return Err(invalid("APP_ENV", format!("expected development or production, got {other:?}")));
            }
        };
        let prod = app_env == AppEnv::Production;
        let port: u16 = parse(get, "PORT", 3009)?;
        let host: IpAddr = parse(get, "HOST", IpAddr::V4(Ipv4Addr::UNSPECIFIED))?;
        let (log_level, log_format) = logging(get, prod)?;
        let (jwt_key, jwt_audience, jwt_issuer) = jwt(get, prod)?;
        let (redis_url, redis_prefix) = redis(get)?;
        let (shutdown_grace, shutdown_delay) = shutdown(get)?;
        let mapping = match get("EVENT_MAPPING_FILE") {
            Some(path) => crate::mapping::Mapping::load(&path).map_err(|e| invalid("EVENT_MAPPING_FILE", e.0))?,
            None => crate::mapping::Mapping::built_in(),
        };
        Ok(Config {
            app_env,
            bind: SocketAddr::new(host, port),
            kafka: kafka(get, prod, &mapping.subscriptions())?,
            schema_registry: schema_registry(get)?,
            mapping,
            jwt_key,
            jwt_audience,
            jwt_issuer,
            cors_origins: cors(get, prod)?,
            low_stock_threshold: parse_range(get, "LOW_STOCK_THRESHOLD", 5, 0..=1_000_000_000)?,
            log_level,
            log_format,
            dashboard_enabled: one_of(
                get,
                "DASHBOARD_ENABLED",
                &[("true", true), ("1", true), ("false", false), ("0", false)],
            )?
            .unwrap_or(false),
            shutdown_grace,
            shutdown_delay,
            dev_demo_rate: parse_range(get, "DEV_DEMO_RATE", 1, 0..=10_000)?,
            history: history(get)?,
            limits: client_limits(get)?,
            redis_url,
            redis_prefix,
            api_keys: api_keys(get)?,
            rest_max_body_bytes: parse_range(get, "REST_MAX_BODY_BYTES", 64 * 1024, 1_024..=16 * 1024 * 1024)?,
            metrics_port: metrics_port(get, port)?,
        })
    }
}

/// The grace period and, within it, the delay before a draining node closes its sockets.
fn shutdown(get: Lookup<'_>) -> Result<(Duration, Duration), ConfigError> {
    let grace: u64 = parse_range(get, "SHUTDOWN_GRACE_SECS", 20, 1..=600)?;
    let delay: u64 = parse_range(get, "SHUTDOWN_DELAY_SECS", 0, 0..=600)?;
    if delay >= grace {
        return Err(invalid(
            "SHUTDOWN_DELAY_SECS",
            format!("must be shorter than SHUTDOWN_GRACE_SECS ({grace}): the drain needs time after it"),
        ));
    }
    Ok((Duration::from_secs(grace), Duration::from_secs(delay)))
}

/// The most product rooms a socket may ever be configured to hold (bounds the handshake's
/// positions too).
pub const MAX_PRODUCT_SUBSCRIPTIONS_CAP: usize = 200;

/// How a section reads variables (empty values already count as unset).
type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// `SCHEMA_REGISTRY_*`; `None` without `SCHEMA_REGISTRY_URL`.
fn schema_registry(get: Lookup<'_>) -> Result<Option<RegistryConfig>, ConfigError> {
    let Some(url) = get("SCHEMA_REGISTRY_URL") else {
        return Ok(None);
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid("SCHEMA_REGISTRY_URL", "expected http://… or https://…".into()));
    }
    let username = get("SCHEMA_REGISTRY_USERNAME");
    let password = secret(get, "SCHEMA_REGISTRY_PASSWORD")?;
    let token = secret(get, "SCHEMA_REGISTRY_TOKEN")?;
    if username.is_some() && token.is_some() {
        return Err(invalid(
            "SCHEMA_REGISTRY_TOKEN",
            "set SCHEMA_REGISTRY_USERNAME (Basic) or SCHEMA_REGISTRY_TOKEN (bearer), not both".into(),
        ));
    }
    if password.is_some() && username.is_none() {
        return Err(invalid("SCHEMA_REGISTRY_PASSWORD", "needs SCHEMA_REGISTRY_USERNAME".into()));
    }
    Ok(Some(RegistryConfig {
        url,
        username,
        password,
        token,
        ca_file: get("SCHEMA_REGISTRY_CA_FILE"),
        cache_size: parse_range(get, "SCHEMA_REGISTRY_CACHE_SIZE", 1_000, 1..=100_000)?,
    }))
}

fn kafka(get: Lookup<'_>, prod: bool, mapped_topics: &[String]) -> Result<KafkaConfig, ConfigError> {
    let brokers = get("KAFKA_BROKERS");
    if prod && brokers.is_none() {
        return Err(ConfigError::RequiredInProduction {
            var: "KAFKA_BROKERS",
            reason: "the embedded broker is for development only",
        });
    }
    let topics: Vec<String> = get("KAFKA_TOPICS")
        .unwrap_or_else(|| DEFAULT_TOPICS.to_owned())
        .split(',')
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .collect();
    if topics.is_empty() {
        return Err(invalid("KAFKA_TOPICS", "no topic or pattern given".into()));
    }
    // EVENT_MAPPING_FILE's sources are consumed besides KAFKA_TOPICS.
    let mut topics = topics;
    for topic in mapped_topics {
        if !topics.contains(topic) {
            topics.push(topic.clone());
        }
    }
    let offset_reset = one_of(
        get,
        "KAFKA_AUTO_OFFSET_RESET",
        &[("latest", OffsetReset::Latest), ("earliest", OffsetReset::Earliest)],
    )?
    .unwrap_or(OffsetReset::Latest);
    let dlq_topic = get("KAFKA_DLQ_TOPIC").unwrap_or_else(|| DEFAULT_DLQ_TOPIC.to_owned());
    check_dlq_topic(&dlq_topic, &topics)?;
    let group_protocol = one_of(
        get,
        "KAFKA_GROUP_PROTOCOL",
        &[("classic", GroupProtocol::Classic), ("consumer", GroupProtocol::Consumer)],
    )?
    .unwrap_or(GroupProtocol::Classic);
    if group_protocol == GroupProtocol::Consumer {
        if get("KAFKA_SESSION_TIMEOUT_MS").is_some() {
            return Err(invalid(
                "KAFKA_SESSION_TIMEOUT_MS",
                "not used with KAFKA_GROUP_PROTOCOL=consumer: the broker's group.consumer.session.timeout.ms applies".into(),
            ));
        }
        // The broker matches these patterns itself, in full (RE2J): a prefix pattern such as
        // `^order\.` would match nothing; it must cover the whole name.
        if let Some(prefix) = topics
            .iter()
            .find(|t| t.starts_with('^') && !(t.ends_with(".*") || t.ends_with('$') || t.ends_with(".+")))
        {
            return Err(invalid(
                "KAFKA_TOPICS",
                format!(
                    "{prefix:?}: with KAFKA_GROUP_PROTOCOL=consumer the broker matches a pattern against the whole topic name; end it with .* (e.g. ^order\\..*) or $"
                ),
            ));
        }
    }
    Ok(KafkaConfig {
        brokers,
        group_id: get("KAFKA_GROUP_ID").unwrap_or_else(|| "realtime-bridge".to_owned()),
        topics,
        session_timeout_ms: parse_range(get, "KAFKA_SESSION_TIMEOUT_MS", 45_000, 1_000..=300_000)?,
        group_protocol,
        fetch_wait_max_ms: parse_range(get, "KAFKA_FETCH_WAIT_MAX_MS", 100, 0..=60_000)?,
        metadata_refresh_ms: parse_range(get, "KAFKA_METADATA_REFRESH_MS", 5_000, 100..=10_000)?,
        offset_reset,
        dlq_topic,
        max_record_bytes: parse_range(get, "KAFKA_MAX_RECORD_BYTES", 256 * 1024, 1_024..=64 * 1024 * 1024)?,
        client: kafka_client(get)?,
    })
}

/// The Kafka client properties alone, from the environment (for the `demo` subcommand).
pub fn kafka_client_from_env() -> Result<ClientProperties, ConfigError> {
    kafka_client(&trimmed(|k| std::env::var(k).ok()))
}

/// The security settings, then the pass-through file (see [`ClientProperties`]).
fn kafka_client(get: Lookup<'_>) -> Result<ClientProperties, ConfigError> {
    let mut props: Vec<(String, String)> = Vec::new();
    let protocol = one_of(
        get,
        "KAFKA_SECURITY_PROTOCOL",
        &["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"].map(|p| (p, p)),
    )?
    .unwrap_or("PLAINTEXT");
    props.push(("security.protocol".into(), protocol.into()));
    let sasl = protocol.starts_with("SASL_");
    let mechanism = one_of(
        get,
        "KAFKA_SASL_MECHANISM",
        &["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"].map(|m| (m, m)),
    )?;
    match (mechanism, sasl) {
        (None, true) => return Err(invalid("KAFKA_SASL_MECHANISM", format!("required with {protocol}"))),
        (Some(_), false) => {
            return Err(invalid(
                "KAFKA_SASL_MECHANISM",
                format!("only used with SASL_PLAINTEXT or SASL_SSL, not {protocol}"),
            ));
        }
        (None, false) => {}
        (Some(mechanism), true) => {
            if mechanism != "OAUTHBEARER" {
                let user =
                    get("KAFKA_SASL_USERNAME").ok_or_else(|| invalid("KAFKA_SASL_USERNAME", format!("required with {mechanism}")))?;
                let password = secret(get, "KAFKA_SASL_PASSWORD")?.ok_or_else(|| {
                    invalid(
                        "KAFKA_SASL_PASSWORD",
                        format!("required with {mechanism} (or KAFKA_SASL_PASSWORD_FILE)"),
                    )
                })?;
                props.push(("sasl.username".into(), user));
                props.push(("sasl.password".into(), password));
            }
            props.push(("sasl.mechanism".into(), mechanism.into()));
        }
    }
    for (var, key) in [
        ("KAFKA_SSL_CA_LOCATION", "ssl.ca.location"),
        ("KAFKA_SSL_CERTIFICATE_LOCATION", "ssl.certificate.location"),
        ("KAFKA_SSL_KEY_LOCATION", "ssl.key.location"),
    ] {
        if let Some(path) = get(var) {
            if !std::path::Path::new(&path).is_file() {
                return Err(invalid(var, format!("{path:?} is not a readable file")));
            }
            props.push((key.into(), path));
        }
    }
    if let Some(password) = secret(get, "KAFKA_SSL_KEY_PASSWORD")? {
        props.push(("ssl.key.password".into(), password));
    }
    if let Some(path) = get("KAFKA_PROPERTIES_FILE") {
        properties_file(&path, &mut props)?;
    }
    Ok(ClientProperties(props))
}

/// The pass-through `key=value` lines of `KAFKA_PROPERTIES_FILE`, after what the variables
/// set: neither the bridge's own guarantees nor a variable's setting can be overridden.
fn properties_file(path: &str, props: &mut Vec<(String, String)>) -> Result<(), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| invalid("KAFKA_PROPERTIES_FILE", format!("{path:?}: {e}")))?;
    for (n, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l.trim())) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=').map(|(k, v)| (k.trim(), v.trim())) else {
            return Err(invalid("KAFKA_PROPERTIES_FILE", format!("line {n}: expected key=value")));
        };
        if PROTECTED_PROPERTIES.contains(&key) {
            return Err(invalid(
                "KAFKA_PROPERTIES_FILE",
                format!("line {n}: {key} is set by the bridge for its delivery guarantees and cannot be overridden"),
            ));
        }
        if props.iter().any(|(k, _)| k == key) {
            return Err(invalid(
                "KAFKA_PROPERTIES_FILE",
                format!("line {n}: {key} is already set by a KAFKA_* variable"),
            ));
        }
        props.push((key.to_owned(), value.to_owned()));
    }
    Ok(())
}

/// A secret from `VAR`, or from the file named by `VAR_FILE` (a mounted secret), trimmed.
fn secret(get: Lookup<'_>, var: &'static str) -> Result<Option<String>, ConfigError> {
    match (get(var), get(&format!("{var}_FILE"))) {
        (Some(_), Some(_)) => Err(invalid(var, format!("set {var} or {var}_FILE, not both"))),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(|s| Some(s.trim().to_owned()))
            .map_err(|e| invalid(var, format!("{var}_FILE {path:?}: {e}"))),
        (None, None) => Ok(None),
    }
}

/// The verification key, the accepted audiences and the required issuer.
fn jwt(get: Lookup<'_>, prod: bool) -> Result<(JwtKey, Vec<String>, Option<String>), ConfigError> {
    let key = match (get("JWT_SECRET"), get("JWT_PUBLIC_KEY")) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "JWT_SECRET",
                "set either JWT_SECRET (HS256) or JWT_PUBLIC_KEY (RS256), not both".into(),
            ));
        }
        (Some(secret), None) => {
            if secret.len() < 32 {
                return Err(invalid("JWT_SECRET", "must be at least 32 bytes for HS256".into()));
            }
            JwtKey::Hs256Secret(secret)
        }
        (None, Some(pem)) => {
            // Accept a PEM with literal "\n", as .env files often carry it on one line.
            let pem = pem.replace("\\n", "\n");
            if jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).is_err() {
                return Err(invalid("JWT_PUBLIC_KEY", "not a PEM-encoded RSA public key".into()));
            }
            JwtKey::Rs256PublicPem(pem)
        }
        (None, None) if prod => {
            return Err(ConfigError::RequiredInProduction {
                var: "JWT_SECRET",
                reason: "or JWT_PUBLIC_KEY: clients cannot be authenticated without a key",
            });
        }
        (None, None) => JwtKey::GeneratedDev(random_secret()),
    };
    let audience: Vec<String> = get("JWT_AUDIENCE")
        .map(|v| v.split(',').map(str::trim).filter(|a| !a.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    Ok((key, audience, get("JWT_ISSUER")))
}

fn cors(get: Lookup<'_>, prod: bool) -> Result<CorsOrigins, ConfigError> {
    Ok(match get("CORS_ORIGINS") {
        None if prod => {
            return Err(ConfigError::RequiredInProduction {
                var: "CORS_ORIGINS",
                reason: "list the storefront and dashboard origins",
            });
        }
        None => CorsOrigins::Any,
        Some(v) if v == "*" => {
            if prod {
                return Err(invalid("CORS_ORIGINS", "\"*\" is refused in production; list the origins".into()));
            }
            CorsOrigins::Any
        }
        Some(v) => {
            let list: Vec<String> = v.split(',').map(|o| o.trim().trim_end_matches('/').to_owned()).collect();
            if let Some(bad) = list.iter().find(|o| !(o.starts_with("http://") || o.starts_with("https://"))) {
                return Err(invalid("CORS_ORIGINS", format!("{bad:?} is not an http(s) origin")));
            }
            CorsOrigins::List(list)
        }
    })
}

/// The `tracing` filter and the line format.
fn logging(get: Lookup<'_>, prod: bool) -> Result<(String, LogFormat), ConfigError> {
    let format = match get("LOG_FORMAT").as_deref() {
        None if prod => LogFormat::Json,
        None | Some("pretty") | Some("text") => LogFormat::Pretty,
        Some("json") => LogFormat::Json,
        Some(other) => return Err(invalid("LOG_FORMAT", format!("expected json or pretty, got {other:?}"))),
    };
    let level = get("LOG_LEVEL").unwrap_or_else(|| "info".to_owned());
    if tracing_subscriber::EnvFilter::try_new(&level).is_err() {
        return Err(invalid(
            "LOG_LEVEL",
            format!("{level:?} is not a tracing filter (e.g. info, debug, realtime_bridge=debug)"),
        ));
    }
    Ok((level, format))
}

fn api_keys(get: Lookup<'_>) -> Result<ApiKeys, ConfigError> {
    let keys: Vec<String> = get("API_KEYS")
        .map(|v| v.split(',').map(|k| k.trim().to_owned()).filter(|k| !k.is_empty()).collect())
        .unwrap_or_default();
    if let Some(i) = keys.iter().position(|k| k.len() < 32) {
        // Position only: the key itself is a secret.
        return Err(invalid("API_KEYS", format!("key #{} is shorter than 32 characters", i + 1)));
    }
    Ok(ApiKeys(keys))
}

fn metrics_port(get: Lookup<'_>, port: u16) -> Result<Option<u16>, ConfigError> {
    let metrics_port = match get("METRICS_PORT") {
        None => None,
        Some(_) => Some(parse::<u16>(get, "METRICS_PORT", 0)?),
    };
    if metrics_port.is_some_and(|m| m != 0 && m == port) {
        return Err(invalid(
            "METRICS_PORT",
            "must differ from PORT (unset it to serve /metrics on PORT)".into(),
        ));
    }
    Ok(metrics_port)
}

fn history(get: Lookup<'_>) -> Result<HistoryLimits, ConfigError> {
    Ok(HistoryLimits {
        max_events: parse_range(get, "HISTORY_MAX_EVENTS", 1_000, 1..=1_000_000)?,
        max_age: Duration::from_secs(parse_range(get, "HISTORY_MAX_AGE_SECS", 600, 1..=86_400)?),
        max_room_bytes: parse_range(get, "HISTORY_MAX_ROOM_BYTES", 4 << 20, 1_024..=1 << 30)?,
        max_bytes: parse_range(get, "HISTORY_MAX_BYTES", 256 << 20, 1_024..=64 << 30)?,
        max_states: parse_range(get, "PRODUCT_STATE_MAX", 100_000, 1..=100_000_000)?,
        max_state_bytes: parse_range(get, "PRODUCT_STATE_MAX_BYTES", 64 << 20, 1_024..=64 << 30)?,
    })
}

fn client_limits(get: Lookup<'_>) -> Result<ClientLimits, ConfigError> {
    Ok(ClientLimits {
        max_connections_per_user: parse_range(get, "MAX_CONNECTIONS_PER_USER", 5, 1..=1_000)?,
        max_connections: parse_range(get, "MAX_CONNECTIONS", 20_000, 1..=10_000_000)?,
        handshakes_per_minute_per_ip: parse_range(get, "HANDSHAKES_PER_MINUTE_PER_IP", 120, 1..=1_000_000)?,
        client_events_per_second: parse_range(get, "CLIENT_EVENTS_PER_SECOND", 10, 1..=10_000)?,
        max_payload_bytes: parse_range(get, "MAX_PAYLOAD_BYTES", 16 * 1024, 256..=16 * 1024 * 1024)?,
        socket_buffer: parse_range(get, "SOCKET_BUFFER", 256, 16..=65_536)?,
        trust_forwarded_for: match get("TRUST_FORWARDED_FOR").as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => return Err(invalid("TRUST_FORWARDED_FOR", format!("expected true or false, got {other:?}"))),
        },
        max_pending_sessions: parse_range(get, "MAX_PENDING_SESSIONS", 2_000, 1..=1_000_000)?,
        connect_timeout: Duration::from_secs(parse_range(get, "CONNECT_TIMEOUT_SECS", 10, 1..=60)?),
        replay_per_minute_per_ip: parse_range(get, "REPLAY_PER_MINUTE_PER_IP", 10_000, 1..=100_000_000)?,
        max_product_subscriptions: parse_range(get, "MAX_PRODUCT_SUBSCRIPTIONS", 50, 1..=MAX_PRODUCT_SUBSCRIPTIONS_CAP)?,
    })
}

/// The Redis URL (checked, never echoed: it may carry a password) and the key prefix.
fn redis(get: Lookup<'_>) -> Result<(Option<String>, String), ConfigError> {
    let url = match get("REDIS_URL") {
        // The redis crate is built without TLS: a rediss:// URL would fail at the first
        // connection, after the node started; refuse it here with the reason instead.
        Some(url) if url.starts_with("rediss://") => {
            return Err(invalid(
                "REDIS_URL",
                "rediss:// (TLS) is not supported yet; use redis:// on a trusted network".into(),
            ));
        }
        Some(url) if !url.starts_with("redis://") => {
            return Err(invalid("REDIS_URL", "expected redis://…".into()));
        }
        url => url,
    };
    Ok((url, get("REDIS_PREFIX").unwrap_or_else(|| "realtime-bridge:".to_owned())))
}

/// Reads variables with surrounding blanks trimmed; an empty one counts as unset, as in most
/// container tooling.
fn trimmed(get: impl Fn(&str) -> Option<String>) -> impl Fn(&str) -> Option<String> {
    move |k| get(k).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// `var`'s value among `choices` (any case), `None` when unset; anything else is refused,
/// listing the choices.
fn one_of<T: Copy>(get: Lookup<'_>, var: &'static str, choices: &[(&str, T)]) -> Result<Option<T>, ConfigError> {
    let Some(value) = get(var) else {
        return Ok(None);
    };
    if let Some((_, choice)) = choices.iter().find(|(name, _)| name.eq_ignore_ascii_case(&value)) {
        return Ok(Some(*choice));
    }
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let expected = match names.split_last() {
        Some((last, [])) => (*last).to_owned(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    };
    Err(invalid(var, format!("expected {expected}, got {value:?}")))
}

fn invalid(var: &'static str, reason: String) -> ConfigError {
    ConfigError::Invalid { var, reason }
}

fn parse<T: std::str::FromStr>(get: Lookup<'_>, var: &'static str, default: T) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    match get(var) {
        None => Ok(default),
        Some(v) => v.parse().map_err(|e| invalid(var, format!("{v:?}: {e}"))),
    }
}

fn parse_range<T>(get: Lookup<'_>, var: &'static str, default: T, range: std::ops::RangeInclusive<T>) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
    T::Err: std::fmt::Display,
{
    let v = parse(get, var, default)?;
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(invalid(var, format!("{v} is outside {}..={}", range.start(), range.end())))
    }
}

/// A dead-letter topic the bridge itself consumes would feed bad records back to itself
/// forever, so it must not be one of the subscriptions.
fn check_dlq_topic(dlq: &str, subscriptions: &[String]) -> Result<(), ConfigError> {
    if dlq.len() > 249 || !dlq.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
        return Err(invalid("KAFKA_DLQ_TOPIC", format!("{dlq:?} is not a valid Kafka topic name")));
    }
    for sub in subscriptions {
        let matches = match sub.strip_prefix('^') {
            // librdkafka treats a leading ^ as a regex anchored at the start.
            Some(_) => regex::Regex::new(sub)
                .map_err(|e| invalid("KAFKA_TOPICS", format!("{sub:?} is not a valid regex: {e}")))?
                .is_match(dlq),
            None => sub == dlq,
        };
        if matches {
            return Err(invalid(
                "KAFKA_DLQ_TOPIC",
                format!("{dlq:?} is matched by the subscription {sub:?}; the bridge would consume its own dead letters"),
            ));
        }
    }
    Ok(())
}

fn random_secret() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn redis_url_is_optional_and_checked_without_echoing_it() {
        assert_eq!(load(&[]).unwrap().redis_url, None);
        let c = load(&[("REDIS_URL", "redis://127.0.0.1:6379")]).unwrap();
        assert_eq!(c.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        assert_eq!(c.redis_prefix, "realtime-bridge:");
        let err = load(&[("REDIS_URL", "http://user:hunter2@host")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { var: "REDIS_URL", .. }));
        assert!(!err.to_string().contains("hunter2"));
    }

    fn props(c: &Config) -> Vec<(&str, &str)> {
        c.kafka.client.0.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
    }

    #[test]
    fn kafka_security_comes_from_the_environment_and_secrets_are_never_printed() {
        assert_eq!(props(&load(&[]).unwrap()), [("security.protocol", "PLAINTEXT")]);
        let c = load(&[
            ("KAFKA_SECURITY_PROTOCOL", "sasl_ssl"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("KAFKA_SASL_USERNAME", "bridge"),
            ("KAFKA_SASL_PASSWORD", "hunter2-hunter2"),
        ])
        .unwrap();
        assert_eq!(
            props(&c),
            [
                ("security.protocol", "SASL_SSL"),
                ("sasl.username", "bridge"),
                ("sasl.password", "hunter2-hunter2"),
                ("sasl.mechanism", "SCRAM-SHA-512"),
            ]
        );
        assert!(!format!("{c:?}").contains("hunter2"), "Debug output must not contain the password");
        let dir = std::env::temp_dir().join(format!("rb-config-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("password");
        std::fs::write(&secret, "from-a-file\n").unwrap();
        let c = load(&[
            ("KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT"),
            ("KAFKA_SASL_MECHANISM", "PLAIN"),
            ("KAFKA_SASL_USERNAME", "bridge"),
            ("KAFKA_SASL_PASSWORD_FILE", secret.to_str().unwrap()),
        ])
        .unwrap();
        assert!(props(&c).contains(&("sasl.password", "from-a-file")));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_kafka_security_settings_name_the_variable() {
        let var = |pairs: &[(&str, &str)]| match load(pairs) {
            Err(ConfigError::Invalid { var, .. }) => var,
            other => panic!("{other:?}"),
        };
        assert_eq!(var(&[("KAFKA_SECURITY_PROTOCOL", "TLS")]), "KAFKA_SECURITY_PROTOCOL");
        assert_eq!(var(&[("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")]), "KAFKA_SASL_MECHANISM");
        assert_eq!(var(&[("KAFKA_SASL_MECHANISM", "PLAIN")]), "KAFKA_SASL_MECHANISM");
        assert_eq!(
            var(&[("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"), ("KAFKA_SASL_MECHANISM", "GSSAPI")]),
            "KAFKA_SASL_MECHANISM"
        );
        assert_eq!(
            var(&[
                ("KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
                ("KAFKA_SASL_MECHANISM", "PLAIN"),
                ("KAFKA_SASL_USERNAME", "u")
            ]),
            "KAFKA_SASL_PASSWORD"
        );
        assert_eq!(var(&[("KAFKA_SSL_CA_LOCATION", "/nonexistent/ca.pem")]), "KAFKA_SSL_CA_LOCATION");
    }

    #[test]
    fn the_consumer_group_protocol_takes_full_match_patterns_and_no_session_timeout() {
        assert_eq!(load(&[]).unwrap().kafka.group_protocol, GroupProtocol::Classic);
        let c = load(&[("KAFKA_GROUP_PROTOCOL", "consumer")]).unwrap();
        assert_eq!(c.kafka.group_protocol, GroupProtocol::Consumer, "the default patterns end with .*");
        let var = |pairs: &[(&str, &str)]| match load(pairs) {
            Err(ConfigError::Invalid { var, .. }) => var,
            other => panic!("{other:?}"),
        };
        assert_eq!(var(&[("KAFKA_GROUP_PROTOCOL", "cooperative")]), "KAFKA_GROUP_PROTOCOL");
        assert_eq!(
            var(&[("KAFKA_GROUP_PROTOCOL", "consumer"), ("KAFKA_SESSION_TIMEOUT_MS", "6000")]),
            "KAFKA_SESSION_TIMEOUT_MS"
        );
        assert_eq!(
            var(&[("KAFKA_GROUP_PROTOCOL", "consumer"), ("KAFKA_TOPICS", "^order\\.")]),
            "KAFKA_TOPICS"
        );
        let c = load(&[
            ("KAFKA_GROUP_PROTOCOL", "consumer"),
            ("KAFKA_TOPICS", "^order\\.(created|updated)$,inventory.updated"),
        ])
        .unwrap();
        assert_eq!(c.kafka.topics.len(), 2);
    }

    #[test]
    fn the_properties_file_passes_through_but_cannot_override_the_guarantees() {
        let dir = std::env::temp_dir().join(format!("rb-config-{}", rand::random::<u32>()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("client.properties");
        std::fs::write(&file, "# tuning\nsocket.keepalive.enable = true\n\nclient.rack=eu-west-1a\n").unwrap();
        let path = file.to_str().unwrap().to_owned();
        let c = load(&[("KAFKA_PROPERTIES_FILE", &path)]).unwrap();
        assert!(props(&c).contains(&("socket.keepalive.enable", "true")));
        assert!(props(&c).contains(&("client.rack", "eu-west-1a")));
        for line in [
            "enable.auto.offset.store=true",
            "group.id=other",
            "security.protocol=SSL",
            "no equals sign",
        ] {
            std::fs::write(&file, line).unwrap();
            let err = load(&[("KAFKA_PROPERTIES_FILE", &path)]).unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        var: "KAFKA_PROPERTIES_FILE",
                        ..
                    }
                ),
                "{line}: {err}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn api_keys_are_long_and_never_printed() {
        let key = "k".repeat(32);
        let c = load(&[("API_KEYS", &format!("{key}, {key}2"))]).unwrap();
        assert_eq!(c.api_keys.0.len(), 2);
        assert!(!format!("{c:?}").contains(&key), "Debug output must not contain a key");
        let err = load(&[("API_KEYS", &format!("{key},short"))]).unwrap_err();
        assert_eq!(err.to_string(), "API_KEYS: key #2 is shorter than 32 characters");
        assert_eq!(load(&[]).unwrap().rest_max_body_bytes, 64 * 1024);
        assert_eq!(load(&[("METRICS_PORT", "9100")]).unwrap().metrics_port, Some(9100));
        let err = load(&[("METRICS_PORT", "3009")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { var: "METRICS_PORT", .. }), "{err}");
    }

    #[test]
    fn dead_letter_topic_must_not_be_subscribed() {
        let c = load(&[]).unwrap();
        assert_eq!(c.kafka.dlq_topic, "realtime-bridge.dlq");
        assert_eq!(c.kafka.max_record_bytes, 256 * 1024);
        assert_eq!(c.history.max_events, 1_000);
        assert_eq!(c.history.max_age, Duration::from_secs(600));
        let err = load(&[("KAFKA_DLQ_TOPIC", "order.dead")]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "KAFKA_DLQ_TOPIC",
                    ..
                }
            ),
            "{err}"
        );
        let err = load(&[("KAFKA_TOPICS", "orders,dlq"), ("KAFKA_DLQ_TOPIC", "dlq")]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "KAFKA_DLQ_TOPIC",
                    ..
                }
            ),
            "{err}"
        );
        let err = load(&[("KAFKA_DLQ_TOPIC", "bad topic")]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "KAFKA_DLQ_TOPIC",
                    ..
                }
            ),
            "{err}"
        );
        let err = load(&[("KAFKA_TOPICS", "^order(")]).unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { var: "KAFKA_TOPICS", .. }), "{err}");
        let err = load(&[("HISTORY_MAX_EVENTS", "0")]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "HISTORY_MAX_EVENTS",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn defaults_start_in_development_with_embedded_broker() {
        let c = load(&[]).unwrap();
        assert_eq!(c.app_env, AppEnv::Development);
        assert_eq!(c.bind.port(), 3009);
        assert_eq!(c.kafka.brokers, None);
        assert_eq!(c.kafka.group_id, "realtime-bridge");
        assert_eq!(c.kafka.topics, vec![r"^order\..*", r"^inventory\..*", r"^product\..*"]);
        assert_eq!(c.low_stock_threshold, 5);
        assert!(matches!(c.jwt_key, JwtKey::GeneratedDev(_)));
        assert_eq!(c.cors_origins, CorsOrigins::Any);
        assert_eq!(c.log_format, LogFormat::Pretty);
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = load(&[("PORT", "eighty")]).unwrap_err();
        assert!(e.to_string().starts_with("PORT:"), "{e}");
        let e = load(&[("KAFKA_SESSION_TIMEOUT_MS", "10")]).unwrap_err();
        assert!(e.to_string().starts_with("KAFKA_SESSION_TIMEOUT_MS:"), "{e}");
        let e = load(&[("LOW_STOCK_THRESHOLD", "-1")]).unwrap_err();
        assert!(e.to_string().starts_with("LOW_STOCK_THRESHOLD:"), "{e}");
        let e = load(&[("JWT_SECRET", "short")]).unwrap_err();
        assert!(e.to_string().starts_with("JWT_SECRET:"), "{e}");
        let e = load(&[("JWT_PUBLIC_KEY", "not a pem")]).unwrap_err();
        assert!(e.to_string().starts_with("JWT_PUBLIC_KEY:"), "{e}");
        let e = load(&[("CORS_ORIGINS", "example.com")]).unwrap_err();
        assert!(e.to_string().starts_with("CORS_ORIGINS:"), "{e}");
        let e = load(&[("APP_ENV", "staging")]).unwrap_err();
        assert!(e.to_string().starts_with("APP_ENV:"), "{e}");
    }

    #[test]
    fn production_refuses_missing_key_brokers_and_wildcard_cors() {
        let base = [
            ("APP_ENV", "production"),
            ("KAFKA_BROKERS", "kafka:9092"),
            ("JWT_SECRET", SECRET),
            ("CORS_ORIGINS", "https://shop.example.com"),
        ];
        let ok = load(&base).unwrap();
        assert_eq!(ok.log_format, LogFormat::Json);
        assert_eq!(ok.cors_origins, CorsOrigins::List(vec!["https://shop.example.com".into()]));

        let without = |var: &str| base.iter().copied().filter(|(k, _)| *k != var).collect::<Vec<_>>();
        assert!(matches!(
            load(&without("JWT_SECRET")),
            Err(ConfigError::RequiredInProduction { var: "JWT_SECRET", .. })
        ));
        assert!(matches!(
            load(&without("KAFKA_BROKERS")),
            Err(ConfigError::RequiredInProduction { var: "KAFKA_BROKERS", .. })
        ));
        assert!(matches!(
            load(&without("CORS_ORIGINS")),
            Err(ConfigError::RequiredInProduction { var: "CORS_ORIGINS", .. })
        ));

        let mut star = without("CORS_ORIGINS");
        star.push(("CORS_ORIGINS", "*"));
        assert!(matches!(load(&star), Err(ConfigError::Invalid { var: "CORS_ORIGINS", .. })));
    }

    #[test]
    fn rs256_public_key_with_escaped_newlines_is_accepted() {
        let pem = include_str!("../tests/fixtures/rs256-test-public.pem").trim().replace('\n', "\\n");
        let c = load(&[("JWT_PUBLIC_KEY", &pem)]).unwrap();
        assert!(matches!(c.jwt_key, JwtKey::Rs256PublicPem(p) if p.contains("\nMII")));
        let e = load(&[("JWT_PUBLIC_KEY", &pem), ("JWT_SECRET", SECRET)]).unwrap_err();
        assert!(e.to_string().starts_with("JWT_SECRET:"), "{e}");
    }

    #[test]
    fn secrets_are_not_printed() {
        let c = load(&[("JWT_SECRET", SECRET)]).unwrap();
        assert!(!format!("{c:?}").contains(SECRET));
    }

    #[test]
    fn the_schema_registry_settings() {
        assert!(load(&[]).unwrap().schema_registry.is_none());
        let c = load(&[
            ("SCHEMA_REGISTRY_URL", "https://registry:8443/apis/ccompat/v7"),
            ("SCHEMA_REGISTRY_USERNAME", "bridge"),
            ("SCHEMA_REGISTRY_PASSWORD", "hunter2-registry"),
        ])
        .unwrap();
        let r = c.schema_registry.clone().unwrap();
        assert_eq!(
            (r.username.as_deref(), r.password.as_deref(), r.cache_size),
            (Some("bridge"), Some("hunter2-registry"), 1000)
        );
        assert!(!format!("{c:?}").contains("hunter2-registry"), "the password is never printed");
        let refused = |pairs: &[(&str, &str)], var: &str| {
            let err = load(pairs).unwrap_err();
            assert!(matches!(&err, ConfigError::Invalid { var: v, .. } if *v == var), "{err}");
        };
        refused(&[("SCHEMA_REGISTRY_URL", "registry:8081")], "SCHEMA_REGISTRY_URL");
        refused(
            &[
                ("SCHEMA_REGISTRY_URL", "http://r"),
                ("SCHEMA_REGISTRY_USERNAME", "u"),
                ("SCHEMA_REGISTRY_TOKEN", "t"),
            ],
            "SCHEMA_REGISTRY_TOKEN",
        );
        refused(
            &[("SCHEMA_REGISTRY_URL", "http://r"), ("SCHEMA_REGISTRY_PASSWORD", "p")],
            "SCHEMA_REGISTRY_PASSWORD",
        );
        refused(
            &[("SCHEMA_REGISTRY_URL", "http://r"), ("SCHEMA_REGISTRY_CACHE_SIZE", "0")],
            "SCHEMA_REGISTRY_CACHE_SIZE",
        );
    }

    #[test]
    fn a_mapping_file_adds_its_topics_and_a_bad_one_names_its_line() {
        let dir = std::env::temp_dir().join(format!("mapping-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.toml");
        std::fs::write(&good, "[[source]]\ntopic = \"shop.orders\"\nevent = \"order.created\"\n").unwrap();
        let c = load(&[("EVENT_MAPPING_FILE", good.to_str().unwrap())]).unwrap();
        assert!(c.kafka.topics.contains(&"shop.orders".to_owned()), "{:?}", c.kafka.topics);
        assert_eq!(c.mapping.file_sources(), 1);
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[[source]]\ntopic = \"shop.orders\"\nevent = \"orders\"\n").unwrap();
        let err = load(&[("EVENT_MAPPING_FILE", bad.to_str().unwrap())]).unwrap_err().to_string();
        assert!(
            err.starts_with("EVENT_MAPPING_FILE: ") && err.contains("bad.toml: line 3: event:"),
            "{err}"
        );
        // A source reading the dead-letter topic would feed refused records back.
        std::fs::write(&good, "[[source]]\ntopic = \"realtime-bridge.dlq\"\nevent = \"order.created\"\n").unwrap();
        let err = load(&[("EVENT_MAPPING_FILE", good.to_str().unwrap())]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "KAFKA_DLQ_TOPIC",
                    ..
                }
            ),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_shutdown_delay_must_leave_time_for_the_drain() {
        let c = load(&[("SHUTDOWN_DELAY_SECS", "5")]).unwrap();
        assert_eq!(
            (c.shutdown_delay, c.shutdown_grace),
            (Duration::from_secs(5), Duration::from_secs(20))
        );
        let err = load(&[("SHUTDOWN_DELAY_SECS", "20")]).unwrap_err();
        assert!(
            matches!(
                err,
                ConfigError::Invalid {
                    var: "SHUTDOWN_DELAY_SECS",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_tls_redis_url_is_refused_at_start_with_the_reason() {
        let err = redis(&|k: &str| (k == "REDIS_URL").then(|| "rediss://cache.example.com:6380".to_owned())).unwrap_err();
        assert!(
            err.to_string().contains("REDIS_URL") && err.to_string().contains("not supported"),
            "{err}"
        );
        assert!(redis(&|k: &str| (k == "REDIS_URL").then(|| "redis://127.0.0.1:6379".to_owned())).is_ok());
    }
}
