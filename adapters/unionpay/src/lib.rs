//! UnionPay's online gateway (全渠道, ACP 5.1.0, `signMethod=01`).
//!
//! This crate holds the protocol's core, pinned by the vendor's vectors
//! (`tests/golden.rs`): the string a request or answer signs ([`sign`]), the raw answers the
//! gateway sends back without URL encoding ([`raw`]), the trust in the signing certificate
//! an answer carries inline ([`trust`]), and what order ids, `txnTime` and response codes are
//! in Moongate's terms ([`mapping`]), the signed forms of a QR apply and a query
//! ([`request`]), their verified answers ([`answer`]), the notifications posted to
//! `backUrl` ([`notify`]), and the ZM transaction file of the daily bill ([`bill`]).
//! [`UnionPayAdapter`] is the `PaymentAdapter` over them ([`adapter`]), with its config table
//! ([`settings`]) and what it declares to the core ([`FACTS`]).

pub mod adapter;
pub mod answer;
pub mod bill;
pub mod facts;
pub mod mapping;
pub mod notify;
pub mod raw;
pub mod request;
pub mod settings;
pub mod sign;
pub mod trust;

pub use adapter::{AccountError, AccountKeys, SigningKey, UnionPayAdapter};
pub use facts::FACTS;
