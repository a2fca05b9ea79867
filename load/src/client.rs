//! One Socket.IO client over WebSocket: Engine.IO v4 framing (`0` open, `2`/`3` ping/pong,
//! `4` message) and Socket.IO v5 packets (`40` connect with auth, `42` event, `43` ack,
//! `44` connect error) as text frames — all a load client needs, without a full client's
//! per-connection cost, so one process can hold ~20 000 of them.
//!
//! Received events are not parsed as JSON: the tool only needs the event number it put in
//! the record (`"orderId":"L<n>"` / `"productId":"L<n>"`), found by a substring search.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{WebSocketStream, client_async_with_config};
use tokio_util::sync::CancellationToken;

use crate::report::Recorder;

/// Where and as whom a client connects.
pub struct Target {
    /// The bridge's address.
    pub server: SocketAddr,
    /// The local address to connect from (spread over 127.0.0.x to pass the ephemeral-port limit).
    pub source: IpAddr,
    /// A valid JWT.
    pub token: String,
    /// A subscribe event to send after connecting, as the JSON array of its packet (e.g.
    /// `["subscribe:inventory"]`); its ack must say `ok`.
    pub subscribe: Option<String>,
}

/// A connected, authenticated socket.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
}

/// The headers a desktop Chrome adds to a socket.io-client WebSocket handshake (besides
/// those tungstenite writes: host, upgrade, connection, key, version).
const BROWSER_HEADERS: [(&str, &str); 7] = [
    ("origin", "https://shop.example.com"),
    (
        "user-agent",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    ),
    ("accept-encoding", "gzip, deflate, br, zstd"),
    ("accept-language", "en-GB,en-US;q=0.9,en;q=0.8,de;q=0.7"),
    ("cache-control", "no-cache"),
    ("pragma", "no-cache"),
    ("sec-websocket-extensions", "permessage-deflate; client_max_window_bits"),
];

/// The marker the tool puts before each event number.
const MARKERS: [&str; 3] = ["\"orderId\":\"L", "\"productId\":\"L", "\"sku\":\"L"];

impl Client {
    /// Connects, authenticates and (if asked) subscribes; returns once `connection:success`
    /// (and the subscribe ack) arrived.
    pub async fn connect(t: &Target) -> anyhow::Result<Client> {
        let socket = match t.source {
            IpAddr::V4(_) => TcpSocket::new_v4()?,
            IpAddr::V6(_) => TcpSocket::new_v6()?,
        };
        socket.bind(SocketAddr::new(t.source, 0)).context("binding the source address")?;
        let stream = socket.connect(t.server).await.context("TCP connect")?;
        stream.set_nodelay(true)?;
        // Small buffers: a load client only reads short text frames.
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", t.server);
        let mut request = url.into_client_request()?;
        // What Chrome sends with a socket.io-client WebSocket, so that what the server keeps
        // of a request head is measured as browsers make it.
        for (name, value) in BROWSER_HEADERS {
            request
                .headers_mut()
                .insert(name, tokio_tungstenite::tungstenite::http::HeaderValue::from_static(value));
        }
        let (ws, _) = client_async_with_config(request, stream, Some(config))
            .await
            .context("WebSocket handshake")?;
        let mut c = Client { ws };
        let open = c.next_text().await?;
        if !open.starts_with('0') {
            bail!("expected an Engine.IO open packet, got {open:?}");
        }
        let auth = serde_json::json!({ "token": t.token });
        c.send(format!("40{auth}")).await?;
        loop {
            let text = c.next_text().await?;
            if text.starts_with("44") {
                bail!("connect_error: {text}");
            }
            if text.starts_with("42[\"connection:success\"") {
                break;
            }
            c.answer_ping(&text).await?;
        }
        if let Some(subscribe) = &t.subscribe {
            c.send(format!("420{subscribe}")).await?;
            loop {
                let text = c.next_text().await?;
                if text.starts_with("430") {
                    if !text.contains("\"ok\":true") {
                        bail!("subscribe refused: {text}");
                    }
                    break;
                }
                c.answer_ping(&text).await?;
            }
        }
        Ok(c)
    }

    /// Reads until `stop`, recording every numbered event; answers pings. Returns whether
    /// the connection was still open at `stop` (false: the server or network dropped it).
    pub async fn run(mut self, recorder: Arc<Recorder>, slot: usize, stop: CancellationToken) -> bool {
        loop {
            let text = tokio::select! {
                _ = stop.cancelled() => {
                    let _ = self.ws.close(None).await;
                    return true;
                }
                t = self.next_text() => match t {
                    Ok(t) => t,
                    Err(_) => return false,
                },
            };
            if text.starts_with("42") {
                if let Some(n) = event_number(&text) {
                    recorder.received(slot, n);
                } else {
                    recorder.other_events.fetch_add(1, Ordering::Relaxed);
                }
            } else if self.answer_ping(&text).await.is_err() {
                return false;
            }
        }
    }

    async fn answer_ping(&mut self, text: &str) -> anyhow::Result<()> {
        if text == "2" {
            self.send("3".to_owned()).await?;
        }
        Ok(())
    }

    async fn send(&mut self, text: String) -> anyhow::Result<()> {
        self.ws.send(Message::Text(text.into())).await.context("WebSocket send")
    }

    async fn next_text(&mut self) -> anyhow::Result<String> {
        loop {
            match tokio::time::timeout(Duration::from_secs(120), self.ws.next()).await {
                Err(_) => bail!("nothing received for 120 s"),
                Ok(None) => bail!("connection closed"),
                Ok(Some(Err(e))) => bail!("WebSocket error: {e}"),
                Ok(Some(Ok(Message::Text(t)))) => return Ok(t.as_str().to_owned()),
                Ok(Some(Ok(Message::Close(_)))) => bail!("closed by the server"),
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// The tool's event number in a received event, if it carries one.
pub fn event_number(text: &str) -> Option<u64> {
    MARKERS.iter().find_map(|m| {
        let at = text.find(m)? + m.len();
        let digits = &text[at..];
        let end = digits.find(|c: char| !c.is_ascii_digit()).unwrap_or(digits.len());
        digits[..end].parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::event_number;

    #[test]
    fn finds_the_event_number() {
        assert_eq!(
            event_number(r#"42["order:updated",{"data":{"orderId":"L1234","buyerId":"u1"}}]"#),
            Some(1234)
        );
        assert_eq!(
            event_number(r#"42["inventory:updated",{"data":{"productId":"L7","stock":50}}]"#),
            Some(7)
        );
        assert_eq!(event_number(r#"42["sync:position",{"room":"user:1"}]"#), None);
    }
}
