//! socketioxide keeps each connection's HTTP request head (`req_parts`) for the socket's
//! life. hyper parses heads without copying: the header values and the URI are slices of
//! the connection's read buffer (8–16 KiB), so keeping the head keeps the whole buffer —
//! measured with massif as the largest cost of an idle socket. Copying the head of
//! Socket.IO requests into its own small allocations lets that buffer go.

use axum::extract::Request;
use axum::http::header::COOKIE;
use axum::http::{HeaderMap, HeaderValue, Uri};

/// Where socket.io-client connects.
pub(super) const SOCKET_IO_PATH: &str = "/socket.io";

/// Axum `map_request` middleware: detaches Socket.IO request heads from hyper's buffer
/// (and drops their cookies).
pub async fn detach_head(request: Request) -> Request {
    if !request.uri().path().starts_with(SOCKET_IO_PATH) {
        return request;
    }
    let (mut parts, body) = request.into_parts();
    let mut headers = HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in &parts.headers {
        // Cookies (often kilobytes) are never read here: sockets authenticate with a JWT.
        if name == COOKIE {
            continue;
        }
        // `from_bytes` copies; the header name is a standard constant or its own allocation.
        if let Ok(copy) = HeaderValue::from_bytes(value.as_bytes()) {
            headers.append(name.clone(), copy);
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
    async fn socket_io_heads_are_copied_without_cookies_and_others_untouched() {
        let request = Request::builder()
            .uri("/socket.io/?EIO=4&transport=websocket&token=a.b.c")
            .header("x-forwarded-for", "203.0.113.7")
            .header("cookie", "session=secret")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .body(axum::body::Body::empty())
            .unwrap();
        let copied = detach_head(request).await;
        assert_eq!(copied.uri().query(), Some("EIO=4&transport=websocket&token=a.b.c"));
        assert_eq!(copied.headers()["x-forwarded-for"], "203.0.113.7");
        assert_eq!(copied.headers()["sec-websocket-key"], "dGhlIHNhbXBsZSBub25jZQ==");
        assert!(copied.headers().get("cookie").is_none());

        let api = Request::builder()
            .uri("/realtime/stats")
            .header("cookie", "kept=1")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(detach_head(api).await.headers()["cookie"], "kept=1");
    }
}
