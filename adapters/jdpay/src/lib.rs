//! JD Pay (京东支付) V2.0, the merchant API at `paygate.jd.com` and its cashiers
//! (`../shared/reference/more-wallets.md` §2). This first part is JD's wire security, pinned by
//! the JD-N1 vector (a real notification from JD's demo merchant):
//!
//! - [`envelope`]: every field but `merchant`, `version` and `sign` travels 3DES-encrypted
//!   (`DESede/ECB/NoPadding` over `BE32(len) ‖ utf8 ‖ 0x00…` to a multiple of 8), as
//!   lowercase hex, base64-encoded again inside the XML's `<encrypt>`;
//! - [`sign`]: the sign is the RSA private-key operation over a PKCS#1 type-1 block whose
//!   payload is the lowercase SHA-256 hex of the XML without its `<sign>` element (declaration
//!   and whitespace kept), not `SHA256withRSA`; verifying it is the public operation and a
//!   strict read of the block, and signing the private operation on such a block
//!   (`moongate_contract::rsa_raw`: constant-time, blinded, checked).
//!
//! Not built yet: the adapter (requests, answers, methods) and its sandbox.

#![warn(missing_docs)]

pub mod envelope;
pub mod sign;
