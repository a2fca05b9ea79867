//! `/dashboard`: the operations page, served from the binary (assets in `dashboard/`,
//! embedded at build time; no CDN, no Node build step). It reads `/health`,
//! `/realtime/stats` and follows `admin:dashboard` over Socket.IO with the viewer's own
//! credentials, so it adds no work per event when nobody has it open.
//!
//! Served in development, and in production only with `DASHBOARD_ENABLED=true`; always with
//! a strict Content-Security-Policy (scripts and connections to this origin only, no inline
//! script), `X-Frame-Options: DENY`, `nosniff` and no referrer.

use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

const INDEX: &str = include_str!("../../dashboard/index.html");
const APP_JS: &str = include_str!("../../dashboard/app.js");
const APP_CSS: &str = include_str!("../../dashboard/app.css");
/// socket.io-client's own browser build (the version e2e/package.json pins; a test checks
/// the copy is current).
const SOCKET_IO_JS: &str = include_str!("../../dashboard/socket.io.min.js");

/// The page's Content-Security-Policy: everything from this origin, nothing inline, no
/// framing. `connect-src 'self'` covers the same-origin WebSocket.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes; with `redirect_root`, `GET /` leads to it (development).
pub(crate) fn router<S: Clone + Send + Sync + 'static>(redirect_root: bool) -> Router<S> {
    let router = Router::new()
        .route("/dashboard", get(|| async { asset("text/html; charset=utf-8", INDEX) }))
        .route("/dashboard/", get(|| async { Redirect::permanent("/dashboard") }))
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route("/dashboard/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .route(
            "/dashboard/socket.io.min.js",
            get(|| async { asset("text/javascript; charset=utf-8", SOCKET_IO_JS) }),
        );
    if redirect_root {
        router.route("/", get(|| async { Redirect::temporary("/dashboard") }))
    } else {
        router
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
