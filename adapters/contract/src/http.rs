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

/// A configured base URL (provider, webhook, Moongate's own public one) must be https, or
/// plain http only to a loopback host (a local sandbox): `localhost` or a loopback IP address,
/// never a name that merely starts with `127.`. It carries no user information (text before
/// an `@` would otherwise hide the real host), no query string and no fragment. Parsed with a
/// real URL parser (WHATWG rules, as browsers and HTTP clients read it).
pub fn check_base_url(text: &str) -> Result<(), String> {
    let parsed = url::Url::parse(text).map_err(|e| format!("is not a URL ({e})"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("must not carry user information (`user@`)".to_owned());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("must not carry a query string or fragment".to_owned());
    }
    match parsed.scheme() {
        "https" if parsed.host().is_some() => Ok(()),
        "https" => Err("has no host".to_owned()),
        "http" if is_loopback(&parsed) => Ok(()),
        "http" => {
            Err("must be https (plain http is allowed only for a loopback sandbox)".to_owned())
        }
        _ => Err("must be an https URL".to_owned()),
    }
}

/// True when a URL's host is `localhost` or a loopback IP address.
pub fn is_loopback(parsed: &url::Url) -> bool {
    match parsed.host() {
        // Schemes the URL standard does not know (`postgres://`) keep their host as text, IP
        // literals included.
        Some(url::Host::Domain(name)) => {
            name.eq_ignore_ascii_case("localhost")
                || name
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::check_base_url;

    #[test]
    fn https_anywhere_http_only_to_loopback() {
        for good in [
            "https://openapi.alipay.com/gateway.do",
            "https://api.mch.weixin.qq.com",
            "http://127.0.0.1:8090/gateway.do",
            "http://127.1.2.3:8090",
            "http://localhost:1/gateway.do",
            "http://[::1]:1/gateway.do",
        ] {
            assert_eq!(check_base_url(good), Ok(()), "{good}");
        }
        for bad in [
            // Seen in review: the host is what follows the `@`.
            "http://127.0.0.1@example.com/gateway.do",
            "http://127.0.0.1:1@127.0.0.1:18203/gateway.do",
            "https://user:secret@openapi.alipay.com/gateway.do",
            // A name that starts with 127. is not a loopback address.
            "http://127.evil.example/gateway.do",
            "http://localhost.evil.example/",
            "http://openapi.alipay.com/gateway.do",
            "https://x/gateway.do?charset=utf-8",
            "https://x/#top",
            "ftp://x",
            "https://",
            "gateway.do",
        ] {
            assert!(check_base_url(bad).is_err(), "{bad} was accepted");
        }
    }
}
