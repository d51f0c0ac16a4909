//! The signing rule of `signMethod=01`: every non-empty field but `signature` (`certId`,
//! `signMethod` and, in answers, `signPubKeyCert` included), sorted by key, joined as
//! `k=v&k=v` without any encoding; the lowercase hex of its SHA-256 is what SHA256withRSA
//! signs (so the string is hashed twice), and the signature is sent in base64.

use moongate_contract::crypto::{KeyError, RsaSigner, RsaVerifier};

/// The string a message signs.
pub fn sign_string<'a>(fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut fields: Vec<(&str, &str)> = fields
        .into_iter()
        .filter(|(key, value)| *key != "signature" && !value.is_empty())
        .collect();
    fields.sort_unstable();
    moongate_contract::crypto::join_pairs(fields)
}

/// Lowercase hex of the SHA-256 of the sign string: the bytes the RSA signature covers.
pub fn digest_hex(sign_string: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        sign_string.as_bytes(),
    ))
}

/// The `signature` of a message's fields.
pub fn signature<'a>(
    signer: &RsaSigner,
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<String, KeyError> {
    signer.sign_base64(digest_hex(&sign_string(fields)).as_bytes())
}

/// Whether `signature` (base64) signs the fields with the key of `verifier`.
pub fn verifies<'a>(
    verifier: &RsaVerifier,
    fields: impl IntoIterator<Item = (&'a str, &'a str)>,
    signature: &str,
) -> bool {
    verifier.verify_base64(digest_hex(&sign_string(fields)).as_bytes(), signature)
}
