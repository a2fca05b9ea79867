//! The replay history's contract, run against both stores — in memory and in a real Redis
//! (`REDIS_URL`, default 127.0.0.1:6379; the test command starts one if none runs) — then
//! what only the Redis store can meet: several nodes on one numbering, keys evicted under
//! `maxmemory`, a stream with a hole.

use std::sync::Arc;
use std::time::Duration;

use realtime_bridge::events::Envelope;
use realtime_bridge::history::{Cursor, History, HistoryLimits, LostReason, MemoryHistory, NewEntry, Replay, State};
use realtime_bridge::redis::history::RedisHistory;

fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A Redis store of its own (a fresh key prefix).
fn redis_store(limits: HistoryLimits) -> RedisHistory {
    let prefix = format!("rb-test:{:08x}:", rand::random::<u32>());
    RedisHistory::connect(&redis_url(), &prefix, limits).expect("a valid Redis URL")
}

async fn history(max_events: usize, max_age: Duration) -> RedisHistory {
    redis_store(HistoryLimits::count_and_age(max_events, max_age))
}

/// Both stores with the same limits: every contract test runs against each.
fn stores(limits: HistoryLimits) -> [(&'static str, Arc<dyn History>); 2] {
    [
        ("memory", Arc::new(MemoryHistory::new(limits))),
        ("redis", Arc::new(redis_store(limits))),
    ]
}

fn envelope(id: &str) -> Envelope {
    serde_json::from_value(serde_json::json!({
        "id": id, "type": "order.updated", "occurredAt": "2026-11-22T10:00:00.000Z", "data": {"orderId": id}
    }))
    .unwrap()
}

fn ids(replay: Replay) -> Vec<String> {
    match replay {
        Replay::Complete(entries) => entries.iter().map(|e| e.envelope.id.clone()).collect(),
        Replay::Lost(reason) => panic!("expected a complete replay, got {reason:?}"),
    }
}

// The contract, both stores.

/// Reads of a room with no history — any name a client makes up — create nothing: the head
/// and the snapshot answer an unborn position, and a replay from it is complete while the
/// room still has none, lost once it has (what it held may be more than it holds).
#[tokio::test]
async fn reads_of_a_room_without_history_create_nothing() {
    for (store, h) in stores(HistoryLimits::count_and_age(100, Duration::from_secs(600))) {
        let room = "product:never-seen";
        let head = h.head(room).await.unwrap();
        assert!(head.is_unborn() && head.seq == 0, "{store}: {head:?}");
        let snapshot = h.snapshot(room).await.unwrap();
        assert!(snapshot.head.is_unborn() && snapshot.state.is_none(), "{store}");
        assert!(head.same_head(&snapshot.head), "{store}: two reads of no history are the same head");
        assert_eq!(h.since(room, &head).await.unwrap(), Replay::Complete(Vec::new()), "{store}");
        // Still nothing there: the next read is unborn again, and the first append starts
        // a real epoch at seq 1.
        assert!(h.head(room).await.unwrap().is_unborn(), "{store}: the reads created the room");
        let first = h.append(room, "inventory:updated", envelope("a")).await.unwrap();
        let p = first.envelope.position.clone().unwrap();
        assert!(
            !Cursor {
                epoch: p.epoch.clone(),
                seq: p.seq
            }
            .is_unborn()
                && p.seq == 1,
            "{store}: {p:?}"
        );
        assert_eq!(
            h.since(room, &head).await.unwrap(),
            Replay::Lost(LostReason::EpochChanged),
            "{store}"
        );
        let forged = Cursor { seq: 3, ..head.clone() };
        assert_eq!(
            h.since("product:other", &forged).await.unwrap(),
            Replay::Lost(LostReason::UnknownPosition),
            "{store}"
        );
        let old = Cursor {
            epoch: "~1000".to_owned(),
            seq: 0,
        };
        assert_eq!(
            h.since("product:other", &old).await.unwrap(),
            Replay::Lost(LostReason::Trimmed),
            "{store}: too old to vouch for"
        );
        assert_eq!(
            h.since(
                "product:other",
                &Cursor {
                    epoch: "made-up".to_owned(),
                    seq: 0
                }
            )
            .await
            .unwrap(),
            Replay::Lost(LostReason::EpochChanged),
            "{store}"
        );
        assert!(
            h.head("product:other").await.unwrap().is_unborn(),
            "{store}: replays create nothing either"
        );
    }
}

/// Measured in the issue: 20 000 reads of unknown products made 20 000 Redis keys.
#[tokio::test]
async fn reads_of_unknown_rooms_add_no_redis_keys() {
    let h = history(100, Duration::from_secs(600)).await;
    let [_, probe] = h.keys("product:p-0");
    let prefix = probe.split('{').next().unwrap().to_owned();
    let count = || async {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut raw().await)
            .await
            .unwrap();
        keys.len()
    };
    h.open("user:u-1").await.unwrap();
    let before = count().await;
    assert_eq!(before, 1, "open creates the room's hash");
    for i in 0..500 {
        let room = format!("product:p-{i}");
        h.head(&room).await.unwrap();
        h.snapshot(&room).await.unwrap();
        h.since(
            &room,
            &Cursor {
                epoch: "e".to_owned(),
                seq: 0,
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(count().await, before);
}

#[tokio::test]
async fn positions_are_contiguous_and_replay_is_exact() {
    for (store, h) in stores(HistoryLimits::count_and_age(100, Duration::from_secs(600))) {
        let start = h.open("user:42").await.unwrap();
        assert_eq!(start.seq, 0, "{store}");
        for id in ["a", "b", "c", "d"] {
            let e = h.append("user:42", "order:updated", envelope(id)).await.unwrap();
            assert_eq!(e.envelope.position.as_ref().unwrap().epoch, start.epoch, "{store}");
        }
        let other = h.append("user:7", "order:updated", envelope("x")).await.unwrap();
        assert_eq!(
            other.envelope.position.as_ref().unwrap().seq,
            1,
            "{store}: each room counts on its own"
        );
        assert_eq!(ids(h.since("user:42", &start).await.unwrap()), ["a", "b", "c", "d"], "{store}");
        let Replay::Complete(entries) = h.since("user:42", &Cursor { seq: 2, ..start.clone() }).await.unwrap() else {
            panic!("{store}: a complete replay")
        };
        let seqs: Vec<u64> = entries.iter().map(|e| e.envelope.position.as_ref().unwrap().seq).collect();
        assert_eq!(seqs, [3, 4], "{store}");
        assert_eq!(entries[0].event, "order:updated", "{store}");
        assert_eq!(entries[0].envelope.data["orderId"], "c", "{store}: the envelope comes back whole");
        assert_eq!(h.open("user:42").await.unwrap().seq, 4, "{store}");
        assert!(
            ids(h.since("user:42", &Cursor { seq: 4, ..start }).await.unwrap()).is_empty(),
            "{store}"
        );
    }
}

#[tokio::test]
async fn a_batch_over_many_rooms_is_numbered_per_room_in_order_and_bounded() {
    for (store, h) in stores(HistoryLimits::count_and_age(3, Duration::from_secs(600))) {
        let a0 = h.append("a", "e", envelope("a0")).await.unwrap();
        let b_start = h.open("b").await.unwrap();
        // Interleaved rooms; room a gets more in one batch than it may hold.
        let batch: Vec<NewEntry> = ["a1", "b1", "a2", "a3", "b2", "c1", "a4"]
            .iter()
            .map(|id| NewEntry {
                room: id[..1].to_owned(),
                event: format!("ev-{id}"),
                envelope: envelope(id),
                state: None,
            })
            .collect();
        let stored = h.append_all(batch).await.unwrap();
        let got: Vec<(String, String, u64)> = stored
            .iter()
            .map(|e| {
                let p = e.envelope.position.as_ref().unwrap();
                (e.envelope.id.clone(), p.room.clone(), p.seq)
            })
            .collect();
        let want = [
            ("a1", "a", 2),
            ("b1", "b", 1),
            ("a2", "a", 3),
            ("a3", "a", 4),
            ("b2", "b", 2),
            ("c1", "c", 1),
            ("a4", "a", 5),
        ];
        let want: Vec<(String, String, u64)> = want.iter().map(|(i, r, s)| (i.to_string(), r.to_string(), *s)).collect();
        assert_eq!(got, want, "{store}: the batch's order, each room numbered on");
        assert_eq!(stored[0].event, "ev-a1", "{store}");
        let a_epoch = a0.envelope.position.as_ref().unwrap().epoch.clone();
        assert_eq!(stored[0].envelope.position.as_ref().unwrap().epoch, a_epoch, "{store}: same epoch");
        assert_eq!(ids(h.since("b", &b_start).await.unwrap()), ["b1", "b2"], "{store}");
        let a_at_2 = Cursor { epoch: a_epoch, seq: 2 };
        assert_eq!(
            ids(h.since("a", &a_at_2).await.unwrap()),
            ["a2", "a3", "a4"],
            "{store}: trimmed to 3 after the batch"
        );
        let a_at_1 = Cursor { seq: 1, ..a_at_2 };
        assert_eq!(h.since("a", &a_at_1).await.unwrap(), Replay::Lost(LostReason::Trimmed), "{store}");
        assert!(h.append_all(Vec::new()).await.unwrap().is_empty(), "{store}");
    }
}

fn state(v: serde_json::Value) -> Option<State> {
    Some(v.as_object().unwrap().clone())
}

fn with_state(room: &str, id: &str, patch: serde_json::Value) -> NewEntry {
    NewEntry {
        room: room.to_owned(),
        event: "inventory:updated".to_owned(),
        envelope: envelope(id),
        state: state(patch),
    }
}

#[tokio::test]
async fn a_snapshot_is_the_state_of_exactly_the_entries_up_to_its_head() {
    let limits = HistoryLimits {
        max_states: 2,
        ..HistoryLimits::count_and_age(100, Duration::from_secs(600))
    };
    for (store, h) in stores(limits) {
        let room = |p: &str| format!("product:{p}");
        let empty = h.snapshot(&room("a")).await.unwrap();
        assert_eq!((empty.head.seq, empty.state), (0, None), "{store}: nothing known yet");
        h.append_all(vec![
            with_state(&room("a"), "1", serde_json::json!({"stock": 5, "name": "Mug"})),
            with_state(&room("a"), "2", serde_json::json!({"stock": 4, "previousStock": 5})),
        ])
        .await
        .unwrap();
        let a = h.snapshot(&room("a")).await.unwrap();
        assert_eq!(a.head.seq, 2, "{store}");
        assert_eq!(
            a.state,
            state(serde_json::json!({"stock": 4, "previousStock": 5, "name": "Mug"})),
            "{store}: merged, later over earlier"
        );
        h.append_all(vec![with_state(&room("a"), "3", serde_json::json!({"price": 9.5}))])
            .await
            .unwrap();
        assert_eq!(h.snapshot(&room("a")).await.unwrap().state.unwrap()["price"], 9.5, "{store}");
        // Two states at most: b then c push out the least recently updated, a.
        h.append_all(vec![with_state(&room("b"), "4", serde_json::json!({"stock": 1}))])
            .await
            .unwrap();
        h.append_all(vec![with_state(&room("c"), "5", serde_json::json!({"stock": 2}))])
            .await
            .unwrap();
        let a = h.snapshot(&room("a")).await.unwrap();
        assert_eq!((a.head.seq, a.state), (3, None), "{store}: a's state evicted, its history kept");
        assert_eq!(
            h.snapshot(&room("c")).await.unwrap().state,
            state(serde_json::json!({"stock": 2})),
            "{store}"
        );
    }
}

#[tokio::test]
async fn gaps_beyond_the_bounds_and_foreign_positions_are_lost() {
    for (store, h) in stores(HistoryLimits::count_and_age(3, Duration::from_secs(600))) {
        let start = h.open("room").await.unwrap();
        for i in 0..5 {
            h.append("room", "e", envelope(&i.to_string())).await.unwrap();
        }
        assert_eq!(h.since("room", &start).await.unwrap(), Replay::Lost(LostReason::Trimmed), "{store}");
        assert_eq!(
            ids(h.since("room", &Cursor { seq: 2, ..start.clone() }).await.unwrap()),
            ["2", "3", "4"],
            "{store}"
        );
        let ahead = Cursor { seq: 9, ..start.clone() };
        assert_eq!(
            h.since("room", &ahead).await.unwrap(),
            Replay::Lost(LostReason::UnknownPosition),
            "{store}"
        );
        let stale = Cursor {
            epoch: "0123456789abcdef".into(),
            seq: 1,
        };
        assert_eq!(
            h.since("room", &stale).await.unwrap(),
            Replay::Lost(LostReason::EpochChanged),
            "{store}"
        );
        assert_eq!(
            h.since("never-used", &start).await.unwrap(),
            Replay::Lost(LostReason::EpochChanged),
            "{store}"
        );
    }
}

#[tokio::test]
async fn entries_older_than_the_age_bound_are_not_replayed() {
    for (store, h) in stores(HistoryLimits::count_and_age(100, Duration::from_millis(300))) {
        let start = h.open("aging").await.unwrap();
        h.append("aging", "e", envelope("old")).await.unwrap();
        // The bound is about time itself: let it pass.
        tokio::time::sleep(Duration::from_millis(400)).await;
        h.append("aging", "e", envelope("new")).await.unwrap();
        assert_eq!(
            h.since("aging", &start).await.unwrap(),
            Replay::Lost(LostReason::Trimmed),
            "{store}"
        );
        assert_eq!(
            ids(h.since("aging", &Cursor { seq: 1, ..start }).await.unwrap()),
            ["new"],
            "{store}"
        );
    }
}

#[tokio::test]
async fn a_room_keeps_at_most_its_byte_budget_oldest_dropped_first() {
    let limits = HistoryLimits {
        max_room_bytes: 10_000,
        ..HistoryLimits::count_and_age(1000, Duration::from_secs(600))
    };
    for (store, h) in stores(limits) {
        let start = h.open("big").await.unwrap();
        for i in 0..10 {
            let mut e = envelope(&i.to_string());
            e.data = serde_json::json!({ "pad": "x".repeat(3_000) });
            h.append("big", "e", e).await.unwrap();
        }
        assert_eq!(h.since("big", &start).await.unwrap(), Replay::Lost(LostReason::Trimmed), "{store}");
        assert_eq!(
            ids(h.since("big", &Cursor { seq: 7, ..start }).await.unwrap()),
            ["7", "8", "9"],
            "{store}: three 3 KB entries fit in 10 KB"
        );
    }
}

// Redis only.

#[tokio::test]
async fn two_nodes_share_one_numbering() {
    // The same prefix from a second connection: another node of the same deployment.
    let prefix = format!("rb-test:{:08x}:", rand::random::<u32>());
    let limits = HistoryLimits::count_and_age(1000, Duration::from_secs(600));
    let (a, b) = (
        RedisHistory::connect(&redis_url(), &prefix, limits).unwrap(),
        RedisHistory::connect(&redis_url(), &prefix, limits).unwrap(),
    );
    let start = a.open("shared").await.unwrap();
    let appends = (0..50).map(|i| {
        let (a, b) = (a.clone(), b.clone());
        async move {
            let h = if i % 2 == 0 { a } else { b };
            h.append("shared", "e", envelope(&i.to_string())).await.unwrap()
        }
    });
    let mut seqs: Vec<u64> = futures_seqs(appends).await;
    seqs.sort();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>(), "no gap, no duplicate across nodes");
    assert_eq!(ids(b.since("shared", &start).await.unwrap()).len(), 50);
}

async fn futures_seqs(
    appends: impl Iterator<Item = impl std::future::Future<Output = std::sync::Arc<realtime_bridge::history::Entry>> + Send + 'static>,
) -> Vec<u64> {
    let tasks: Vec<_> = appends.map(tokio::spawn).collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.unwrap().envelope.position.as_ref().unwrap().seq);
    }
    seqs
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_counter_lost_to_eviction_starts_a_new_epoch_never_a_wrong_replay() {
    let h = history(100, Duration::from_secs(600)).await;
    let start = h.open("evicted").await.unwrap();
    for i in 0..5 {
        h.append("evicted", "e", envelope(&format!("old-{i}"))).await.unwrap();
    }
    let held = Cursor { seq: 2, ..start.clone() };
    // What `maxmemory` eviction does to one key: the room's counter (and epoch) vanish.
    let [_, meta] = h.keys("evicted");
    let _: () = redis::cmd("DEL").arg(&meta).query_async(&mut raw().await).await.unwrap();
    for i in 0..5 {
        h.append("evicted", "e", envelope(&format!("new-{i}"))).await.unwrap();
    }
    // Numbering restarted: seq 3.. exist again. The old position must not be answered with
    // them as if nothing had happened.
    assert_eq!(h.since("evicted", &held).await.unwrap(), Replay::Lost(LostReason::EpochChanged));
    assert_ne!(h.open("evicted").await.unwrap().epoch, start.epoch);
}

#[tokio::test]
async fn a_replay_that_would_skip_or_repeat_entries_is_refused_whole() {
    let h = history(100, Duration::from_secs(600)).await;
    let start = h.open("holed").await.unwrap();
    for i in 0..5 {
        h.append("holed", "e", envelope(&i.to_string())).await.unwrap();
    }
    let [stream, _] = h.keys("holed");
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg(&stream)
        .arg("-")
        .arg("+")
        .query_async(&mut raw().await)
        .await
        .unwrap();
    // One entry in the middle gone (partial eviction, a manual XDEL): entries 1, 2, 4, 5.
    let _: () = redis::cmd("XDEL")
        .arg(&stream)
        .arg(&entries.ids[2].id)
        .query_async(&mut raw().await)
        .await
        .unwrap();
    let replay = h.since("holed", &Cursor { seq: 1, ..start.clone() }).await.unwrap();
    assert!(matches!(replay, Replay::Lost(_)), "not a partial replay: {replay:?}");
    assert_eq!(ids(h.since("holed", &Cursor { seq: 3, ..start }).await.unwrap()), ["3", "4"]);
}

#[tokio::test]
async fn a_gap_longer_than_the_bound_is_refused_without_reading_the_stream() {
    let h = history(3, Duration::from_secs(600)).await;
    let start = h.open("long").await.unwrap();
    for i in 0..10 {
        h.append("long", "e", envelope(&i.to_string())).await.unwrap();
    }
    assert_eq!(h.since("long", &start).await.unwrap(), Replay::Lost(LostReason::Trimmed));
}

#[tokio::test]
async fn the_byte_count_of_a_room_stays_exact() {
    let h = redis_store(HistoryLimits {
        max_room_bytes: 10_000,
        ..HistoryLimits::count_and_age(1000, Duration::from_secs(600))
    });
    for i in 0..10 {
        let mut e = envelope(&i.to_string());
        e.data = serde_json::json!({ "pad": "x".repeat(3_000) });
        h.append("big", "e", e).await.unwrap();
    }
    let [stream, meta] = h.keys("big");
    let mut conn = raw().await;
    let len: usize = redis::cmd("XLEN").arg(&stream).query_async(&mut conn).await.unwrap();
    let bytes: usize = redis::cmd("HGET").arg(&meta).arg("b").query_async(&mut conn).await.unwrap();
    assert_eq!(len, 3);
    assert!(bytes <= 10_000 && bytes > 9_000, "{bytes}: what the three held entries weigh");
}

#[tokio::test]
async fn a_rooms_keys_outlive_its_last_use_by_the_idle_ttl_without_an_expire_per_append() {
    let h = history(100, Duration::from_secs(60)).await;
    let idle = 3600_i64; // MemoryHistory::IDLE_ROOM_TTL, longer than the age bound here
    let keys = h.keys("ttl");
    let ttls = |keys: [String; 2]| async move {
        let mut conn = raw().await;
        let mut out = Vec::new();
        for key in keys {
            let ttl: i64 = redis::cmd("TTL").arg(&key).query_async(&mut conn).await.unwrap();
            out.push(ttl);
        }
        out
    };
    h.append("ttl", "e", envelope("1")).await.unwrap();
    for ttl in ttls(keys.clone()).await {
        assert!(ttl >= idle && ttl <= idle + idle / 4 + 1, "{ttl}");
    }
    // Pretend the last refresh was long ago but within its margin: the next append refreshes.
    let _: () = redis::cmd("HSET")
        .arg(&keys[1])
        .arg("t")
        .arg(0)
        .query_async(&mut raw().await)
        .await
        .unwrap();
    let _: () = redis::cmd("EXPIRE")
        .arg(&keys[0])
        .arg(idle / 2)
        .query_async(&mut raw().await)
        .await
        .unwrap();
    h.append("ttl", "e", envelope("2")).await.unwrap();
    assert!(ttls(keys.clone()).await[0] >= idle, "refreshed");
    h.open("ttl").await.unwrap();
    for ttl in ttls(keys).await {
        assert!(ttl >= idle, "a head read never shortens it: {ttl}");
    }
}
