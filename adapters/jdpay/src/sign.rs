//! JD's sign over an XML message: the lowercase SHA-256 hex of the XML with its
//! `<sign>…</sign>` element cut out exactly (the declaration and every byte of whitespace
//! kept), as the payload of a PKCS#1 type-1 block under the signer's RSA key, base64.

use base64::Engine;
use moongate_contract::crypto::KeyError;
use moongate_contract::rsa_raw::{TypeOneSigner, TypeOneVerifier};
use sha2::{Digest, Sha256};

/// The XML without its `<sign>` element, and the element's value; `None` when there is not
/// exactly one.
pub fn split_sign(xml: &str) -> Option<(String, &str)> {
    let start = xml.find("<sign>")?;
    let value_start = start + "<sign>".len();
    let value_end = value_start + xml.get(value_start..)?.find("</sign>")?;
    let end = value_end + "</sign>".len();
    let rest = xml.get(end..)?;
    if rest.contains("<sign>") || xml.get(..start)?.contains("<sign>") {
        return None;
    }
    let mut content = String::with_capacity(xml.len());
    content.push_str(xml.get(..start)?);
    content.push_str(rest);
    Some((content, xml.get(value_start..value_end)?))
}

/// The payload a sign covers: SHA-256 of `content`, lowercase hex, as ASCII bytes.
pub fn payload(content: &str) -> String {
    hex::encode(Sha256::digest(content.as_bytes()))
}

/// True when `xml` carries one `<sign>` that `key` made over the rest of it.
pub fn verify_xml(key: &TypeOneVerifier, xml: &str) -> bool {
    let Some((content, sign)) = split_sign(xml) else {
        return false;
    };
    let compact: String = sign.split_whitespace().collect();
    let Ok(signature) = base64::engine::general_purpose::STANDARD.decode(compact) else {
        return false;
    };
    key.verify(payload(&content).as_bytes(), &signature)
}

/// The sign of `content` (an XML message without its `<sign>` element), base64.
pub fn sign(key: &TypeOneSigner, content: &str) -> Result<String, KeyError> {
    let signature = key.sign(payload(content).as_bytes())?;
    Ok(base64::engine::general_purpose::STANDARD.encode(signature))
}
