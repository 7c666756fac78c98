//! The chat page at `/`: one static HTML file built into the binary. It
//! talks to the same API as any client (`/v1/kb/ask` streamed,
//! `/v1/kb/documents`), so it holds no data and needs no key to be served.

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("page.html");

/// What the page may load and talk to: only itself and this server.
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                      connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'";

pub async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        PAGE,
    )
}
