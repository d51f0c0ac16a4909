//! WeChat Pay API v2, only as far as payment codes need it (`/pay/micropay`): flat XML
//! bodies and the HMAC-SHA256 sign (china-wallets.md B.8).
//!
//! The XML reader accepts exactly what v2 sends: one `<xml>` root holding flat elements whose
//! text is plain or CDATA. No DTDs, no attributes, no nesting, no repeated names, so there is
//! nothing to expand and nothing ambiguous to sign.

use std::collections::BTreeMap;

use ring::hmac;

/// Renders a flat `<xml>` body; every value in CDATA (a `]]>` inside a value is split).
pub fn to_xml<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut out = String::from("<xml>");
    for (key, value) in fields {
        out.push('<');
        out.push_str(key);
        out.push_str("><![CDATA[");
        out.push_str(&value.replace("]]>", "]]]]><![CDATA[>"));
        out.push_str("]]></");
        out.push_str(key);
        out.push('>');
    }
    out.push_str("</xml>");
    out
}

/// Why a v2 body could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed v2 XML: {0}")]
pub struct XmlError(pub &'static str);

fn unescape(text: &str) -> Result<String, XmlError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(rest.get(..at).ok_or(XmlError("entity"))?);
        let tail = rest.get(at..).ok_or(XmlError("entity"))?;
        let (entity, after) = tail
            .split_once(';')
            .ok_or(XmlError("unterminated entity"))?;
        out.push(match entity {
            "&lt" => '<',
            "&gt" => '>',
            "&amp" => '&',
            "&quot" => '"',
            "&apos" => '\'',
            _ => return Err(XmlError("unknown entity")),
        });
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// Parses a flat `<xml>` body into its fields.
pub fn from_xml(body: &[u8]) -> Result<BTreeMap<String, String>, XmlError> {
    let text = std::str::from_utf8(body).map_err(|_| XmlError("not UTF-8"))?;
    let mut rest = text.trim();
    if let Some(declared) = rest.strip_prefix("<?xml") {
        let (_, after) = declared
            .split_once("?>")
            .ok_or(XmlError("unterminated declaration"))?;
        rest = after.trim_start();
    }
    if rest.contains("<!DOCTYPE") || rest.contains("<!ENTITY") {
        return Err(XmlError("DTDs are not accepted"));
    }
    let mut rest = rest
        .strip_prefix("<xml>")
        .and_then(|r| r.strip_suffix("</xml>"))
        .ok_or(XmlError("root element must be <xml>"))?
        .trim();
    let mut fields = BTreeMap::new();
    while !rest.is_empty() {
        let open = rest
            .strip_prefix('<')
            .ok_or(XmlError("text outside elements"))?;
        let (name, after) = open.split_once('>').ok_or(XmlError("unterminated tag"))?;
        let valid_name =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_name {
            return Err(XmlError("invalid element name"));
        }
        let close = format!("</{name}>");
        let mut value = String::new();
        let mut inner = after;
        loop {
            if let Some(cdata) = inner.strip_prefix("<![CDATA[") {
                let (content, after) = cdata
                    .split_once("]]>")
                    .ok_or(XmlError("unterminated CDATA"))?;
                value.push_str(content);
                inner = after;
            } else if inner.starts_with(close.as_str()) {
                break;
            } else {
                let end = inner.find('<').ok_or(XmlError("unterminated element"))?;
                value.push_str(&unescape(inner.get(..end).ok_or(XmlError("element"))?)?);
                inner = inner.get(end..).ok_or(XmlError("element"))?;
                if !inner.starts_with(close.as_str()) && !inner.starts_with("<![CDATA[") {
                    return Err(XmlError("nested elements are not accepted"));
                }
            }
        }
        rest = inner
            .strip_prefix(close.as_str())
            .ok_or(XmlError("unterminated element"))?
            .trim_start();
        if fields.insert(name.to_owned(), value).is_some() {
            return Err(XmlError("repeated element"));
        }
    }
    Ok(fields)
}

/// `k=v&…` of every non-empty field except `sign`, sorted by name (ASCII), then `&key=…`.
pub fn sign_string(fields: &BTreeMap<String, String>, api_key: &str) -> String {
    let mut out = String::new();
    for (key, value) in fields {
        if key == "sign" || value.is_empty() {
            continue;
        }
        out.push_str(key);
        out.push('=');
        out.push_str(value);
        out.push('&');
    }
    out.push_str("key=");
    out.push_str(api_key);
    out
}

/// `HMAC-SHA256(key = API key, data = sign string)` as upper-case hex.
pub fn hmac_sha256_sign(fields: &BTreeMap<String, String>, api_key: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, api_key.as_bytes());
    let tag = hmac::sign(&key, sign_string(fields, api_key).as_bytes());
    tag.as_ref().iter().map(|b| format!("{b:02X}")).collect()
}

/// Checks a received `sign` in constant time. Only HMAC-SHA256 is accepted: Moongate always
/// asks for it, and MD5 signs are not worth trusting.
pub fn verify_hmac_sha256(fields: &BTreeMap<String, String>, api_key: &str) -> bool {
    let Some(sign) = fields.get("sign") else {
        return false;
    };
    if fields.get("sign_type").is_some_and(|t| t != "HMAC-SHA256") {
        return false;
    }
    let Some(received) = decode_hex(sign) else {
        return false;
    };
    let key = hmac::Key::new(hmac::HMAC_SHA256, api_key.as_bytes());
    hmac::verify(&key, sign_string(fields, api_key).as_bytes(), &received).is_ok()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_round_trip() {
        let xml = to_xml([("a", "1"), ("b", "x]]>y<z>&")]);
        let fields = from_xml(xml.as_bytes()).unwrap();
        assert_eq!(fields.get("a").map(String::as_str), Some("1"));
        assert_eq!(fields.get("b").map(String::as_str), Some("x]]>y<z>&"));
        let plain =
            from_xml(b"<?xml version=\"1.0\"?>\n<xml>\n <a>1 &amp; 2</a>\n <b></b></xml>").unwrap();
        assert_eq!(plain.get("a").map(String::as_str), Some("1 & 2"));
        assert_eq!(plain.get("b").map(String::as_str), Some(""));
    }

    #[test]
    fn hostile_xml_is_refused() {
        for bad in [
            &b"<!DOCTYPE x [<!ENTITY a \"b\">]><xml><a>&a;</a></xml>"[..],
            b"<xml><a><b>1</b></a></xml>",
            b"<xml><a>1</a><a>2</a></xml>",
            b"<root><a>1</a></root>",
            b"<xml><a>1</xml>",
            b"<xml><a x=\"1\">1</a></xml>",
            b"<xml>text</xml>",
            b"<xml><a><![CDATA[1</a></xml>",
            b"\xff",
        ] {
            assert!(from_xml(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}
