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
        _ => Err("must be an https URL (or plain http to a loopback sandbox)".to_owned()),
    }
}

/// Checks a download link a provider handed out (a statement file) before anything is fetched
/// from it: it must be on one of the provider's own domains (`domains`: a host equal to one
/// of them or under it), and is then always fetched over https, a plain `http://` link being
/// upgraded; or on the origin (scheme, host and port) of the account's configured gateway,
/// which covers a local sandbox. User information is refused, as in [`check_base_url`].
/// Returns the URL to fetch.
pub fn check_download_url(text: &str, domains: &[&str], gateway: &str) -> Result<String, String> {
    let mut parsed = url::Url::parse(text).map_err(|e| format!("is not a URL ({e})"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("carries user information (`user@`)".to_owned());
    }
    if !matches!(parsed.scheme(), "https" | "http") {
        return Err("is not an http(s) URL".to_owned());
    }
    if let Ok(gateway) = url::Url::parse(gateway)
        && gateway.origin() == parsed.origin()
    {
        return Ok(parsed.into());
    }
    let own = match parsed.host() {
        Some(url::Host::Domain(host)) => {
            let host = host.to_ascii_lowercase();
            domains
                .iter()
                .any(|domain| host == *domain || host.ends_with(&format!(".{domain}")))
        }
        _ => false,
    };
    if !own {
        return Err(format!(
            "is not on the provider's own hosts ({})",
            domains.join(", ")
        ));
    }
    if parsed.scheme() == "http" {
        parsed
            .set_scheme("https")
            .map_err(|()| "cannot be fetched over https".to_owned())?;
        if parsed.port() == Some(80) {
            let _ = parsed.set_port(None);
        }
    }
    Ok(parsed.into())
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
    use super::{check_base_url, check_download_url};

    #[test]
    fn downloads_only_from_the_provider_over_https() {
        let domains = ["alipay.com", "alipaydev.com"];
        let gateway = "https://openapi.alipay.com/gateway.do";
        for (link, fetched) in [
            (
                "http://dwbillcenter.alipay.com/downloadBillFile.resource?token=a",
                "https://dwbillcenter.alipay.com/downloadBillFile.resource?token=a",
            ),
            (
                "https://dwbillcenter.alipay.com/d?x=1",
                "https://dwbillcenter.alipay.com/d?x=1",
            ),
            ("http://ALIPAY.com:80/d", "https://alipay.com/d"),
            (
                "http://dwbillcenter.alipaydev.com/d",
                "https://dwbillcenter.alipaydev.com/d",
            ),
        ] {
            assert_eq!(
                check_download_url(link, &domains, gateway).as_deref(),
                Ok(fetched),
                "{link}"
            );
        }
        // A local sandbox: the gateway's own origin, scheme kept.
        assert_eq!(
            check_download_url(
                "http://127.0.0.1:9001/downloadBillFile.resource?t=1",
                &domains,
                "http://127.0.0.1:9001/gateway.do"
            )
            .as_deref(),
            Ok("http://127.0.0.1:9001/downloadBillFile.resource?t=1")
        );
        for bad in [
            "http://evil.example/bill.zip",
            "https://alipay.com.evil.example/d",
            "https://evilalipay.com/d",
            "http://dwbillcenter.alipay.com@evil.example/d",
            "https://user:pw@dwbillcenter.alipay.com/d",
            "ftp://dwbillcenter.alipay.com/d",
            "http://127.0.0.1:9002/d",
            "http://127.0.0.1/d",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(
                check_download_url(bad, &domains, "http://127.0.0.1:9001/gateway.do").is_err(),
                "{bad} was accepted"
            );
        }
    }

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
