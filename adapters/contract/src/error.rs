//! Adapter errors, classified by the question that matters for money:
//! could the provider have acted on the request?

use crate::domain::Operation;

/// Failure of a `prepare_*` or `parse_*` call.
///
/// Business outcomes (declined, not found, still waiting) are *values*, not errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterError {
    /// The adapter does not implement this operation (and says so in its capabilities).
    #[error("operation {op:?} is not supported by this provider")]
    Unsupported {
        /// The operation.
        op: Operation,
    },
    /// The domain request cannot be expressed for this provider (never sent).
    #[error("request not expressible for this provider: {0}")]
    InvalidRequest(String),
    /// One parameter of the request is outside what this provider accepts (never sent):
    /// `param` names it as the API does (`amount`, `currency`, `description`,
    /// `expires_in_seconds`, `payer.openid`, …).
    #[error("{param}: {message}")]
    InvalidParameter {
        /// The API parameter.
        param: &'static str,
        /// What is wrong, in the provider's terms.
        message: String,
    },
    /// Our own signing key failed (never sent).
    #[error("signing failed")]
    Signing,
    /// The provider refused the request before acting on it (bad signature, missing
    /// parameters, no permission). Nothing happened at the provider.
    #[error("provider rejected the request: {code}")]
    Rejected {
        /// Provider code, sub-code when there is one.
        code: String,
        /// Provider message.
        message: String,
    },
    /// The provider refused because the account's authorisation of a partner's app (its
    /// token) is missing, expired or revoked: nothing happened at the provider. The core
    /// reports the authorisation; the call may go to another account.
    #[error("the account's authorisation was refused: {code}")]
    Unauthorised {
        /// Provider code, sub-code when there is one (or Moongate's, when no token is held).
        code: String,
        /// Provider message.
        message: String,
    },
    /// The provider answered, but whether it acted is unknown (system error, busy).
    /// Query before doing anything else.
    #[error("provider outcome indeterminate: {code}")]
    Indeterminate {
        /// Provider code.
        code: String,
        /// Provider message.
        message: String,
    },
    /// The answer could not be decoded or its signature did not verify. Treated as
    /// outcome unknown: never as success, never as failure.
    #[error("unusable provider answer: {0}")]
    Protocol(String),
}

/// Why a notification was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotificationError {
    /// Body or headers could not be decoded.
    #[error("malformed notification: {0}")]
    Malformed(String),
    /// The signature is missing or does not verify (including WeChat Pay's deliberate
    /// `WECHATPAY/SIGNTEST/` probes).
    #[error("notification signature does not verify")]
    BadSignature,
    /// Signed, but the signed timestamp is outside the accepted window (a replay or a bad clock).
    #[error("notification timestamp outside the accepted window")]
    Stale,
    /// Signed, but the encrypted resource does not decrypt (wrong APIv3 key or tampering).
    #[error("notification resource does not decrypt")]
    Undecryptable,
    /// Signed by the provider, but for another account than the one it was sent to.
    #[error("notification is for another account")]
    WrongAccount,
    /// A kind of notification this adapter does not handle.
    #[error("unsupported notification type: {0}")]
    Unsupported(String),
}
