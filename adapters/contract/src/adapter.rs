//! The one interface every provider adapter implements.
//!
//! Adapters are sans-IO: each operation is a pure `prepare_*` that renders the
//! signed provider request (or answers at once, e.g. a redirect URL that needs no
//! call) and a pure `parse_*` that verifies and decodes the provider's answer. The
//! gateway core sends the request in between, so timeouts, TLS, retries, rate limits
//! and tracing live in one place, and every adapter function is golden-testable with a
//! fixed clock and nonce.

use std::fmt;

use time::{Date, OffsetDateTime};

use crate::domain::{
    Ack, AckKind, Capabilities, CloseStatus, CreatePayment, Notification, PaymentRef,
    PaymentStatus, ProviderCertificate, ProviderKind, RawNotification, RefundRequest, RefundStatus,
};
use crate::error::{AdapterError, NotificationError};
use crate::http::{HttpRequest, HttpResponse};
use crate::identity::PayerIdentity;
use crate::statement::{
    StatementError, StatementLimits, StatementLocation, StatementSink, StatementSource,
    StatementTotals,
};

/// Time and randomness handed to a `prepare_*` call as data, so it stays pure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallContext {
    /// The time to stamp on the request.
    pub now: OffsetDateTime,
    /// A fresh random nonce (alphanumeric, 32 chars) for providers that want one.
    pub nonce: String,
}

/// The result of preparing an operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prepared<T> {
    /// Nothing to send: this is the answer (e.g. a signed redirect URL).
    Ready(T),
    /// Send this request, then give the answer to the matching `parse_*`.
    Send(HttpRequest),
}

/// A payment provider account seen through Moongate's vocabulary.
///
/// Rules (see ARCHITECTURE.md, invariants 1 and 2): no I/O, no clock, no retries; every operation
/// is implemented or explicitly answers [`AdapterError::Unsupported`] and says so in
/// [`PaymentAdapter::capabilities`]; unknown provider states never map to success.
pub trait PaymentAdapter: Send + Sync + fmt::Debug + 'static {
    /// Which provider this is.
    fn kind(&self) -> ProviderKind;

    /// What it supports.
    fn capabilities(&self) -> Capabilities;

    /// Renders a create-payment request.
    fn prepare_create(
        &self,
        cx: &CallContext,
        req: &CreatePayment,
    ) -> Result<Prepared<PaymentStatus>, AdapterError>;

    /// Reads the answer to a create-payment request. `cx` is the context of this read (some
    /// answers are turned into freshly signed client parameters).
    fn parse_create(
        &self,
        cx: &CallContext,
        req: &CreatePayment,
        resp: &HttpResponse,
    ) -> Result<PaymentStatus, AdapterError>;

    /// Renders a payment query.
    fn prepare_query(
        &self,
        cx: &CallContext,
        req: &PaymentRef,
    ) -> Result<Prepared<PaymentStatus>, AdapterError>;

    /// Reads the answer to a payment query.
    fn parse_query(
        &self,
        req: &PaymentRef,
        resp: &HttpResponse,
    ) -> Result<PaymentStatus, AdapterError>;

    /// Renders a close request.
    fn prepare_close(
        &self,
        cx: &CallContext,
        req: &PaymentRef,
    ) -> Result<Prepared<CloseStatus>, AdapterError>;

    /// Reads the answer to a close request.
    fn parse_close(
        &self,
        req: &PaymentRef,
        resp: &HttpResponse,
    ) -> Result<CloseStatus, AdapterError>;

    /// Renders a refund request.
    fn prepare_refund(
        &self,
        cx: &CallContext,
        req: &RefundRequest,
    ) -> Result<Prepared<RefundStatus>, AdapterError>;

    /// Reads the answer to a refund request.
    fn parse_refund(
        &self,
        req: &RefundRequest,
        resp: &HttpResponse,
    ) -> Result<RefundStatus, AdapterError>;

    /// Renders a refund query.
    fn prepare_refund_query(
        &self,
        cx: &CallContext,
        req: &RefundRequest,
    ) -> Result<Prepared<RefundStatus>, AdapterError>;

    /// Reads the answer to a refund query.
    fn parse_refund_query(
        &self,
        req: &RefundRequest,
        resp: &HttpResponse,
    ) -> Result<RefundStatus, AdapterError>;

    /// Verifies and decodes an asynchronous notification. Pure.
    fn parse_notification(
        &self,
        raw: &RawNotification<'_>,
    ) -> Result<Notification, NotificationError>;

    /// The exact reply the provider expects.
    fn notification_ack(&self, kind: AckKind) -> Ack;

    /// Renders the request asking where the trade statement of a statement day is (a day as
    /// the provider's [`crate::StatementDay`] cuts them).
    fn prepare_statement(&self, cx: &CallContext, day: Date) -> Result<HttpRequest, AdapterError>;

    /// Reads where the statement is (or that there is none, or not yet).
    fn parse_statement(&self, resp: &HttpResponse) -> Result<StatementLocation, AdapterError>;

    /// Renders the download of a statement file from the URL the provider gave. Providers that
    /// authenticate downloads sign it; the URL must belong to the provider.
    fn prepare_statement_download(
        &self,
        cx: &CallContext,
        url: &str,
    ) -> Result<HttpRequest, AdapterError>;

    /// Reads a stored statement file line by line into `sink`, then checks the provider's
    /// control totals. No network; the caller discards what it collected on error. A file
    /// beyond `limits` (line length, line count, size, compression ratio) is refused.
    fn read_statement(
        &self,
        source: &mut dyn StatementSource,
        limits: &StatementLimits,
        sink: &mut StatementSink<'_>,
    ) -> Result<StatementTotals, StatementError>;

    /// Renders the download of the provider's own certificates, for providers that hand them
    /// out through their API (WeChat Pay's certificate mode). Others answer
    /// [`AdapterError::Unsupported`] and leave [`crate::Operation::Certificates`] out of their
    /// capabilities.
    fn prepare_certificates(&self, cx: &CallContext) -> Result<HttpRequest, AdapterError>;

    /// Reads (decrypts, checks, verifies) the certificate download's answer.
    fn parse_certificates(
        &self,
        resp: &HttpResponse,
    ) -> Result<Vec<ProviderCertificate>, AdapterError>;

    /// How the account learns the payer's id inside its wallet's app (WeChat's `snsapi_base`
    /// OAuth, when the account configures its app's secret); `None` where it cannot.
    fn payer_identity(&self) -> Option<&dyn PayerIdentity>;
}
