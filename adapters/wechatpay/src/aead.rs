//! `AEAD_AES_256_GCM` for notification resources and platform certificates (china-wallets.md
//! B.6): key = the APIv3 key's bytes, nonce = the 12 `nonce` characters, AAD =
//! `associated_data`, input = base64(ciphertext ‖ 16-byte tag). On `ring`, like our RSA.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::aead::{AES_128_GCM, AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

/// Why a resource did not decrypt. Deliberately uninformative: wrong key and tampering look
/// the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("resource does not decrypt")]
pub struct DecryptError;

fn key(api_v3_key: &[u8]) -> Result<LessSafeKey, DecryptError> {
    // Production APIv3 keys are 32 bytes (AES-256). The wechatpay-go notification test
    // vector uses a 16-byte key, which Go's AES-GCM treats as AES-128; accept that too so the
    // vector can be checked. Configuration insists on 32 bytes.
    let algorithm = match api_v3_key.len() {
        32 => &AES_256_GCM,
        16 => &AES_128_GCM,
        _ => return Err(DecryptError),
    };
    UnboundKey::new(algorithm, api_v3_key)
        .map(LessSafeKey::new)
        .map_err(|_| DecryptError)
}

fn nonce(text: &str) -> Result<Nonce, DecryptError> {
    let bytes: [u8; NONCE_LEN] = text.as_bytes().try_into().map_err(|_| DecryptError)?;
    Ok(Nonce::assume_unique_for_key(bytes))
}

/// Decrypts a resource into its plaintext bytes.
pub fn decrypt(
    api_v3_key: &[u8],
    nonce_text: &str,
    associated_data: &str,
    ciphertext_base64: &str,
) -> Result<Vec<u8>, DecryptError> {
    let key = key(api_v3_key)?;
    let mut data = STANDARD
        .decode(ciphertext_base64.as_bytes())
        .map_err(|_| DecryptError)?;
    let plain = key
        .open_in_place(
            nonce(nonce_text)?,
            Aad::from(associated_data.as_bytes()),
            &mut data,
        )
        .map_err(|_| DecryptError)?;
    Ok(plain.to_vec())
}

/// Encrypts a resource (the sandbox's side). `nonce_text` must be 12 bytes and never reused
/// with the same key.
pub fn encrypt(
    api_v3_key: &[u8],
    nonce_text: &str,
    associated_data: &str,
    plaintext: &[u8],
) -> Result<String, DecryptError> {
    let key = key(api_v3_key)?;
    let mut data = plaintext.to_vec();
    key.seal_in_place_append_tag(
        nonce(nonce_text)?,
        Aad::from(associated_data.as_bytes()),
        &mut data,
    )
    .map_err(|_| DecryptError)?;
    Ok(STANDARD.encode(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let key = b"0123456789abcdef0123456789abcdef";
        let sealed = encrypt(key, "abcdefghijkl", "transaction", b"{\"a\":1}").unwrap();
        assert_eq!(
            decrypt(key, "abcdefghijkl", "transaction", &sealed).unwrap(),
            b"{\"a\":1}"
        );
        assert!(decrypt(key, "abcdefghijkl", "refund", &sealed).is_err());
        assert!(decrypt(key, "abcdefghijkX", "transaction", &sealed).is_err());
        assert!(
            decrypt(
                b"0123456789abcdef0123456789abcdeX",
                "abcdefghijkl",
                "transaction",
                &sealed
            )
            .is_err()
        );
        assert!(decrypt(key, "short", "transaction", &sealed).is_err());
        assert!(decrypt(b"short key", "abcdefghijkl", "transaction", &sealed).is_err());
        assert!(decrypt(key, "abcdefghijkl", "transaction", "!!").is_err());
    }
}
