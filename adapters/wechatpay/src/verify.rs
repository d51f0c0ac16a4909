//! Verifying what WeChat Pay signed: responses and notifications (china-wallets.md B.3).
//!
//! The key is chosen by `Wechatpay-Serial`: the WeChat Pay public key when the serial is its
//! `PUB_KEY_ID_…`, otherwise the platform certificate with that serial. A merchant migrating
//! from certificates to the public key configures both ("mixed mode") and either verifies.

use std::collections::HashMap;

use moongate_contract::crypto::RsaVerifier;
use time::OffsetDateTime;

use crate::sign::{MAX_SKEW_SECS, SCHEME, SIGNTEST_PREFIX, response_message};

/// Why a signed answer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A `Wechatpay-*` header is missing.
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    /// A `WECHATPAY/SIGNTEST/` probe.
    #[error("signature probe")]
    Probe,
    /// The timestamp is not a number or is 5 minutes or more away from our clock.
    #[error("timestamp outside the 5-minute window")]
    Stale,
    /// No configured key has this serial.
    #[error("no key for serial {0}")]
    UnknownSerial(String),
    /// Another signature type than `WECHATPAY2-SHA256-RSA2048`.
    #[error("unsupported signature type")]
    SignatureType,
    /// The signature does not match.
    #[error("signature does not verify")]
    Mismatch,
}

/// The keys that can verify WeChat Pay's signatures for one merchant.
#[derive(Clone, Debug, Default)]
pub struct PlatformKeys {
    public_key: Option<(String, RsaVerifier)>,
    certificates: HashMap<String, RsaVerifier>,
}

impl PlatformKeys {
    /// No keys yet.
    pub fn new() -> PlatformKeys {
        PlatformKeys::default()
    }

    /// Adds the WeChat Pay public key with its id (`PUB_KEY_ID_…`).
    pub fn with_public_key(mut self, id: &str, key: RsaVerifier) -> PlatformKeys {
        self.public_key = Some((id.to_owned(), key));
        self
    }

    /// Adds a platform certificate's key under its serial (hex, case-insensitive).
    pub fn with_certificate(mut self, serial_hex: &str, key: RsaVerifier) -> PlatformKeys {
        self.certificates
            .insert(serial_hex.to_ascii_uppercase(), key);
        self
    }

    /// True when no key is configured.
    pub fn is_empty(&self) -> bool {
        self.public_key.is_none() && self.certificates.is_empty()
    }

    /// The serial requests should carry in `Wechatpay-Serial`: the public key id when there is
    /// one (WeChat's own samples do this), else a certificate serial.
    pub fn preferred_serial(&self) -> Option<String> {
        match &self.public_key {
            Some((id, _)) => Some(id.clone()),
            None => {
                let mut serials: Vec<&String> = self.certificates.keys().collect();
                serials.sort();
                serials.first().map(|s| (*s).clone())
            }
        }
    }

    fn key_for(&self, serial: &str) -> Option<&RsaVerifier> {
        match &self.public_key {
            Some((id, key)) if id == serial => Some(key),
            _ => self.certificates.get(&serial.to_ascii_uppercase()),
        }
    }

    /// Verifies headers + raw body: probe refused first, then the 5-minute window, then the
    /// key by serial, then the signature over `timestamp\nnonce\nbody\n`.
    pub fn verify(
        &self,
        header: impl Fn(&str) -> Option<String>,
        body: &[u8],
        now: OffsetDateTime,
    ) -> Result<(), VerifyError> {
        let get = |name: &'static str| header(name).ok_or(VerifyError::MissingHeader(name));
        let signature = get("wechatpay-signature")?;
        if signature.starts_with(SIGNTEST_PREFIX) {
            return Err(VerifyError::Probe);
        }
        let timestamp = get("wechatpay-timestamp")?;
        let nonce = get("wechatpay-nonce")?;
        let serial = get("wechatpay-serial")?;
        if let Some(kind) = header("wechatpay-signature-type")
            && kind != SCHEME
        {
            return Err(VerifyError::SignatureType);
        }
        let sent: i64 = timestamp.trim().parse().map_err(|_| VerifyError::Stale)?;
        if (now.unix_timestamp() - sent).abs() >= MAX_SKEW_SECS {
            return Err(VerifyError::Stale);
        }
        let key = self
            .key_for(&serial)
            .ok_or_else(|| VerifyError::UnknownSerial(serial.clone()))?;
        if key.verify_base64(&response_message(&timestamp, &nonce, body), &signature) {
            Ok(())
        } else {
            Err(VerifyError::Mismatch)
        }
    }
}
