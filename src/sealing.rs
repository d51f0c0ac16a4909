//! Secrets the ledger keeps (merchants' authorisation tokens) are sealed: AES-256-GCM under a
//! key derived from the server key (`server.cashier_key`, or the key file beside an SQLite
//! ledger; [`crate::cashier::key::CashierKey::derive`]), with what the secret belongs to as
//! associated data, so a sealed value read from the ledger or a backup is useless without the
//! key and cannot be moved to another row. Sealed text: `v1.` + base64url(nonce ‖ ciphertext ‖
//! tag).

use base64::Engine;
use moongate_contract::Secret;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use crate::cashier::key::CashierKey;

const PREFIX: &str = "v1.";

/// Why a value could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The system's random source failed.
    #[error("no randomness for a nonce")]
    Random,
    /// Not sealed text, sealed under another key, for another row, or altered.
    #[error("sealed value does not open (another key, another row, or altered)")]
    Unopenable,
}

/// The key the ledger's secrets are sealed with.
pub struct SealingKey {
    /// `None` only if ring refused a 32-byte AES-256 key, which it does not: then nothing
    /// seals or opens.
    key: Option<LessSafeKey>,
    random: SystemRandom,
}

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(…)")
    }
}

impl SealingKey {
    /// The sealing key of a server key.
    pub fn derive(root: &CashierKey) -> SealingKey {
        let bytes = root.derive(b"moongate ledger secrets v1\n");
        SealingKey {
            key: UnboundKey::new(&AES_256_GCM, bytes.expose())
                .map(LessSafeKey::new)
                .ok(),
            random: SystemRandom::new(),
        }
    }

    /// Seals `plain` for `context` (what it belongs to).
    pub fn seal(&self, plain: &Secret<String>, context: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        self.random
            .fill(&mut nonce)
            .map_err(|_| SealError::Random)?;
        let key = self.key.as_ref().ok_or(SealError::Random)?;
        let mut data = plain.expose().as_bytes().to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut data,
        )
        .map_err(|_| SealError::Random)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(out)
        ))
    }

    /// Opens what [`SealingKey::seal`] sealed for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> Result<Secret<String>, SealError> {
        let body = sealed.strip_prefix(PREFIX).ok_or(SealError::Unopenable)?;
        let mut bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| SealError::Unopenable)?;
        if bytes.len() < NONCE_LEN {
            return Err(SealError::Unopenable);
        }
        let mut data = bytes.split_off(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(&bytes).map_err(|_| SealError::Unopenable)?;
        let key = self.key.as_ref().ok_or(SealError::Unopenable)?;
        let plain = key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| SealError::Unopenable)?;
        String::from_utf8(plain.to_vec())
            .map(Secret::new)
            .map_err(|_| SealError::Unopenable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = SealingKey::derive(&CashierKey::new(&[7; 32]));
        let token = Secret::new("202612BBsecret".to_owned());
        let sealed = key.seal(&token, "m1/alipay").unwrap();
        assert!(
            sealed.starts_with("v1.") && !sealed.contains("202612BB"),
            "{sealed}"
        );
        assert_eq!(
            key.open(&sealed, "m1/alipay").unwrap().expose(),
            "202612BBsecret"
        );
        // Another row, another key, an altered byte: refused.
        assert_eq!(
            key.open(&sealed, "m2/alipay").unwrap_err(),
            SealError::Unopenable
        );
        let other = SealingKey::derive(&CashierKey::new(&[8; 32]));
        assert_eq!(
            other.open(&sealed, "m1/alipay").unwrap_err(),
            SealError::Unopenable
        );
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 2;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert_eq!(
            key.open(&altered, "m1/alipay").unwrap_err(),
            SealError::Unopenable
        );
        // Two seals of one value differ (a fresh nonce each).
        assert_ne!(key.seal(&token, "m1/alipay").unwrap(), sealed);
    }
}
