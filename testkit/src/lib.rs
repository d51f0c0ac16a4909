//! Moongate's test doubles, kept out of the product library:
//!
//! - [`sandbox`]: strict local re-implementations of the providers (Alipay `gateway.do`,
//!   WeChat Pay v3 and v2 `micropay`), with fault modes and real-format statements, written
//!   from the published rules in [`protocol`] and never with the adapters' code;
//! - [`client`]: a signing client for Moongate's API (the demo, the tests, the reference for
//!   integrations), with its own implementation of the request signature;
//! - [`storefront`]: the demo shop the demo serves and the browser tests drive.

pub mod client;
pub mod net;
pub mod protocol;
pub mod sandbox;
pub mod storefront;
pub mod text;
