//! The web console's static assets (HTML, CSS, ES modules under `crates/gateway/console/`),
//! embedded in the binary and served at `/` and `/console/*` without a token. The console is a
//! client of the public `/v2` API like any other: these routes serve files only, and every
//! piece of data the console shows comes from `/v2` with the user's bearer token. They are not
//! API operations, so they are not in the OpenAPI document.
//!
//! Every console response carries a strict Content-Security-Policy (scripts, styles and
//! connections from this origin only, no inline script, no eval, no framing), `Referrer-Policy:
//! no-referrer` and `Cache-Control: no-store` (the pages show passwords).

use axum::extract::{Path, Request};
use axum::http::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, REFERRER_POLICY};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::middleware::{from_fn, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::error::ApiError;

/// The policy of every console page: nothing but this origin's own files, no inline code.
pub(crate) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The console's files: name, content type, content.
const ASSETS: &[(&str, &str, &str)] = &[
    ("app.js", "text/javascript; charset=utf-8", include_str!("../console/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../console/api.js")),
    ("dom.js", "text/javascript; charset=utf-8", include_str!("../console/dom.js")),
    ("pages.js", "text/javascript; charset=utf-8", include_str!("../console/pages.js")),
    ("connection.js", "text/javascript; charset=utf-8", include_str!("../console/connection.js")),
    ("preview.js", "text/javascript; charset=utf-8", include_str!("../console/preview.js")),
    ("pools.js", "text/javascript; charset=utf-8", include_str!("../console/pools.js")),
    ("sources.js", "text/javascript; charset=utf-8", include_str!("../console/sources.js")),
    ("refresh.js", "text/javascript; charset=utf-8", include_str!("../console/refresh.js")),
    ("console.css", "text/css; charset=utf-8", include_str!("../console/console.css")),
    ("icon.svg", "image/svg+xml", include_str!("../console/icon.svg")),
];

const INDEX: &str = include_str!("../console/index.html");

/// The console's routes (merged into the application unless the console is switched off).
pub(crate) fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new().route("/", get(index)).route("/console/{file}", get(asset)).layer(from_fn(console_headers))
}

async fn index() -> Response {
    ([(CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response()
}

async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (_, content_type, body) =
        ASSETS.iter().find(|(name, _, _)| *name == file).ok_or_else(ApiError::not_found)?;
    Ok(([(CONTENT_TYPE, *content_type)], *body).into_response())
}

/// Headers every response that can carry a password gets: not stored by any cache, not
/// sniffed as another type.
fn no_store(headers: &mut HeaderMap) {
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
}

/// Middleware of the console's routes: the security headers.
async fn console_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    no_store(headers);
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(HeaderName::from_static("x-frame-options"), HeaderValue::from_static("DENY"));
    headers.insert(REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        HeaderName::from_static("cross-origin-opener-policy"),
        HeaderValue::from_static("same-origin"),
    );
    response
}

/// Middleware of the whole application: API answers (which may carry passwords) are never
/// cached either.
pub(crate) async fn api_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if !response.headers().contains_key(CACHE_CONTROL) {
        no_store(response.headers_mut());
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page loads its code from files only: no inline script or style, no handler
    /// attributes, nothing from another origin.
    #[test]
    fn the_page_has_no_inline_code_and_no_other_origin() {
        let page = INDEX.to_ascii_lowercase();
        assert!(!page.contains("<script>") && !page.contains("<style"), "inline code in index.html");
        assert!(!has_handler(&page), "handler attribute in index.html");
        assert!(!page.contains("http://") && !page.contains("https://"), "another origin in index.html");
        assert!(page.contains("src=\"/console/app.js\""));
    }

    fn has_handler(page: &str) -> bool {
        page.split(|c: char| c.is_whitespace()).any(|w| w.starts_with("on") && w.contains('='))
    }

    /// No console script builds markup from strings or evaluates code.
    #[test]
    fn scripts_never_parse_html_or_evaluate_code() {
        for (name, _, body) in ASSETS.iter().filter(|(n, _, _)| n.ends_with(".js")) {
            for banned in
                ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"]
            {
                assert!(!body.contains(banned), "{name} uses {banned}");
            }
            assert!(!body.contains("localStorage"), "{name} keeps data beyond the browser session");
        }
    }

    #[test]
    fn the_policy_forbids_inline_code_eval_and_framing() {
        assert!(!CSP.contains("unsafe"));
        assert!(CSP.contains("frame-ancestors 'none'") && CSP.contains("default-src 'none'"));
    }
}
