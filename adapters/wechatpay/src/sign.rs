//! The byte layouts WeChat Pay API v3 signs (china-wallets.md B.2, B.3, B.9).
//!
//! Every message is a sequence of lines, each terminated by `\n` (never `\r\n`), the last
//! line included. The functions here only build and parse text; keys live in the caller.

/// The signature scheme named in `Authorization` and `Wechatpay-Signature-Type`.
pub const SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// WeChat Pay sends deliberately unverifiable probe notifications whose signature starts with
/// this; they must be refused (B.3).
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// Largest accepted difference between a signed timestamp and our clock, seconds (exclusive).
pub const MAX_SKEW_SECS: i64 = 300;

/// `METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n`: what a merchant signs for each request.
/// `canonical_url` is the path and query exactly as sent; `body` is empty for a GET.
pub fn request_message(
    method: &str,
    canonical_url: &str,
    timestamp: i64,
    nonce: &str,
    body: &str,
) -> String {
    format!("{method}\n{canonical_url}\n{timestamp}\n{nonce}\n{body}\n")
}

/// `TIMESTAMP\nNONCE\nBODY\n` over the raw body bytes: what WeChat Pay signs for each response
/// and notification.
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut message = Vec::with_capacity(timestamp.len() + nonce.len() + body.len() + 3);
    message.extend_from_slice(timestamp.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(nonce.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(body);
    message.push(b'\n');
    message
}

/// `appId\ntimeStamp\nnonceStr\npackage\n`: the JSAPI / mini-program client pay sign (B.9).
pub fn jsapi_message(app_id: &str, timestamp: &str, nonce: &str, package: &str) -> String {
    format!("{app_id}\n{timestamp}\n{nonce}\n{package}\n")
}

/// The `Authorization` header value, items in the order of the Go SDK.
pub fn authorization(
    mchid: &str,
    nonce: &str,
    timestamp: i64,
    serial_no: &str,
    signature: &str,
) -> String {
    format!(
        "{SCHEME} mchid=\"{mchid}\",nonce_str=\"{nonce}\",timestamp=\"{timestamp}\",serial_no=\"{serial_no}\",signature=\"{signature}\""
    )
}

/// The five items of an `Authorization` header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizationItems {
    /// `mchid`.
    pub mchid: String,
    /// `nonce_str`.
    pub nonce_str: String,
    /// `timestamp`, as written.
    pub timestamp: String,
    /// `serial_no` of the merchant certificate.
    pub serial_no: String,
    /// `signature`, base64.
    pub signature: String,
}

/// Parses an `Authorization` header whose items may come in any order (SDKs differ). Refuses
/// another scheme, unknown or repeated items, unquoted values and missing items.
pub fn parse_authorization(header: &str) -> Result<AuthorizationItems, &'static str> {
    let rest = header
        .strip_prefix(SCHEME)
        .and_then(|r| r.strip_prefix(' '))
        .ok_or("authorization scheme is not WECHATPAY2-SHA256-RSA2048")?;
    let mut items = AuthorizationItems::default();
    let mut seen = [false; 5];
    let mut remaining = rest.trim();
    while !remaining.is_empty() {
        let (key, after) = remaining
            .split_once('=')
            .ok_or("authorization item without '='")?;
        let after = after
            .strip_prefix('"')
            .ok_or("authorization value is not quoted")?;
        let (value, after) = after
            .split_once('"')
            .ok_or("authorization value is not closed")?;
        let (slot, index) = match key.trim() {
            "mchid" => (&mut items.mchid, 0),
            "nonce_str" => (&mut items.nonce_str, 1),
            "timestamp" => (&mut items.timestamp, 2),
            "serial_no" => (&mut items.serial_no, 3),
            "signature" => (&mut items.signature, 4),
            _ => return Err("unknown authorization item"),
        };
        let already = seen.get_mut(index).ok_or("unknown authorization item")?;
        if *already {
            return Err("repeated authorization item");
        }
        *already = true;
        value.clone_into(slot);
        remaining = after.trim_start();
        if let Some(next) = remaining.strip_prefix(',') {
            remaining = next.trim_start();
        } else if !remaining.is_empty() {
            return Err("authorization items must be separated by ','");
        }
    }
    if seen.iter().all(|s| *s) {
        Ok(items)
    } else {
        Err("authorization item missing")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_items_parse_in_any_order() {
        let go = authorization("1900000001", "N", 1624523846, "ABC", "c2ln");
        let java = "WECHATPAY2-SHA256-RSA2048 mchid=\"1900000001\",nonce_str=\"N\",signature=\"c2ln\",timestamp=\"1624523846\",serial_no=\"ABC\"";
        let axios = "WECHATPAY2-SHA256-RSA2048 mchid=\"1900000001\", serial_no=\"ABC\", timestamp=\"1624523846\", nonce_str=\"N\", signature=\"c2ln\"";
        let expected = parse_authorization(&go).unwrap();
        assert_eq!(expected.signature, "c2ln");
        assert_eq!(parse_authorization(java).unwrap(), expected);
        assert_eq!(parse_authorization(axios).unwrap(), expected);
    }

    #[test]
    fn malformed_authorization_is_refused() {
        for bad in [
            "",
            "Bearer x",
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1\"",
            "WECHATPAY2-SHA256-RSA2048 mchid=1,nonce_str=\"N\",timestamp=\"1\",serial_no=\"A\",signature=\"s\"",
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1\",mchid=\"1\",nonce_str=\"N\",timestamp=\"1\",serial_no=\"A\",signature=\"s\"",
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1\",nonce_str=\"N\",timestamp=\"1\",serial_no=\"A\",signature=\"s\",x=\"y\"",
            "WECHATPAY2-SHA256-RSA2048 mchid=\"1\" nonce_str=\"N\",timestamp=\"1\",serial_no=\"A\",signature=\"s\"",
        ] {
            assert!(parse_authorization(bad).is_err(), "{bad}");
        }
    }
}
