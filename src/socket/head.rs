//! socketioxide keeps each connection's HTTP request head (`req_parts`) for the socket's
//! life. hyper parses heads without copying: the header values and the URI are slices of
//! the connection's read buffer (8–16 KiB), so keeping the head keeps the whole buffer —
//! measured with massif as the largest cost of an idle socket. Copying the head of
//! Socket.IO requests into its own small allocations lets that buffer go — and only the
//! headers something reads are kept: a browser sends a dozen (user agent, languages,
//! encodings, cookies…) that would otherwise stay with every socket.

use axum::extract::Request;
use axum::http::header::{CONTENT_TYPE, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_VERSION};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Uri};

/// Where socket.io-client connects.
pub(super) const SOCKET_IO_PATH: &str = "/socket.io";

/// The request headers read after this middleware: engineioxide's (the WebSocket key it
/// answers the upgrade with; the polling body's content type) and ours (the forwarded
/// client address, `socket::limits`). CORS has run before. Cookies (often kilobytes) are
/// never read: sockets authenticate with a JWT.
const KEPT_HEADERS: [HeaderName; 4] = [
    SEC_WEBSOCKET_KEY,
    SEC_WEBSOCKET_VERSION,
    CONTENT_TYPE,
    HeaderName::from_static(super::limits::FORWARDED_FOR),
];

/// Axum `map_request` middleware: detaches Socket.IO request heads from hyper's buffer,
/// keeping only the headers that are read.
pub async fn detach_head(request: Request) -> Request {
    if !request.uri().path().starts_with(SOCKET_IO_PATH) {
        return request;
    }
    let (mut parts, body) = request.into_parts();
    let mut headers = HeaderMap::new();
    for name in &KEPT_HEADERS {
        for value in parts.headers.get_all(name) {
            // `from_bytes` copies out of hyper's buffer.
            if let Ok(copy) = HeaderValue::from_bytes(value.as_bytes()) {
                headers.append(name.clone(), copy);
            }
        }
    }
    parts.headers = headers;
    if let Ok(uri) = Uri::try_from(parts.uri.to_string()) {
        parts.uri = uri;
    }
    Request::from_parts(parts, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn socket_io_heads_keep_only_the_headers_read_and_others_are_untouched() {
        let request = Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket&token=a.b.c")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-for", "10.0.0.2")
            .header("cookie", "session=secret")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .header("content-type", "text/plain;charset=UTF-8")
            .header("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36")
            .header("accept-language", "en-GB,en;q=0.9")
            .body(axum::body::Body::empty())
            .unwrap();
        let copied = detach_head(request).await;
        assert_eq!(copied.uri().query(), Some("EIO=4&transport=websocket&token=a.b.c"));
        let forwarded: Vec<_> = copied.headers().get_all("x-forwarded-for").iter().collect();
        assert_eq!(forwarded, ["203.0.113.7", "10.0.0.2"], "every value, in order");
        assert_eq!(copied.headers()["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(copied.headers()["sec-websocket-version"], "13");
        assert_eq!(copied.headers()["content-type"], "text/plain;charset=UTF-8");
        assert_eq!(copied.headers().len(), 5, "nothing else: {:?}", copied.headers());

        let api = Request::builder()
            .uri("/realtime/stats")
            .header("cookie", "kept=1")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(detach_head(api).await.headers()["cookie"], "kept=1");
    }
}
