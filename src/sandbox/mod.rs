//! Strict local re-implementations of the providers (china-wallets.md section F): they verify
//! what the real provider verifies, answer in its own codes and sign what it signs, so the
//! adapters are exercised against the protocol rather than against our own convenience.
//!
//! - [`alipay`]: the classic `gateway.do` gateway;
//! - [`wechat`]: WeChat Pay API v3 (both key modes) and v2 `micropay`.
//!
//! Each has control endpoints under `/sandbox/` that play the shopper and inject faults.

pub mod alipay;
pub mod wechat;

pub use alipay::{FaultMode, Sandbox, SandboxError, SandboxSettings, SentNotification, start_on};
