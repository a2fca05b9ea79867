//! The schema registry client: the schema of an id from the Confluent-compatible API
//! (`GET /schemas/ids/{id}`, references from `GET /subjects/{subject}/versions/{version}`),
//! compiled once and cached (bounded; an id is fetched once however many records name it).
//!
//! A registry that does not answer, answers 5xx, or refuses the bridge's credentials is
//! *unavailable*: [`Registry::resolve`] waits for it, with backoff, and the partition waits
//! with it — such a record is never dead-lettered. Only the registry's own word that an id
//! does not exist (404), or a schema the bridge cannot read, makes a record a dead letter.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::Schemas;
use super::confluent::{Kind, Schema};
use crate::config::RegistryConfig;
use crate::retry::Backoff;

/// The largest registry answer read (a schema's text).
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// The most references one schema may pull in, all levels together.
const MAX_REFERENCES: usize = 64;
/// How long "no such schema" is believed before the registry is asked again.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// One registry request, at most.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The registry's answer for an id: a schema, or why there is none.
pub type Answer = Arc<Result<Schema, String>>;

/// Why a fetch gave no answer: the registry is unavailable; retry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

struct Cached {
    answer: Answer,
    at: Instant,
}

#[derive(Default)]
struct Cache {
    entries: HashMap<u32, Cached>,
    /// Ids in insertion order: the oldest is evicted first.
    order: VecDeque<u32>,
}

/// The registry client and its cache.
pub struct Registry {
    http: reqwest::Client,
    base: reqwest::Url,
    auth: Option<(String, Option<String>)>,
    bearer: Option<String>,
    capacity: usize,
    cache: Mutex<Cache>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("url", &self.base.as_str()).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaDoc {
    schema: String,
    #[serde(default)]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Reference>,
}

#[derive(Deserialize)]
struct Reference {
    name: String,
    subject: String,
    version: i64,
}

/// A fetch's outcome when the registry answered: a schema document, or "not there".
enum Fetched {
    Doc(SchemaDoc),
    NotFound,
}

impl Registry {
    /// A client for `config` (the CA file read now: a missing one fails the start).
    pub fn new(config: &RegistryConfig) -> anyhow::Result<Registry> {
        let mut http = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("realtime-bridge/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let pem = std::fs::read(path).map_err(|e| anyhow::anyhow!("SCHEMA_REGISTRY_CA_FILE {path:?}: {e}"))?;
            let certs =
                reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| anyhow::anyhow!("SCHEMA_REGISTRY_CA_FILE {path:?}: {e}"))?;
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        let mut base = reqwest::Url::parse(&config.url)?;
        // A base path ends with / so that joining keeps it (`…/apis/ccompat/v7/`).
        if !base.path().ends_with('/') {
            base.set_path(&format!("{}/", base.path()));
        }
        Ok(Registry {
            http: http.build()?,
            base,
            auth: config.username.clone().map(|u| (u, config.password.clone())),
            bearer: config.token.clone(),
            capacity: config.cache_size,
            cache: Mutex::default(),
        })
    }

    /// The schemas `ids` name, each from the cache or fetched once; while the registry is
    /// unavailable it is asked again with backoff and `waiting(reason, for how long)` is
    /// called. `None` when `cancel` fires first.
    pub async fn resolve(
        &self,
        ids: impl IntoIterator<Item = u32>,
        cancel: &CancellationToken,
        mut waiting: impl FnMut(&str, Duration),
    ) -> Option<Schemas> {
        let mut schemas = Schemas::default();
        for id in ids {
            if schemas.0.contains_key(&id) {
                continue;
            }
            let answer = match self.cached(id) {
                Some(answer) => answer,
                None => self.fetch_until_answered(id, cancel, &mut waiting).await?,
            };
            schemas.0.insert(id, answer);
        }
        Some(schemas)
    }

    async fn fetch_until_answered(&self, id: u32, cancel: &CancellationToken, waiting: &mut impl FnMut(&str, Duration)) -> Option<Answer> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        let started = Instant::now();
        loop {
            match self.fetch(id).await {
                Ok(answer) => {
                    let answer = Arc::new(answer);
                    self.remember(id, answer.clone());
                    return Some(answer);
                }
                Err(Unavailable(reason)) => {
                    crate::metrics::registry_fetch("unavailable");
                    tracing::warn!(schema_id = id, %reason, retry_in = ?backoff.upcoming(), "schema registry unavailable; the partition waits");
                    waiting(&reason, started.elapsed());
                    if !backoff.pause(cancel).await {
                        return None;
                    }
                }
            }
        }
    }

    fn cached(&self, id: u32) -> Option<Answer> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let entry = cache.entries.get(&id)?;
        (entry.answer.is_ok() || entry.at.elapsed() < NEGATIVE_TTL).then(|| entry.answer.clone())
    }

    fn remember(&self, id: u32, answer: Answer) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache
            .entries
            .insert(
                id,
                Cached {
                    answer,
                    at: Instant::now(),
                },
            )
            .is_none()
        {
            cache.order.push_back(id);
        }
        while cache.entries.len() > self.capacity {
            let Some(oldest) = cache.order.pop_front() else { break };
            cache.entries.remove(&oldest);
        }
        crate::metrics::schema_cache_size(cache.entries.len());
    }

    /// The schema of `id`, compiled with its references: `Ok(Err(why))` when the registry
    /// says there is none or it cannot be read; `Err` when the registry is unavailable.
    pub async fn fetch(&self, id: u32) -> Result<Result<Schema, String>, Unavailable> {
        let doc = match self.get(&["schemas", "ids", &id.to_string()]).await? {
            Fetched::Doc(doc) => doc,
            Fetched::NotFound => {
                crate::metrics::registry_fetch("not_found");
                return Ok(Err("not found in the registry".to_owned()));
            }
        };
        let references = match self.references(&doc.references).await? {
            Ok(references) => references,
            Err(reason) => return Ok(Err(reason)),
        };
        let compiled = Kind::of(doc.schema_type.as_deref()).and_then(|kind| Schema::compile(id, kind, &doc.schema, &references));
        crate::metrics::registry_fetch(if compiled.is_ok() { "ok" } else { "invalid" });
        Ok(compiled)
    }

    /// Every schema `top` references, at any depth, dependencies first: `(name, text)`.
    async fn references(&self, top: &[Reference]) -> Result<Result<Vec<(String, String)>, String>, Unavailable> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut seen = HashSet::new();
        // Depth first, iteratively: (reference, its own references already expanded).
        let mut stack: Vec<(String, String, i64, Option<String>)> = top
            .iter()
            .rev()
            .map(|r| (r.name.clone(), r.subject.clone(), r.version, None))
            .collect();
        while let Some((name, subject, version, text)) = stack.pop() {
            if let Some(text) = text {
                out.push((name, text));
                continue;
            }
            if !seen.insert(name.clone()) {
                continue;
            }
            if seen.len() > MAX_REFERENCES {
                return Ok(Err(format!("more than {MAX_REFERENCES} references")));
            }
            let doc = match self.get(&["subjects", &subject, "versions", &version.to_string()]).await? {
                Fetched::Doc(doc) => doc,
                Fetched::NotFound => return Ok(Err(format!("reference {name} (subject {subject} version {version}) not found"))),
            };
            stack.push((name, subject, version, Some(doc.schema)));
            stack.extend(doc.references.into_iter().rev().map(|r| (r.name, r.subject, r.version, None)));
        }
        Ok(Ok(out))
    }

    async fn get(&self, segments: &[&str]) -> Result<Fetched, Unavailable> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|_| Unavailable("SCHEMA_REGISTRY_URL cannot be a base".into()))?
            .pop_if_empty()
            .extend(segments);
        let mut request = self
            .http
            .get(url.clone())
            .header("Accept", "application/vnd.schemaregistry.v1+json, application/json");
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, password.as_ref());
        } else if let Some(token) = &self.bearer {
            request = request.bearer_auth(token);
        }
        let unavailable = |what: String| Unavailable(format!("GET {}: {what}", url.path()));
        let mut response = request.send().await.map_err(|e| unavailable(error_chain(&e)))?;
        let status = response.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Ok(Fetched::NotFound);
        }
        if !status.is_success() {
            // 5xx, 429, and 401/403 (the bridge's credentials: an operator fixes them) alike.
            return Err(unavailable(format!("HTTP {status}")));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| unavailable(error_chain(&e)))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(unavailable(format!("answer over {MAX_RESPONSE_BYTES} bytes")));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body)
            .map(Fetched::Doc)
            .map_err(|e| unavailable(format!("not a schema document: {e}")))
    }
}

/// An error with its causes ("error sending request: … connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
