//! WeChat Pay rules: the API v3 signature messages and `Authorization` header (B.2, B.3), the
//! AES-256-GCM resource encryption of notifications and certificates (B.6), RFC 3339 Beijing
//! times, and v2's flat XML with its HMAC-SHA256 sign (B.8).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hmac;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

/// The v3 signature scheme, in `Authorization` and `Wechatpay-Signature-Type`.
pub const SCHEME: &str = "WECHATPAY2-SHA256-RSA2048";

/// What WeChat Pay puts in front of a probe notification's signature (B.3), which a merchant
/// must reject.
pub const SIGNTEST_PREFIX: &str = "WECHATPAY/SIGNTEST/";

/// How far a request's timestamp may be from WeChat Pay's clock: five minutes.
pub const MAX_SKEW_SECS: i64 = 300;

/// The five-line message a merchant signs: method, path and query, timestamp, nonce, body,
/// each line ending in `\n` (an empty body still has its line).
pub fn request_message(
    method: &str,
    path_and_query: &str,
    timestamp: &str,
    nonce: &str,
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 96);
    for part in [
        method.as_bytes(),
        path_and_query.as_bytes(),
        timestamp.as_bytes(),
        nonce.as_bytes(),
        body,
    ] {
        out.extend_from_slice(part);
        out.push(b'\n');
    }
    out
}

/// The three-line message WeChat Pay signs on answers and notifications: timestamp, nonce,
/// body, each line ending in `\n`.
pub fn response_message(timestamp: &str, nonce: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 64);
    for part in [timestamp.as_bytes(), nonce.as_bytes(), body] {
        out.extend_from_slice(part);
        out.push(b'\n');
    }
    out
}

/// The five items of a v3 `Authorization` header.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Authorization {
    /// `mchid`.
    pub mchid: String,
    /// `nonce_str`.
    pub nonce_str: String,
    /// `timestamp`, as written.
    pub timestamp: String,
    /// `serial_no` of the merchant's certificate.
    pub serial_no: String,
    /// `signature`, base64.
    pub signature: String,
}

/// Reads `WECHATPAY2-SHA256-RSA2048 k="v",…` with its five items in any order (SDKs differ,
/// B.2). Another scheme, an unknown, repeated, missing or unquoted item is refused with the
/// reason WeChat Pay would give.
pub fn parse_authorization(header: &str) -> Result<Authorization, &'static str> {
    let Some(items) = header
        .strip_prefix(SCHEME)
        .and_then(|rest| rest.strip_prefix(' '))
    else {
        return Err("authorization scheme is not WECHATPAY2-SHA256-RSA2048");
    };
    let mut found: BTreeMap<&str, &str> = BTreeMap::new();
    let mut rest = items.trim();
    while !rest.is_empty() {
        let Some((name, tail)) = rest.split_once('=') else {
            return Err("authorization item without '='");
        };
        let Some(tail) = tail.strip_prefix('"') else {
            return Err("authorization value is not quoted");
        };
        let Some((value, tail)) = tail.split_once('"') else {
            return Err("authorization value is not closed");
        };
        let name = name.trim();
        if !["mchid", "nonce_str", "timestamp", "serial_no", "signature"].contains(&name) {
            return Err("unknown authorization item");
        }
        if found.insert(name, value).is_some() {
            return Err("repeated authorization item");
        }
        rest = tail.trim_start();
        rest = rest.strip_prefix(',').map_or(rest, str::trim_start);
    }
    let mut take = |name: &str| found.remove(name).map(str::to_owned);
    match (
        take("mchid"),
        take("nonce_str"),
        take("timestamp"),
        take("serial_no"),
        take("signature"),
    ) {
        (Some(mchid), Some(nonce_str), Some(timestamp), Some(serial_no), Some(signature)) => {
            Ok(Authorization {
                mchid,
                nonce_str,
                timestamp,
                serial_no,
                signature,
            })
        }
        _ => Err("authorization item missing"),
    }
}

/// Encrypts a notification or certificate resource with the merchant's APIv3 key:
/// AES-256-GCM, a 12-byte nonce, the tag appended, base64.
pub fn encrypt_resource(
    api_v3_key: &[u8],
    nonce: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> Option<String> {
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, api_v3_key).ok()?);
    let nonce = Nonce::try_assume_unique_for_key(nonce.as_bytes()).ok()?;
    let mut data = plaintext.to_vec();
    key.seal_in_place_append_tag(nonce, Aad::from(associated_data.as_bytes()), &mut data)
        .ok()?;
    Some(STANDARD.encode(data))
}

/// RFC 3339 in Beijing time, whole seconds (`2024-05-13T17:49:20+08:00`).
pub fn rfc3339_beijing(at: OffsetDateTime) -> Option<String> {
    let beijing = UtcOffset::from_hms(8, 0, 0).ok()?;
    at.to_offset(beijing)
        .replace_nanosecond(0)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// Renders a v2 body: one `<xml>` root of flat elements, every value in CDATA (a `]]>` inside
/// a value is split across two sections).
pub fn v2_xml<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("<xml>");
    for (name, value) in fields {
        let value = value.replace("]]>", "]]]]><![CDATA[>");
        out.push_str(&format!("<{name}><![CDATA[{value}]]></{name}>"));
    }
    out.push_str("</xml>");
    out
}

/// Reads a v2 body the way WeChat Pay writes and accepts it: an optional XML declaration, one
/// `<xml>` root holding flat elements with plain or CDATA text. A DTD, an attribute, a nested
/// or repeated element is refused (nothing to expand, nothing ambiguous to sign).
pub fn parse_v2_xml(body: &[u8]) -> Option<BTreeMap<String, String>> {
    let text = std::str::from_utf8(body).ok()?.trim();
    let text = match text.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>")?.1.trim_start(),
        None => text,
    };
    let mut rest = text.strip_prefix("<xml>")?.strip_suffix("</xml>")?.trim();
    let mut fields = BTreeMap::new();
    while !rest.is_empty() {
        let after_open = rest.strip_prefix('<')?;
        let (name, after_name) = after_open.split_once('>')?;
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            return None;
        }
        let close = format!("</{name}>");
        let (inner, after_close) = after_name.split_once(close.as_str())?;
        let value = if inner.starts_with("<![CDATA[") {
            let mut value = String::new();
            let mut part = inner;
            while let Some(section) = part.strip_prefix("<![CDATA[") {
                let (data, tail) = section.split_once("]]>")?;
                value.push_str(data);
                part = tail;
            }
            if !part.is_empty() {
                return None;
            }
            value
        } else if inner.contains('<') || inner.contains('&') {
            return None;
        } else {
            inner.to_owned()
        };
        if fields.insert(name.to_owned(), value).is_some() {
            return None;
        }
        rest = after_close.trim_start();
    }
    Some(fields)
}

/// v2's HMAC-SHA256 sign: non-empty fields except `sign`, sorted by name, `k=v` joined with
/// `&`, then `&key={API key}`; HMAC-SHA256 keyed with the API key, upper-case hex.
pub fn v2_sign(fields: &BTreeMap<String, String>, api_key: &str) -> String {
    let mut text = String::new();
    for (name, value) in fields {
        if name == "sign" || value.is_empty() {
            continue;
        }
        text.push_str(name);
        text.push('=');
        text.push_str(value);
        text.push('&');
    }
    text.push_str("key=");
    text.push_str(api_key);
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, api_key.as_bytes()),
        text.as_bytes(),
    );
    hex::encode_upper(tag.as_ref())
}

/// True when `fields` carry the right v2 HMAC-SHA256 `sign` (compared in constant time).
pub fn v2_sign_matches(fields: &BTreeMap<String, String>, api_key: &str) -> bool {
    let Some(given) = fields.get("sign") else {
        return false;
    };
    let expected = v2_sign(fields, api_key);
    use subtle::ConstantTimeEq;
    bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_items_come_in_any_order() {
        let header = "WECHATPAY2-SHA256-RSA2048 signature=\"c2ln\",timestamp=\"1624523846\", serial_no=\"ABC\",mchid=\"1900000001\",nonce_str=\"n1\"";
        let items = parse_authorization(header).unwrap_or_default();
        assert_eq!(items.mchid, "1900000001");
        assert_eq!(items.signature, "c2ln");
        assert_eq!(items.serial_no, "ABC");
        assert!(parse_authorization("WECHATPAY2-SHA256-RSA2048 mchid=\"1\"").is_err());
        assert!(parse_authorization("Bearer x").is_err());
        assert!(
            parse_authorization(
                "WECHATPAY2-SHA256-RSA2048 mchid=\"1\",mchid=\"2\",nonce_str=\"n\",timestamp=\"1\",serial_no=\"s\",signature=\"x\""
            )
            .is_err()
        );
    }

    #[test]
    fn v2_xml_round_trips_and_refuses_what_v2_never_sends() {
        let xml = v2_xml([("a", "1"), ("b", "x]]>y")]);
        let fields = parse_v2_xml(xml.as_bytes()).unwrap_or_default();
        assert_eq!(fields.get("b").map(String::as_str), Some("x]]>y"));
        assert!(parse_v2_xml(b"<!DOCTYPE x><xml></xml>").is_none());
        assert!(parse_v2_xml(b"<xml><a x=\"1\">1</a></xml>").is_none());
        assert!(parse_v2_xml(b"<xml><a>1</a><a>2</a></xml>").is_none());
        assert!(parse_v2_xml(b"<xml><a><b>1</b></a></xml>").is_none());
    }

    #[test]
    fn rfc3339_times_are_beijing_whole_seconds() {
        let at = time::macros::datetime!(2024-05-13 09:49:20.5 UTC);
        assert_eq!(
            rfc3339_beijing(at).as_deref(),
            Some("2024-05-13T17:49:20+08:00")
        );
    }
}
