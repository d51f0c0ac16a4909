//! The contract between Moongate's core and its provider adapters.
//!
//! This crate is the API boundary: the [`PaymentAdapter`] trait, the domain types it
//! speaks ([`Money`], [`CreatePayment`], [`PaymentStatus`], …), the errors, the
//! redacting [`Secret`] type and the RSA helpers two providers share. It depends on
//! no web framework, no runtime and no other Moongate crate; changing it is a
//! deliberate act.

#![warn(missing_docs)]

pub mod adapter;
pub mod authorisation;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod facts;
pub mod http;
pub mod identity;
pub mod money;
pub mod pkcs12;
pub mod rsa_raw;
pub mod secret;
pub mod statement;
pub mod x509;

pub use adapter::{CallContext, PaymentAdapter, Prepared};
pub use authorisation::{Authorising, Grant, Granted, TokenSlot};
pub use domain::{
    Ack, AckKind, Capabilities, CloseStatus, CreatePayment, JsapiParameters, NextAction,
    Notification, NotificationEvent, Operation, Payer, PaymentMethod, PaymentRef, PaymentStatus,
    ProviderCertificate, ProviderKind, RawNotification, RefundRequest, RefundStatus,
};
pub use error::{AdapterError, NotificationError};
pub use facts::{
    CashierFit, CodeFormat, MethodFacts, PayerField, ProviderFacts, StatementDay, WalletFacts,
};
pub use http::{HttpMethod, HttpRequest, HttpResponse, check_download_url};
pub use identity::PayerIdentity;
pub use money::{Currency, Money, MoneyError};
pub use secret::{Secret, SecretRef};
pub use statement::{
    LineKind, LineReader, StatementError, StatementLimits, StatementLine, StatementLocation,
    StatementSink, StatementSource, StatementTotals,
};
