//! The web console's files, built from `ui/` into `assets/console/` and embedded in the binary:
//! `/` is its page, `/console/<file>` its scripts and styles. The console talks to the daemon
//! through the public API only, like any other client.
//!
//! The built files carry a hash of their content in their names, so they are cached for good;
//! the page itself is revalidated on every load. Each file is also embedded brotli- and
//! gzip-compressed (the build writes `.br` and `.gz` beside it) and sent in the best encoding
//! the browser accepts.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use include_dir::{Dir, include_dir};

use crate::error::Problem;

static CONSOLE: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/assets/console");

/// Scripts only from the daemon itself, no inline code, no framing, no third party.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; \
                   connect-src 'self'; frame-src 'self' blob:; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";

/// The console's routes, for the full API and for a daemon whose volume is locked alike.
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(page))
        .route("/console/{file}", get(file))
}

async fn page(headers: HeaderMap) -> Response {
    serve("index.html", &headers, "no-cache")
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    // The compressed copies are served by negotiation, never by name.
    if name.ends_with(".br") || name.ends_with(".gz") || name == "index.html" {
        return Problem::not_found(format!("no console file {name:?}")).into_response();
    }
    serve(&name, &headers, "public, max-age=31536000, immutable")
}

fn serve(name: &str, headers: &HeaderMap, cache: &'static str) -> Response {
    let Some(plain) = CONSOLE.get_file(name) else {
        return Problem::not_found(format!(
            "no console file {name:?}; the console may not be built (see ui/README.md)"
        ))
        .into_response();
    };
    let accepted = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let (body, encoding) = ["br", "gzip"]
        .into_iter()
        .filter(|e| accepts(accepted, e))
        .find_map(|e| {
            let suffix = if e == "br" { "br" } else { "gz" };
            CONSOLE
                .get_file(format!("{name}.{suffix}"))
                .map(|f| (f.contents(), Some(e)))
        })
        .unwrap_or((plain.contents(), None));
    let mut response = (StatusCode::OK, body).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime(name)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    if let Some(e) = encoding {
        h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(e));
    }
    response
}

/// Whether an `Accept-Encoding` value takes `coding` (and does not refuse it with `q=0`).
fn accepts(accepted: &str, coding: &str) -> bool {
    accepted.split(',').any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let name = parts.next().unwrap_or("");
        let refused = parts.any(|p| {
            p.strip_prefix("q=")
                .and_then(|q| q.parse::<f32>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        name.eq_ignore_ascii_case(coding) && !refused
    })
}

fn mime(name: &str) -> &'static str {
    match name.rsplit_once('.').map(|(_, ext)| ext) {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("json") => "application/json",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_encoding_is_read_with_its_weights() {
        assert!(accepts("gzip, deflate, br, zstd", "br"));
        assert!(accepts("gzip;q=0.8", "gzip"));
        assert!(!accepts("br;q=0, gzip", "br"));
        assert!(!accepts("", "gzip"));
        assert!(!accepts("identity", "br"));
    }

    #[test]
    fn the_built_console_is_embedded_with_its_compressed_copies() {
        let page = CONSOLE
            .get_file("index.html")
            .expect("assets/console/index.html is embedded");
        let text = std::str::from_utf8(page.contents()).expect("the page is UTF-8");
        let scripts: Vec<&str> = text
            .split("src=\"/console/")
            .skip(1)
            .filter_map(|s| s.split('"').next())
            .collect();
        assert!(!scripts.is_empty(), "the page loads no script: {text}");
        for name in scripts.iter().chain(std::iter::once(&"index.html")) {
            for suffix in ["", ".br", ".gz"] {
                let path = format!("{name}{suffix}");
                assert!(CONSOLE.get_file(&path).is_some(), "{path} is not embedded");
            }
        }
    }
}
