//! The one HTTP router: the REST API and probes ([`crate::http`]), the Socket.IO layer with
//! its admission and head-copying middlewares, and CORS around all of it.

use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderValue, Method};
use socketioxide::layer::SocketIoLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::CorsOrigins;
use crate::socket;

/// Every route of the public port: `api` (the HTTP side) with the Socket.IO layer put on by
/// `sockets`, and CORS for the configured origins.
pub(crate) fn router(api: Router, sockets: AttachSockets, origins: &CorsOrigins) -> anyhow::Result<Router> {
    Ok(sockets(api).layer(cors_layer(origins)?))
}

/// Puts the Socket.IO layer (whatever its adapter) on the router.
pub(crate) type AttachSockets = Box<dyn FnOnce(Router) -> Router + Send>;

/// The Socket.IO layer, behind its middlewares: `admit` first (a new Engine.IO session
/// is refused before it costs anything), then `detach_head` (see `socket::head`).
pub(crate) fn attach<A: socketioxide::adapter::Adapter>(layer: SocketIoLayer<A>, admission: socket::Admission) -> AttachSockets {
    Box::new(move |router: Router| {
        router
            .layer(layer)
            .layer(axum::middleware::map_request(socket::detach_head))
            .layer(axum::middleware::from_fn_with_state(admission, socket::admit))
    })
}

fn cors_layer(origins: &CorsOrigins) -> anyhow::Result<CorsLayer> {
    let allow = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => {
            let values = list
                .iter()
                .map(|o| HeaderValue::from_str(o).with_context(|| format!("CORS_ORIGINS: {o:?} is not a valid header value")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            AllowOrigin::list(values)
        }
    };
    Ok(CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        // The REST API's credentials are `Authorization` or `X-API-Key`: a page sending either
        // must pass the preflight.
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderName::from_static(crate::http::auth::API_KEY_HEADER),
        ])
        .max_age(Duration::from_secs(600)))
}
