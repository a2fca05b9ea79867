//! The replay history in Redis, shared by every node: a stream per room, bounded by count,
//! bytes and age (the stream's ids are times), next to the room's epoch and
//! sequence counter. Each operation is one Lua script, so appends are atomic and numbered
//! without gaps even with several nodes appending to the same room.
//!
//! Keys (the `{room}` hash tag keeps a room's keys in one cluster slot):
//! `<prefix>{<room>}:s` the stream (fields `n` seq, `e` event, `v` envelope JSON),
//! `<prefix>{<room>}:m` a hash holding the epoch (`e`), the last seq (`n`) and the bytes
//! the stream holds (`b`: event names plus envelopes, kept exact by trimming the oldest
//! entries one by one in the append script, by count, bytes and age). Both expire
//! after [`MemoryHistory::IDLE_ROOM_TTL`] (or the age bound) without events; a room
//! that comes back gets a new epoch.
//!
//! Epoch and counter share one key on purpose: under `maxmemory` eviction Redis may drop
//! any key alone, and a counter lost while its epoch survived would restart the numbering
//! inside the same epoch, so an old position would be answered with a wrong replay. Lost
//! together, they make a new epoch, which clients are told about. The stream may still be
//! evicted alone (a gap: `history-trimmed`), and a replay is checked entry by entry: the
//! entries must be exactly `after + 1 ..= head`, otherwise the history is inconsistent and
//! reported as `epoch-changed` rather than replayed in part.

use std::sync::Arc;
use std::time::Duration;

use ::redis::Script;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::events::{Envelope, Position};
use crate::history::{Cursor, Entry, History, HistoryError, HistoryLimits, LostReason, MemoryHistory, Replay};

const APPEND: &str = r"
local epoch = redis.call('HGET', KEYS[2], 'e')
if not epoch then
  epoch = ARGV[6]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 'n', 0, 'b', 0)
end
local seq = redis.call('HINCRBY', KEYS[2], 'n', 1)
redis.call('XADD', KEYS[1], '*', 'n', seq, 'e', ARGV[1], 'v', ARGV[2])
local bytes = redis.call('HINCRBY', KEYS[2], 'b', #ARGV[1] + #ARGV[2])
local len = redis.call('XLEN', KEYS[1])
local t = redis.call('TIME')
local min_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[4])
-- Oldest first, one by one, so the byte count stays exact: count, bytes, age.
while len > 0 do
  local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  local first_ms = tonumber(string.match(first[1], '^(%d+)'))
  if len <= tonumber(ARGV[3]) and bytes <= tonumber(ARGV[7]) and first_ms >= min_ms then break end
  redis.call('XDEL', KEYS[1], first[1])
  bytes = redis.call('HINCRBY', KEYS[2], 'b', -(#first[2][4] + #first[2][6]))
  len = len - 1
end
for i = 1, 2 do redis.call('EXPIRE', KEYS[i], ARGV[5]) end
return {epoch, seq}
";

const HEAD: &str = r"
local m = redis.call('HMGET', KEYS[2], 'e', 'n')
local epoch, head = m[1], tonumber(m[2] or '0')
if not epoch then
  epoch, head = ARGV[1], 0
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'e', epoch, 'n', 0, 'b', 0)
end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return {epoch, head}
";

const SINCE: &str = r"
local m = redis.call('HMGET', KEYS[2], 'e', 'n')
if not m[1] or m[1] ~= ARGV[1] then return {'lost', 'epoch-changed'} end
local head = tonumber(m[2] or '0')
local after = tonumber(ARGV[2])
if after > head then return {'lost', 'unknown-position'} end
if after == head then return {'ok'} end
local want = head - after
-- More than the stream can hold, or holds now: known without reading a single entry.
if want > tonumber(ARGV[4]) then return {'lost', 'history-trimmed'} end
if redis.call('XLEN', KEYS[1]) < want then return {'lost', 'history-trimmed'} end
local entries = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', want)
if #entries < want then return {'lost', 'history-trimmed'} end
-- Past the age bound (appends drop such entries; a quiet room may still hold them).
local t = redis.call('TIME')
local min_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[3])
if tonumber(string.match(entries[#entries][1], '^(%d+)')) < min_ms then return {'lost', 'history-trimmed'} end
local out = {'ok'}
local expected = after + 1
for i = #entries, 1, -1 do
  local f = entries[i][2]
  if tonumber(f[2]) ~= expected then return {'lost', 'epoch-changed'} end
  expected = expected + 1
  table.insert(out, f[2])
  table.insert(out, f[4])
  table.insert(out, f[6])
end
return out
";

/// The history in Redis (used when `REDIS_URL` is set).
#[derive(Clone)]
pub struct RedisHistory {
    conn: ConnectionManager,
    limits: HistoryLimits,
    prefix: Arc<str>,
    append: Arc<Script>,
    head: Arc<Script>,
    since: Arc<Script>,
}

fn unavailable(e: ::redis::RedisError) -> HistoryError {
    HistoryError(e.to_string())
}

impl RedisHistory {
    /// A store on `url`, keys prefixed with `prefix` (one deployment per prefix). Connects
    /// lazily and reconnects by itself: Redis being down at start or later makes operations
    /// fail (within 2 s) until it is back, never the process.
    pub fn connect(url: &str, prefix: &str, limits: HistoryLimits) -> Result<Self, HistoryError> {
        let client = ::redis::Client::open(url).map_err(unavailable)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_max_delay(Duration::from_secs(2));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(unavailable)?;
        Ok(RedisHistory {
            conn,
            limits,
            prefix: prefix.into(),
            append: Arc::new(Script::new(APPEND)),
            head: Arc::new(Script::new(HEAD)),
            since: Arc::new(Script::new(SINCE)),
        })
    }

    /// Whether Redis answers a PING within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let mut conn = self.conn.clone();
        let cmd = ::redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
    }

    /// The room's stream and its epoch-and-counter hash.
    pub fn keys(&self, room: &str) -> [String; 2] {
        let base = format!("{}{{{room}}}", self.prefix);
        [format!("{base}:s"), format!("{base}:m")]
    }

    fn idle_ttl_secs(&self) -> u64 {
        MemoryHistory::IDLE_ROOM_TTL.max(self.limits.max_age).as_secs()
    }
}

fn fresh_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[async_trait::async_trait]
impl History for RedisHistory {
    async fn append(&self, room: &str, event: &str, mut envelope: Envelope) -> Result<Arc<Entry>, HistoryError> {
        let json = serde_json::to_string(&envelope).map_err(|e| HistoryError(e.to_string()))?;
        let [s, m] = self.keys(room);
        let (epoch, seq): (String, u64) = self
            .append
            .key(s)
            .key(m)
            .arg(event)
            .arg(json)
            .arg(self.limits.max_events)
            .arg(self.limits.max_age.as_millis() as u64)
            .arg(self.idle_ttl_secs())
            .arg(fresh_epoch())
            .arg(self.limits.max_room_bytes)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        envelope.position = Some(Position {
            room: room.to_owned(),
            epoch,
            seq,
        });
        Ok(Arc::new(Entry {
            event: event.to_owned(),
            envelope,
        }))
    }

    async fn head(&self, room: &str) -> Result<Cursor, HistoryError> {
        let [s, m] = self.keys(room);
        let (epoch, seq): (String, u64) = self
            .head
            .key(s)
            .key(m)
            .arg(fresh_epoch())
            .arg(self.idle_ttl_secs())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(Cursor { epoch, seq })
    }

    async fn since(&self, room: &str, cursor: &Cursor) -> Result<Replay, HistoryError> {
        let [s, m] = self.keys(room);
        let reply: Vec<String> = self
            .since
            .key(s)
            .key(m)
            .arg(&cursor.epoch)
            .arg(cursor.seq)
            .arg(self.limits.max_age.as_millis() as u64)
            .arg(self.limits.max_events)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        match reply.first().map(String::as_str) {
            Some("ok") => {
                let mut entries = Vec::with_capacity(reply.len() / 3);
                for chunk in reply[1..].chunks_exact(3) {
                    let seq: u64 = chunk[0].parse().map_err(|_| HistoryError("bad seq in history stream".into()))?;
                    let mut envelope: Envelope = serde_json::from_str(&chunk[2]).map_err(|e| HistoryError(e.to_string()))?;
                    envelope.position = Some(Position {
                        room: room.to_owned(),
                        epoch: cursor.epoch.clone(),
                        seq,
                    });
                    entries.push(Arc::new(Entry {
                        event: chunk[1].clone(),
                        envelope,
                    }));
                }
                Ok(Replay::Complete(entries))
            }
            Some("lost") => Ok(Replay::Lost(match reply.get(1).map(String::as_str) {
                Some("history-trimmed") => LostReason::Trimmed,
                Some("unknown-position") => LostReason::UnknownPosition,
                _ => LostReason::EpochChanged,
            })),
            _ => Err(HistoryError(format!("unexpected history reply: {reply:?}"))),
        }
    }
}
