//! The adapter's Redis pub/sub driver against real redis-server processes: messages flow
//! between two drivers, and keep flowing after Redis restarts (the driver reconnects and
//! re-subscribes by itself, the failure other adapters are known for).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use realtime_bridge::redis::adapter::PubSub;
use realtime_bridge::stats::Stats;
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::time::{Instant, timeout};

/// A throwaway redis-server on `port` (killed on drop).
struct Redis(Child);

impl Redis {
    async fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (the test command installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Redis(child)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn next(stream: &mut MessageStream<ChanItem>) -> ChanItem {
    use futures_util::StreamExt;
    timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a message within 10 s")
        .expect("the stream is open")
}

/// Publishes until the message is taken: after a restart, the subscriber may not be back yet.
async fn publish_until_received(publisher: &PubSub, stream: &mut MessageStream<ChanItem>, body: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = publisher.publish("rb-test-chan".into(), body.to_vec()).await;
        if let Ok(Some((_, got))) = timeout(Duration::from_millis(200), futures_util::StreamExt::next(stream)).await {
            assert_eq!(got, body);
            return;
        }
        assert!(Instant::now() < deadline, "no message after the restart: not re-subscribed");
    }
}

#[tokio::test]
async fn messages_flow_between_nodes_and_again_after_a_redis_restart() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let redis = Redis::start(port).await;
    let stats = Arc::new(Stats::default());
    let subscriber = PubSub::new(&url, stats.clone()).unwrap();
    let publisher = PubSub::new(&url, stats).unwrap();

    let mut stream = subscriber.subscribe("rb-test-chan".into(), 16).await.unwrap();
    assert_eq!(subscriber.num_serv("rb-test-chan").await.unwrap(), 1);
    publisher.publish("rb-test-chan".into(), b"before".to_vec()).await.unwrap();
    assert_eq!(next(&mut stream).await, ("rb-test-chan".to_owned(), b"before".to_vec()));

    drop(redis);
    assert!(!subscriber.ping(Duration::from_millis(500)).await, "Redis is down");
    let _redis = Redis::start(port).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !subscriber.ping(Duration::from_millis(500)).await {
        assert!(Instant::now() < deadline, "the driver did not reconnect");
    }
    publish_until_received(&publisher, &mut stream, b"after").await;
    assert_eq!(subscriber.num_serv("rb-test-chan").await.unwrap(), 1, "subscribed again, once");
}
