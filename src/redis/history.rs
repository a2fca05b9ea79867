//! The replay history in Redis, shared by every node: a stream per room, bounded by count,
//! bytes and age (the stream's ids are times), next to the room's epoch and
//! sequence counter. Each operation is one Lua script, so appends are atomic and numbered
//! without gaps even with several nodes appending to the same room. A batch of appends to
//! any number of rooms is one script call: one round trip per batch. (A script that spans
//! rooms needs one Redis primary: Redis Cluster, which splits keys over primaries, is not
//! supported.)
//!
//! Keys:
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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ::redis::Script;
use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::events::{Envelope, Position};
use crate::history::{Cursor, Entry, History, HistoryError, HistoryLimits, LostReason, MemoryHistory, NewEntry, Replay, Snapshot, State};

/// Appends a batch: KEYS are the latest-state hash, its LRU sorted set and its byte
/// counter, then each room's stream and hash, in pairs; ARGV the bounds (max entries, max
/// age ms, key TTL s, TTL refresh interval ms, max bytes, max states, max state bytes), then
/// per room its name, a fresh epoch (used if it has none), the state patch to merge (a JSON
/// object, or empty), its entry count and that many (event, envelope) pairs. Returns the
/// number of states evicted, then each room's epoch and first new seq. The state is merged
/// in the same script that numbers the room's entries: a snapshot (head + state, one
/// script too) never sees one without the other. One call per batch, whatever the number of
/// rooms; per room, on the common path, four commands (HMGET, XADD per entry, XLEN, HSET).
///
/// The hash also keeps `o`, the time (ms) of the stream's oldest entry, so the age bound
/// needs no read unless it is due, and `t`, when the keys' TTL was last refreshed: it is
/// refreshed (to 1.25 × the idle TTL) once a quarter of it has passed, so keys live at
/// least the idle TTL after the last append without an EXPIRE per append.
const APPEND: &str = r"
local max_events, max_age, ttl, refresh_ms, max_bytes = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5])
local max_states, max_state_bytes = tonumber(ARGV[6]), tonumber(ARGV[7])
local sk, lk, bk = KEYS[1], KEYS[2], KEYS[3]
local evicted = 0
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local min_ms = now_ms - max_age
local out = {0}
local a = 8
for k = 4, #KEYS, 2 do
  local s, m = KEYS[k], KEYS[k + 1]
  local room, patch = ARGV[a], ARGV[a + 2]
  a = a + 1
  if patch ~= '' then
    local old = redis.call('HGET', sk, room)
    local merged = old and cjson.decode(old) or {}
    for key, value in pairs(cjson.decode(patch)) do merged[key] = value end
    local json = cjson.encode(merged)
    redis.call('HSET', sk, room, json)
    redis.call('ZADD', lk, now_ms, room)
    local state_bytes = redis.call('INCRBY', bk, #json + #room - (old and (#old + #room) or 0))
    while redis.call('ZCARD', lk) > max_states or state_bytes > max_state_bytes do
      local victim = redis.call('ZPOPMIN', lk)
      if #victim == 0 then break end
      local gone = redis.call('HGET', sk, victim[1])
      if gone then
        state_bytes = redis.call('INCRBY', bk, -(#gone + #victim[1]))
        redis.call('HDEL', sk, victim[1])
      end
      evicted = evicted + 1
    end
  end
  local meta = redis.call('HMGET', m, 'e', 'n', 'b', 'o', 't')
  local epoch, seq, bytes = meta[1], tonumber(meta[2]), tonumber(meta[3])
  local oldest, refreshed = tonumber(meta[4]) or 0, tonumber(meta[5]) or 0
  if not epoch or not seq or not bytes then
    epoch, seq, bytes, oldest, refreshed = ARGV[a], 0, 0, now_ms, 0
    redis.call('DEL', s)
  end
  local n = tonumber(ARGV[a + 2])
  a = a + 3
  local first = seq + 1
  for i = 0, n - 1 do
    local ev, v = ARGV[a], ARGV[a + 1]
    redis.call('XADD', s, '*', 'n', first + i, 'e', ev, 'v', v)
    bytes = bytes + #ev + #v
    a = a + 2
  end
  seq = seq + n
  local len = redis.call('XLEN', s)
  -- Oldest first, so the byte count stays exact: by count, bytes, age; then one XTRIM.
  if len > max_events or bytes > max_bytes or oldest < min_ms then
    local drop, from, kept = 0, '-', nil
    while not kept do
      local chunk = redis.call('XRANGE', s, from, '+', 'COUNT', math.max(len - drop - max_events, 0) + 16)
      if #chunk == 0 then break end
      for _, e in ipairs(chunk) do
        local ms = tonumber(string.match(e[1], '^(%d+)'))
        if len - drop <= max_events and bytes <= max_bytes and ms >= min_ms then kept = ms break end
        bytes = bytes - #e[2][4] - #e[2][6]
        drop = drop + 1
      end
      from = '(' .. chunk[#chunk][1]
    end
    if drop > 0 then redis.call('XTRIM', s, 'MAXLEN', len - drop) end
    oldest = kept or now_ms
  end
  redis.call('HSET', m, 'e', epoch, 'n', seq, 'b', bytes, 'o', oldest, 't', refreshed)
  if now_ms - refreshed >= refresh_ms then
    redis.call('EXPIRE', s, ttl)
    redis.call('EXPIRE', m, ttl)
    redis.call('HSET', m, 't', now_ms)
  end
  table.insert(out, epoch)
  table.insert(out, first)
end
out[1] = evicted
return out
";

/// The room's head, giving it an epoch if it has none (KEYS: stream, hash; ARGV: fresh
/// epoch, TTL): [`History::open`].
const OPEN: &str = r"
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

/// The room's head, or `''` when it has none: creates nothing (KEYS: hash; ARGV: TTL). A
/// read of a room that exists keeps it (the TTL is refreshed), as appends do.
const HEAD: &str = r"
local m = redis.call('HMGET', KEYS[1], 'e', 'n')
if not m[1] then return {'', 0} end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {m[1], tonumber(m[2] or '0')}
";

/// HEAD plus the room's latest state (KEYS: hash, state hash; ARGV: TTL, room name), in one
/// script: the state matches the head exactly. Creates nothing.
const SNAPSHOT: &str = r"
local m = redis.call('HMGET', KEYS[1], 'e', 'n')
local state = redis.call('HGET', KEYS[2], ARGV[2]) or ''
if not m[1] then return {'', 0, state} end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return {m[1], tonumber(m[2] or '0'), state}
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
    open: Arc<Script>,
    head: Arc<Script>,
    since: Arc<Script>,
    snapshot: Arc<Script>,
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
            open: Arc::new(Script::new(OPEN)),
            head: Arc::new(Script::new(HEAD)),
            since: Arc::new(Script::new(SINCE)),
            snapshot: Arc::new(Script::new(SNAPSHOT)),
        })
    }

    /// Whether Redis answers a PING within `timeout`.
    pub async fn ping(&self, timeout: Duration) -> bool {
        let mut conn = self.conn.clone();
        let cmd = ::redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(timeout, ping).await, Ok(Ok(_)))
    }

    /// The latest-state hash (room → state JSON), its LRU order and its byte count.
    fn state_keys(&self) -> [String; 3] {
        let base = format!("{}states", self.prefix);
        [base.clone(), format!("{base}:lru"), format!("{base}:bytes")]
    }

    /// The room's stream and its epoch-and-counter hash.
    pub fn keys(&self, room: &str) -> [String; 2] {
        let base = format!("{}{{{room}}}", self.prefix);
        [format!("{base}:s"), format!("{base}:m")]
    }

    /// How long a room's keys must live after its last use (its epoch and counter then
    /// answer "complete" to a client that saw everything).
    fn idle_ttl_secs(&self) -> u64 {
        MemoryHistory::IDLE_ROOM_TTL.max(self.limits.max_age).as_secs()
    }

    /// The TTL set on a room's keys: 1.25 × the idle TTL, refreshed by appends once a quarter
    /// of it has passed, so it never runs out sooner than the idle TTL after the last use.
    fn key_ttl_secs(&self) -> u64 {
        let idle = self.idle_ttl_secs();
        idle + idle / 4 + 1
    }
}

/// A head read from the store: `''` is a room with no history.
fn born_or_not(epoch: String, seq: u64) -> Cursor {
    if epoch.is_empty() {
        Cursor::unborn()
    } else {
        Cursor { epoch, seq }
    }
}

fn fresh_epoch() -> String {
    format!("{:016x}", rand::random::<u64>())
}

#[async_trait::async_trait]
impl History for RedisHistory {
    async fn append_all(&self, entries: Vec<NewEntry>) -> Result<Vec<Arc<Entry>>, HistoryError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        // Rooms in order of first appearance, each with its entries in order.
        let mut rooms: Vec<(&str, Vec<usize>)> = Vec::new();
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            let slot = *index.entry(e.room.as_str()).or_insert_with(|| {
                rooms.push((e.room.as_str(), Vec::new()));
                rooms.len() - 1
            });
            rooms[slot].1.push(i);
        }
        let mut call = self.append.prepare_invoke();
        call.arg(self.limits.max_events)
            .arg(self.limits.max_age.as_millis() as u64)
            .arg(self.key_ttl_secs())
            .arg(self.idle_ttl_secs() * 1000 / 4)
            .arg(self.limits.max_room_bytes)
            .arg(self.limits.max_states)
            .arg(self.limits.max_state_bytes);
        for key in self.state_keys() {
            call.key(key);
        }
        for (room, members) in &rooms {
            let [s, m] = self.keys(room);
            // The room's entries' state fields, later over earlier: merged once by the script.
            let mut patch: Option<State> = None;
            for &i in members {
                if let Some(state) = &entries[i].state {
                    patch.get_or_insert_with(State::new).extend(state.clone());
                }
            }
            let patch = match patch {
                Some(p) => serde_json::to_string(&p).map_err(|e| HistoryError(e.to_string()))?,
                None => String::new(),
            };
            call.key(s).key(m).arg(*room).arg(fresh_epoch()).arg(patch).arg(members.len());
            for &i in members {
                let json = serde_json::to_string(&entries[i].envelope).map_err(|e| HistoryError(e.to_string()))?;
                call.arg(entries[i].event.as_str()).arg(json);
            }
        }
        let reply: Vec<String> = call.invoke_async(&mut self.conn.clone()).await.map_err(unavailable)?;
        let bad = || HistoryError(format!("unexpected history append reply: {reply:?}"));
        let (evicted, pairs) = reply.split_first().ok_or_else(bad)?;
        crate::metrics::states_evicted(evicted.parse().map_err(|_| bad())?);
        let reply: Vec<(String, u64)> = pairs
            .chunks_exact(2)
            .map(|p| Ok((p[0].clone(), p[1].parse().map_err(|_| bad())?)))
            .collect::<Result<_, HistoryError>>()?;
        if reply.len() != rooms.len() {
            return Err(HistoryError(format!(
                "history append answered {} rooms of {}",
                reply.len(),
                rooms.len()
            )));
        }
        let mut positions: Vec<Option<Position>> = vec![None; entries.len()];
        for ((room, members), (epoch, first)) in rooms.iter().zip(reply) {
            for (k, &i) in members.iter().enumerate() {
                positions[i] = Some(Position {
                    room: (*room).to_owned(),
                    epoch: epoch.clone(),
                    seq: first + k as u64,
                });
            }
        }
        Ok(entries
            .into_iter()
            .zip(positions)
            .map(|(NewEntry { event, mut envelope, .. }, position)| {
                envelope.position = position;
                Arc::new(Entry { event, envelope })
            })
            .collect())
    }

    async fn snapshot(&self, room: &str) -> Result<Snapshot, HistoryError> {
        let [_, m] = self.keys(room);
        let [states, _, _] = self.state_keys();
        let (epoch, seq, state): (String, u64, String) = self
            .snapshot
            .key(m)
            .key(states)
            .arg(self.key_ttl_secs())
            .arg(room)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        let state = if state.is_empty() {
            None
        } else {
            Some(serde_json::from_str(&state).map_err(|e| HistoryError(format!("bad state of {room}: {e}")))?)
        };
        Ok(Snapshot {
            head: born_or_not(epoch, seq),
            state,
        })
    }

    async fn head(&self, room: &str) -> Result<Cursor, HistoryError> {
        let [_, m] = self.keys(room);
        let (epoch, seq): (String, u64) = self
            .head
            .key(m)
            .arg(self.key_ttl_secs())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(born_or_not(epoch, seq))
    }

    async fn open(&self, room: &str) -> Result<Cursor, HistoryError> {
        let [s, m] = self.keys(room);
        let (epoch, seq): (String, u64) = self
            .open
            .key(s)
            .key(m)
            .arg(fresh_epoch())
            .arg(self.key_ttl_secs())
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(Cursor { epoch, seq })
    }

    async fn since(&self, room: &str, cursor: &Cursor) -> Result<Replay, HistoryError> {
        if cursor.is_unborn() {
            let head = Some(self.head(room).await?).filter(|h| !h.is_unborn());
            return Ok(crate::history::unborn_replay(cursor, head.as_ref(), self.limits.max_age));
        }
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
