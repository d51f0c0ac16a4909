//! Trust in the signing certificate an answer or notification carries (`signPubKeyCert`):
//! its key verifies the message only after the certificate is within its dates, chains through
//! the configured middle certificate to the configured root, and names UnionPay in its
//! subject (`CN` split on `@`, third part `中国银联股份有限公司`), as UnionPay's own SDK
//! requires. A self-signed, foreign, expired or wrongly chained certificate is refused.

use moongate_contract::crypto::KeyError;
use moongate_contract::x509::{ChainError, X509};

use crate::raw::field;
use crate::sign;

/// The company name UnionPay's signing certificates carry in their common name.
pub const UNIONPAY_NAME: &str = "中国银联股份有限公司";

/// Why a signed message is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No `signature` field.
    #[error("the message is not signed")]
    Unsigned,
    /// No `signPubKeyCert` field.
    #[error("the message carries no signing certificate")]
    NoCertificate,
    /// `signPubKeyCert` is not a certificate.
    #[error("the signing certificate does not parse: {0}")]
    Certificate(KeyError),
    /// The certificate does not chain to the configured root at this time.
    #[error("the signing certificate is not trusted: {0}")]
    Chain(ChainError),
    /// The certificate is not UnionPay's.
    #[error("the signing certificate is not UnionPay's (CN {0:?})")]
    NotUnionPay(String),
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
}

/// The configured middle and root certificates.
#[derive(Clone, Debug)]
pub struct Trust {
    middle: X509,
    root: X509,
}

impl Trust {
    /// From the PEM of UnionPay's middle (`acp_…_middle.cer`) and root (`acp_…_root.cer`)
    /// certificates.
    pub fn from_pem(middle: &str, root: &str) -> Result<Trust, KeyError> {
        Ok(Trust {
            middle: X509::from_pem(middle)?,
            root: X509::from_pem(root)?,
        })
    }

    /// From the parsed middle and root certificates.
    pub fn new(middle: X509, root: X509) -> Trust {
        Trust { middle, root }
    }

    /// Checks a message's signature with its inline certificate, trusted at `unix` seconds.
    pub fn verify(&self, fields: &[(&str, &str)], unix: i64) -> Result<(), VerifyError> {
        let signature = field(fields, "signature").ok_or(VerifyError::Unsigned)?;
        let pem = field(fields, "signPubKeyCert").ok_or(VerifyError::NoCertificate)?;
        let certificate = X509::from_pem(pem).map_err(VerifyError::Certificate)?;
        certificate
            .verify_chain(&self.middle, &self.root, unix)
            .map_err(VerifyError::Chain)?;
        let cn = certificate.common_name().unwrap_or_default();
        if cn.split('@').nth(2) != Some(UNIONPAY_NAME) {
            return Err(VerifyError::NotUnionPay(cn.to_owned()));
        }
        if sign::verifies(&certificate.verifier(), fields.iter().copied(), signature) {
            Ok(())
        } else {
            Err(VerifyError::BadSignature)
        }
    }
}
