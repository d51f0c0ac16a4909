//! Moongate: a payment interoperability gateway. One canonical, signed checkout API in front
//! of Alipay and WeChat Pay (and more to come), with a durable ledger, verified provider
//! notifications, signed merchant webhooks and reconciliation against the providers' daily
//! statements. See `ARCHITECTURE.md` for the map.

pub mod auth;
pub mod cashier;
pub mod certificates;
pub mod circuit;
pub mod client_ip;
pub mod clock;
pub mod config;
pub mod error;
pub mod gateway;
pub mod html;
pub mod http;
pub mod ledger;
pub mod limits;
pub mod metrics;
pub mod outbound;
pub mod port;
pub mod private_fs;
pub mod reconcile;
pub mod registry;
pub mod routing;
pub mod sealing;
pub mod server;
pub mod service;
pub mod shared_limits;
pub mod store;
pub mod webhooks;
