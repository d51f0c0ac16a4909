//! The plain HTTP exchange an adapter prepares and later reads back.
//!
//! Adapters never open sockets. They describe a request with [`HttpRequest`]; the
//! gateway core sends it (TLS, timeouts, spans, limits live there) and hands the
//! [`HttpResponse`] back to the adapter's pure `parse_*` function.

use std::fmt;

use time::OffsetDateTime;

/// HTTP methods adapters use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpMethod {
    /// GET
    Get,
    /// POST
    Post,
}

impl HttpMethod {
    /// The method name on the wire.
    pub fn as_str(&self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
        }
    }
}

/// A request for the core to send.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method.
    pub method: HttpMethod,
    /// Absolute URL, query included.
    pub url: String,
    /// Header name/value pairs in the order to send them.
    pub headers: Vec<(String, String)>,
    /// Body bytes, exactly as signed.
    pub body: Vec<u8>,
}

impl fmt::Debug for HttpRequest {
    /// Prints the method, the URL without its query (which may carry signatures)
    /// and the header names only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = self.url.split('?').next().unwrap_or_default();
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("HttpRequest")
            .field("method", &self.method)
            .field("url", &path)
            .field("headers", &names)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// What the provider answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Header pairs, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// Raw body bytes; signatures are checked over these, never over a re-serialisation.
    pub body: Vec<u8>,
    /// When the answer arrived (providers that sign timestamps are checked against it).
    pub received_at: OffsetDateTime,
}

impl HttpResponse {
    /// First header with this (lower-case) name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// A provider base URL must be https, or plain http only to a loopback host (a local
/// sandbox), and carry no query string or fragment.
pub fn check_base_url(url: &str) -> Result<(), String> {
    if url.contains('?') || url.contains('#') {
        return Err("must not carry a query string or fragment".to_owned());
    }
    if let Some(rest) = url.strip_prefix("https://") {
        return if rest.is_empty() || rest.starts_with('/') {
            Err("has no host".to_owned())
        } else {
            Ok(())
        };
    }
    if let Some(rest) = url.strip_prefix("http://") {
        let host = rest.split(['/', ':']).next().unwrap_or_default();
        let loopback = host == "localhost" || host.starts_with("127.");
        let ipv6_loopback = rest.starts_with("[::1]");
        return if loopback || ipv6_loopback {
            Ok(())
        } else {
            Err("must be https (plain http is allowed only for a loopback sandbox)".to_owned())
        };
    }
    Err("must be an https URL".to_owned())
}
