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

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A registry answering from a script: each request gets the next (status, body), the
    /// last one repeating; every request line and its Authorization header are kept.
    async fn scripted(answers: Vec<(u16, String)>) -> (String, Arc<Mutex<Vec<String>>>, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/apis/ccompat/v7", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (seen2, count2) = (seen.clone(), count.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                let mut buf = vec![0u8; 8192];
                let n = conn.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let auth = request
                    .lines()
                    .find(|l| l.to_ascii_lowercase().starts_with("authorization:"))
                    .unwrap_or("")
                    .to_owned();
                seen2
                    .lock()
                    .unwrap()
                    .push(format!("{} | {auth}", request.lines().next().unwrap_or("")));
                let i = count2.fetch_add(1, Ordering::SeqCst).min(answers.len() - 1);
                let (status, body) = &answers[i];
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = conn.write_all(reply.as_bytes()).await;
            }
        });
        (url, seen, count)
    }

    fn registry(url: &str) -> Registry {
        Registry::new(&RegistryConfig {
            url: url.to_owned(),
            username: Some("bridge".into()),
            password: Some("s3cret".into()),
            token: None,
            ca_file: None,
            cache_size: 2,
        })
        .unwrap()
    }

    const AVRO: &str = r#"{"schema": "{\"type\": \"string\"}"}"#;

    #[tokio::test]
    async fn an_unavailable_registry_is_waited_for_then_each_id_fetched_once() {
        let (url, seen, count) = scripted(vec![(503, "{}".into()), (500, "{}".into()), (200, AVRO.into())]).await;
        let r = registry(&url);
        let mut waits = Vec::new();
        let schemas = r
            .resolve([7, 7, 7], &CancellationToken::new(), |reason, _| waits.push(reason.to_owned()))
            .await
            .unwrap();
        assert!(matches!(schemas.0[&7].as_ref(), Ok(Schema::Avro { .. })));
        assert_eq!(waits.len(), 2, "{waits:?}");
        assert!(
            waits[0].contains("/apis/ccompat/v7/schemas/ids/7") && waits[0].contains("503"),
            "{waits:?}"
        );
        // Cached: no further request, however many records name it.
        r.resolve([7], &CancellationToken::new(), |_, _| panic!("no wait")).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 3);
        let seen = seen.lock().unwrap();
        assert!(seen[2].starts_with("GET /apis/ccompat/v7/schemas/ids/7 HTTP/1.1 | "), "{seen:?}");
        // Basic bridge:s3cret.
        assert!(seen[2].ends_with("Basic YnJpZGdlOnMzY3JldA=="), "{seen:?}");
    }

    #[tokio::test]
    async fn not_found_and_unreadable_schemas_are_answers_not_waits() {
        let (url, _, count) = scripted(vec![(404, r#"{"error_code": 40403}"#.into())]).await;
        let r = registry(&url);
        let schemas = r
            .resolve([9], &CancellationToken::new(), |_, _| panic!("a 404 is an answer"))
            .await
            .unwrap();
        assert_eq!(schemas.0[&9].as_ref().as_ref().unwrap_err(), "not found in the registry");
        // Remembered for a while: asked once.
        r.resolve([9], &CancellationToken::new(), |_, _| {}).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 1);
        let (url, _, _) = scripted(vec![(200, r#"{"schema": "nope", "schemaType": "AVRO"}"#.into())]).await;
        let schemas = registry(&url).resolve([3], &CancellationToken::new(), |_, _| {}).await.unwrap();
        assert!(schemas.0[&3].as_ref().as_ref().unwrap_err().starts_with("not a valid Avro schema"));
        let (url, _, _) = scripted(vec![(200, r#"{"schema": "{}", "schemaType": "XML"}"#.into())]).await;
        let schemas = registry(&url).resolve([4], &CancellationToken::new(), |_, _| {}).await.unwrap();
        assert!(schemas.0[&4].as_ref().as_ref().unwrap_err().contains("XML"));
    }

    #[tokio::test]
    async fn the_cache_is_bounded_and_a_cancelled_wait_gives_nothing() {
        let (url, _, count) = scripted(vec![(200, AVRO.into())]).await;
        let r = registry(&url);
        r.resolve([1, 2, 3], &CancellationToken::new(), |_, _| {}).await.unwrap();
        assert_eq!(r.cache.lock().unwrap().entries.len(), 2, "capacity 2: the oldest evicted");
        r.resolve([1], &CancellationToken::new(), |_, _| {}).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 4, "1 was evicted, so fetched again");
        let (url, _, _) = scripted(vec![(503, "{}".into())]).await;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let r = registry(&url);
        assert!(r.resolve([5], &cancel, |_, _| stop.cancel()).await.is_none());
    }

    #[tokio::test]
    async fn a_bearer_token_is_sent_as_one() {
        let (url, seen, _) = scripted(vec![(200, AVRO.into())]).await;
        let r = Registry::new(&RegistryConfig {
            url,
            username: None,
            password: None,
            token: Some("tok-123".into()),
            ca_file: None,
            cache_size: 10,
        })
        .unwrap();
        r.resolve([1], &CancellationToken::new(), |_, _| {}).await.unwrap();
        assert!(seen.lock().unwrap()[0].ends_with("Bearer tok-123"));
        // A CA file that is not there fails the start, naming the variable.
        let err = Registry::new(&RegistryConfig {
            url: "https://127.0.0.1:1".into(),
            username: None,
            password: None,
            token: None,
            ca_file: Some("/nonexistent/ca.pem".into()),
            cache_size: 10,
        })
        .unwrap_err();
        assert!(
            err.to_string().starts_with("SCHEMA_REGISTRY_CA_FILE \"/nonexistent/ca.pem\""),
            "{err}"
        );
    }

    #[tokio::test]
    async fn references_are_fetched_dependencies_first() {
        let customer =
            r#"{\"type\":\"record\",\"name\":\"Customer\",\"namespace\":\"shop\",\"fields\":[{\"name\":\"id\",\"type\":\"long\"}]}"#;
        let order =
            r#"{\"type\":\"record\",\"name\":\"Order\",\"namespace\":\"shop\",\"fields\":[{\"name\":\"c\",\"type\":\"shop.Customer\"}]}"#;
        let (url, seen, _) = scripted(vec![
            (
                200,
                format!(
                    r#"{{"schema": "{order}", "references": [{{"name": "shop.Customer", "subject": "shop/customer", "version": 2}}]}}"#
                ),
            ),
            (200, format!(r#"{{"schema": "{customer}"}}"#)),
        ])
        .await;
        let schemas = registry(&url).resolve([11], &CancellationToken::new(), |_, _| {}).await.unwrap();
        assert!(schemas.0[&11].is_ok(), "{:?}", schemas.0[&11]);
        let seen = seen.lock().unwrap();
        assert!(
            seen[1].starts_with("GET /apis/ccompat/v7/subjects/shop%2Fcustomer/versions/2 "),
            "{seen:?}"
        );
    }
}
