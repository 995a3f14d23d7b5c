//! HTTP calls to the pgplane REST API (DigitalOcean v2 paths, bearer token) and the mapping of
//! every failure to one line in doctl's words: `<METHOD> <URL>: <status> (request "<id>")
//! <message>` for error answers, and the unreachable API URL for connection failures. The
//! token goes into the Authorization header only; no message or debug output carries it, and
//! before it goes over plain HTTP to a host other than this machine a warning says so.

use std::time::Duration;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use reqwest::{Method, Response, Url};
use serde_json::Value;

/// Everything but RFC 3986 unreserved characters is escaped in a path segment, so names with
/// '/', '?', '%', spaces, quotes or any Unicode reach the API as one segment.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// How long to wait for a connection, and for a whole answer (registering a cluster probes the
/// target and waits for the reconciler, so writes may take several seconds).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Longest piece of a non-JSON error body quoted in a message.
const MAX_QUOTED_BODY: usize = 200;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The API answered with an error status.
    #[error("{method} {url}: {status}{} {message}", request_note(.request_id))]
    Status { method: Method, url: String, status: u16, request_id: Option<String>, message: String },
    /// The API could not be reached (refused, unresolvable, timed out, TLS failure...).
    #[error("{method} {url}: cannot reach the pgplane API at {base}: {cause}")]
    Unreachable { method: Method, url: String, base: String, cause: String },
    /// The API answered with a success status but not with what the client expects.
    #[error("{method} {url}: unexpected answer: {what}")]
    Unexpected { method: Method, url: String, what: String },
}

/// Whether a token sent to `url` would cross a network in the clear: plain http:// to a host
/// that is not this machine (localhost, 127.0.0.0/8, ::1).
fn exposes_token(url: &Url) -> bool {
    if url.scheme() != "http" {
        return false;
    }
    let host = url.host_str().unwrap_or("").trim_start_matches('[').trim_end_matches(']');
    let local = host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    !local
}

fn request_note(request_id: &Option<String>) -> String {
    request_id.as_ref().map(|id| format!(" (request {id:?})")).unwrap_or_default()
}

/// A connection to one pgplane API with one token.
pub struct Api {
    http: reqwest::Client,
    /// The API URL without a trailing slash; paths are appended to it.
    base: String,
    token: String,
}

impl Api {
    /// Checks the URL (http or https, with a host) and builds the HTTP client.
    pub fn new(api_url: &str, token: String) -> anyhow::Result<Self> {
        let parsed = Url::parse(api_url).map_err(|e| anyhow::anyhow!("invalid API URL {api_url:?}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
            anyhow::bail!("invalid API URL {api_url:?}: expected http://HOST[:PORT] or https://HOST[:PORT]");
        }
        if exposes_token(&parsed) {
            eprintln!(
                "warning: the API URL {api_url} is plain http:// to another host: the access token \
                 crosses the network unencrypted; use https://"
            );
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("pgplane-cli/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .build()?;
        Ok(Self { http, base: api_url.trim_end_matches('/').to_string(), token })
    }

    /// The URL of `/v2/<segments...>`, each segment percent-encoded.
    pub fn url(&self, segments: &[&str]) -> String {
        let mut url = format!("{}/v2", self.base);
        for segment in segments {
            url.push('/');
            url.extend(utf8_percent_encode(segment, PATH_SEGMENT));
        }
        url
    }

    /// Sends a request and returns the answer's JSON (Null for an empty body, as after a
    /// delete); any status outside 2xx is an error.
    pub async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        self.call_with_query(method, segments, &[], body).await
    }

    /// [`Api::call`] with query parameters (pgplane's extensions: `dry_run`, `reassign_to`, ...).
    pub async fn call_with_query(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Value, ApiError> {
        let url = self.url(segments);
        let mut request = self
            .http
            .request(method.clone(), &url)
            .query(query)
            .bearer_auth(&self.token)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| ApiError::Unreachable {
            method: method.clone(),
            url: url.clone(),
            base: self.base.clone(),
            cause: root_cause(&e),
        })?;
        read_answer(method, url, response).await
    }

    /// Sends a request and returns the object under `envelope` in its answer, as in
    /// `{"user": {...}}` or `{"users": [...]}`.
    pub async fn fetch(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
        envelope: &str,
    ) -> Result<Value, ApiError> {
        let mut answer = self.call(method.clone(), segments, body).await?;
        match answer.get_mut(envelope) {
            Some(inner) => Ok(inner.take()),
            None => Err(ApiError::Unexpected {
                method,
                url: self.url(segments),
                what: format!("no {envelope:?} field"),
            }),
        }
    }
}

/// Turns an answer into its JSON body, or into the error it reports.
async fn read_answer(method: Method, url: String, response: Response) -> Result<Value, ApiError> {
    let status = response.status();
    let header_request_id =
        response.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = response.bytes().await.map_err(|e| ApiError::Unexpected {
        method: method.clone(),
        url: url.clone(),
        what: format!("{status}, reading the body: {}", root_cause(&e)),
    })?;
    let json =
        if bytes.is_empty() { Some(Value::Null) } else { serde_json::from_slice::<Value>(&bytes).ok() };
    if status.is_success() {
        return json.ok_or_else(|| ApiError::Unexpected {
            method,
            url,
            what: format!("{status} with a body that is not JSON"),
        });
    }
    let field =
        |name: &str| json.as_ref().and_then(|j| j.get(name)).and_then(Value::as_str).map(str::to_string);
    let message = field("message")
        .or_else(|| quote_body(&bytes))
        .unwrap_or_else(|| status.canonical_reason().unwrap_or("error").to_string());
    Err(ApiError::Status {
        method,
        url,
        status: status.as_u16(),
        request_id: field("request_id").or(header_request_id),
        message,
    })
}

/// A non-JSON error body (from a proxy, say) as one short line, or None when it is empty.
fn quote_body(bytes: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(bytes);
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if line.is_empty() {
        return None;
    }
    Some(match line.char_indices().nth(MAX_QUOTED_BODY) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    })
}

/// The innermost cause of an error ("Connection refused (os error 111)"), which says more
/// than reqwest's "error sending request".
fn root_cause(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return "timed out".into();
    }
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_http_to_another_host_exposes_the_token() {
        let exposes = |url: &str| exposes_token(&Url::parse(url).unwrap());
        for local in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://[::1]:8080/",
            "http://localhost:8080",
            "http://LOCALHOST",
        ] {
            assert!(!exposes(local), "{local}");
        }
        for remote in [
            "http://10.0.0.5:8080",
            "http://pgplane.example.com",
            "http://[2001:db8::1]/",
            "http://localhost.example.com",
        ] {
            assert!(exposes(remote), "{remote}");
        }
        for secure in ["https://pgplane.example.com", "https://10.0.0.5:8443"] {
            assert!(!exposes(secure), "{secure}");
        }
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        let api = Api::new("http://127.0.0.1:8080/", "t".into()).unwrap();
        assert_eq!(
            api.url(&["databases", "c1", "users", "a b/c?d%e'\"ü"]),
            "http://127.0.0.1:8080/v2/databases/c1/users/a%20b%2Fc%3Fd%25e%27%22%C3%BC"
        );
        assert_eq!(api.url(&["databases"]), "http://127.0.0.1:8080/v2/databases");
    }

    #[test]
    fn api_errors_read_like_doctl() {
        let error = ApiError::Status {
            method: Method::GET,
            url: "http://h/v2/databases/x".into(),
            status: 404,
            request_id: Some("r-1".into()),
            message: "not found".into(),
        };
        assert_eq!(error.to_string(), "GET http://h/v2/databases/x: 404 (request \"r-1\") not found");
    }

    #[test]
    fn only_http_urls_with_a_host_are_accepted() {
        assert!(Api::new("ftp://h", "t".into()).is_err());
        assert!(Api::new("127.0.0.1:8080", "t".into()).is_err());
        assert!(Api::new("https://pgplane.example", "t".into()).is_ok());
    }

    #[test]
    fn long_error_bodies_are_cut_to_one_line() {
        assert_eq!(quote_body(b"  \n "), None);
        assert_eq!(quote_body(b"bad\ngateway").as_deref(), Some("bad gateway"));
        let long = "x".repeat(500);
        assert_eq!(quote_body(long.as_bytes()).unwrap().chars().count(), MAX_QUOTED_BODY + 1);
    }
}
