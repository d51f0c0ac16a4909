//! [`UnionPayAdapter`]: the [`PaymentAdapter`] over this crate's protocol core.
//!
//! What it does today: `unionpay_qr` (QR apply) and `unionpay_payment_code` (consume with the
//! shopper's `62…` code), queries by `orderId` and the payment's `txnTime`, refunds (`04`) and
//! same-day undos (`31`) with their queries, the notifications of all three, and the daily
//! bill (file transfer, read from its ZM file). UnionPay has no close for these orders: it
//! answers [`AdapterError::Unsupported`], and [`Capabilities`] leaves it out, so the core
//! refuses it before calling.

use moongate_contract::crypto::{KeyError, RsaSigner};
use moongate_contract::pkcs12::Pkcs12;
use moongate_contract::x509::X509;
use moongate_contract::{
    Ack, AckKind, AdapterError, CallContext, Capabilities, CloseStatus, CreatePayment, Currency,
    HttpMethod, HttpRequest, HttpResponse, Money, NextAction, Notification, NotificationError,
    NotificationEvent, Operation, PaymentAdapter, PaymentMethod, PaymentRef, PaymentStatus,
    Prepared, ProviderCertificate, ProviderKind, RawNotification, RefundRequest, RefundStatus,
    StatementError, StatementLimits, StatementLocation, StatementSink, StatementSource,
    StatementTotals,
};

use crate::mapping::{order_id, pay_timeout, txn_time};
use crate::request::{Merchant, form_body};
use crate::trust::Trust;
use crate::{answer, notify, request};

const METHODS: &[PaymentMethod] = &[
    PaymentMethod::UnionpayQr,
    PaymentMethod::UnionpayPaymentCode,
    PaymentMethod::UnionpayWeb,
    PaymentMethod::UnionpayWap,
];
const CURRENCIES: &[Currency] = &[Currency::CNY];
const OPERATIONS: &[Operation] = &[
    Operation::Create,
    Operation::Query,
    Operation::Refund,
    Operation::RefundQuery,
    Operation::Notification,
    Operation::Statement,
];

/// How the merchant's signing key is given.
#[derive(Clone, Copy)]
pub enum SigningKey<'a> {
    /// The key and its certificate, PEM.
    Pem {
        /// The private key.
        key: &'a str,
        /// Its certificate.
        certificate: &'a str,
    },
    /// The PKCS#12 store UnionPay issues (`.pfx`), with its password: its one key, and the
    /// certificate in it that is that key's.
    Pfx {
        /// The store's bytes.
        der: &'a [u8],
        /// Its password.
        password: &'a str,
    },
}

impl std::fmt::Debug for SigningKey<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigningKey::Pem { .. } => "SigningKey::Pem([REDACTED])",
            SigningKey::Pfx { .. } => "SigningKey::Pfx([REDACTED])",
        })
    }
}

/// One UnionPay merchant account's keys and endpoints, as read from the config.
#[derive(Clone, Copy, Debug)]
pub struct AccountKeys<'a> {
    /// `merId`.
    pub mer_id: &'a str,
    /// The merchant's signing key and certificate.
    pub signing: SigningKey<'a>,
    /// UnionPay's middle certificate, PEM.
    pub middle_certificate: &'a str,
    /// UnionPay's root certificate, PEM.
    pub root_certificate: &'a str,
    /// The gateway base URL (`…/gateway/api`).
    pub gateway_url: &'a str,
    /// The file-transfer endpoint (`https://filedownload.95516.com/`).
    pub file_url: &'a str,
}

/// Which configured key failed to load.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The PKCS#12 store: unreadable, a wrong password, no key, or no certificate of its key.
    #[error("signing key store: {0}")]
    SigningStore(KeyError),
    /// The signing key.
    #[error("signing key: {0}")]
    SigningKey(KeyError),
    /// The signing certificate, or a certificate of another key.
    #[error("signing certificate: {0}")]
    SigningCertificate(KeyError),
    /// The middle certificate.
    #[error("middle certificate: {0}")]
    Middle(KeyError),
    /// The root certificate.
    #[error("root certificate: {0}")]
    Root(KeyError),
}

/// A UnionPay merchant account.
#[derive(Debug)]
pub struct UnionPayAdapter {
    merchant: Merchant,
    trust: Trust,
    gateway_url: String,
    file_url: String,
}

impl UnionPayAdapter {
    /// Loads the account's keys.
    pub fn new(keys: &AccountKeys<'_>) -> Result<UnionPayAdapter, AccountError> {
        let merchant = match keys.signing {
            SigningKey::Pem { key, certificate } => {
                let signer = RsaSigner::from_pem(key).map_err(AccountError::SigningKey)?;
                let certificate =
                    X509::from_pem(certificate).map_err(AccountError::SigningCertificate)?;
                Merchant::new(keys.mer_id, signer, &certificate)
                    .map_err(AccountError::SigningCertificate)?
            }
            SigningKey::Pfx { der, password } => {
                let store = Pkcs12::from_der(der, password).map_err(AccountError::SigningStore)?;
                let signer = RsaSigner::from_pkcs8_der(&store.private_key_pkcs8)
                    .map_err(AccountError::SigningStore)?;
                // The store also holds UnionPay's CA certificates: the key's own is the one
                // that verifies what the key signs.
                let probe = b"moongate key store";
                let signature = signer
                    .sign_base64(probe)
                    .map_err(AccountError::SigningStore)?;
                let certificate = store
                    .certificates
                    .iter()
                    .filter_map(|der| X509::from_der(der).ok())
                    .find(|c| c.verifier().verify_base64(probe, &signature))
                    .ok_or(AccountError::SigningStore(KeyError::Rejected(
                        "the store holds no certificate of its key",
                    )))?;
                Merchant::new(keys.mer_id, signer, &certificate)
                    .map_err(AccountError::SigningStore)?
            }
        };
        let middle = X509::from_pem(keys.middle_certificate).map_err(AccountError::Middle)?;
        let root = X509::from_pem(keys.root_certificate).map_err(AccountError::Root)?;
        Ok(UnionPayAdapter {
            merchant,
            trust: Trust::new(middle, root),
            gateway_url: keys.gateway_url.trim_end_matches('/').to_owned(),
            file_url: keys.file_url.to_owned(),
        })
    }

    /// The merchant's `certId`.
    pub fn cert_id(&self) -> &str {
        self.merchant.cert_id()
    }

    fn post(&self, operation: &str, fields: &[(String, String)]) -> HttpRequest {
        self.post_to(format!("{}/{operation}", self.gateway_url), fields)
    }

    fn post_to(&self, url: String, fields: &[(String, String)]) -> HttpRequest {
        HttpRequest {
            method: HttpMethod::Post,
            url,
            headers: vec![(
                "Content-Type".to_owned(),
                "application/x-www-form-urlencoded;charset=UTF-8".to_owned(),
            )],
            body: form_body(fields),
        }
    }

    /// The query of one transaction: a payment, refund or undo, by its own order id and the
    /// time it was created (its `txnTime`).
    fn query<T>(
        &self,
        moongate_id: &str,
        created_at: time::OffsetDateTime,
    ) -> Result<Prepared<T>, AdapterError> {
        let fields = request::query(&order_id(moongate_id)?, &txn_time(created_at)?);
        let signed = self.merchant.signed(fields)?;
        Ok(Prepared::Send(self.post("queryTrans.do", &signed)))
    }

    /// An answer's body as text, when the call was answered at all.
    fn body(resp: &HttpResponse) -> Result<&str, AdapterError> {
        if resp.status != 200 {
            return Err(AdapterError::Protocol(format!("HTTP {}", resp.status)));
        }
        std::str::from_utf8(&resp.body)
            .map_err(|_| AdapterError::Protocol("the answer is not UTF-8".to_owned()))
    }
}

impl PaymentAdapter for UnionPayAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::UnionPay
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            methods: METHODS,
            currencies: CURRENCIES,
            operations: OPERATIONS,
        }
    }

    fn prepare_create(
        &self,
        _cx: &CallContext,
        req: &CreatePayment,
    ) -> Result<Prepared<PaymentStatus>, AdapterError> {
        let order = order_id(&req.provider_order_id)?;
        // `txnTime` is the payment's creation time: a query names the order by it, so it must
        // be the same on every re-send (more-wallets.md §1.2).
        let time = txn_time(req.created_at)?;
        if let Some(channel) = match req.method {
            PaymentMethod::UnionpayWeb => Some("07"),
            PaymentMethod::UnionpayWap => Some("08"),
            _ => None,
        } {
            let front_url = req
                .return_url
                .as_deref()
                .ok_or(AdapterError::InvalidParameter {
                    param: "return_url",
                    message: "UnionPay's gateway sends the shopper back to it".to_owned(),
                })?;
            let fields = request::front_consume(
                channel,
                &order,
                &time,
                req.amount,
                &req.notify_url,
                front_url,
                &pay_timeout(req.expires_at)?,
            )?;
            // Nothing is sent from here: the shopper's browser posts the signed form.
            let signed = self.merchant.signed(fields)?;
            return Ok(Prepared::Ready(PaymentStatus::AwaitingPayment {
                next_action: Some(NextAction::FormPost {
                    url: format!("{}/frontTransReq.do", self.gateway_url),
                    fields: signed.into_iter().collect(),
                }),
            }));
        }
        let fields =
            match req.method {
                PaymentMethod::UnionpayQr => request::qr_apply(
                    &order,
                    &time,
                    req.amount,
                    &req.notify_url,
                    &pay_timeout(req.expires_at)?,
                )?,
                PaymentMethod::UnionpayPaymentCode => {
                    let code = req.payer.payment_code.as_deref().ok_or(
                        AdapterError::InvalidParameter {
                            param: "payer.payment_code",
                            message: "payment codes need the scanned code".to_owned(),
                        },
                    )?;
                    request::code_consume(&order, &time, req.amount, &req.notify_url, code)?
                }
                other => {
                    return Err(AdapterError::InvalidRequest(format!(
                        "{} is not a UnionPay method",
                        other.as_str()
                    )));
                }
            };
        let signed = self.merchant.signed(fields)?;
        Ok(Prepared::Send(self.post("backTransReq.do", &signed)))
    }

    fn parse_create(
        &self,
        _cx: &CallContext,
        req: &CreatePayment,
        resp: &HttpResponse,
    ) -> Result<PaymentStatus, AdapterError> {
        let body = Self::body(resp)?;
        let order = order_id(&req.provider_order_id)?;
        let unix = resp.received_at.unix_timestamp();
        match req.method {
            PaymentMethod::UnionpayPaymentCode => {
                answer::code_consume(body, &self.trust, unix, &order)
            }
            _ => answer::qr_apply(body, &self.trust, unix, &order),
        }
    }

    fn prepare_query(
        &self,
        _cx: &CallContext,
        req: &PaymentRef,
    ) -> Result<Prepared<PaymentStatus>, AdapterError> {
        self.query(&req.provider_order_id, req.created_at)
    }

    fn parse_query(
        &self,
        req: &PaymentRef,
        resp: &HttpResponse,
    ) -> Result<PaymentStatus, AdapterError> {
        let body = Self::body(resp)?;
        let order = order_id(&req.provider_order_id)?;
        answer::query(
            body,
            &self.trust,
            resp.received_at.unix_timestamp(),
            &order,
            req.amount.currency,
        )
    }

    fn prepare_close(
        &self,
        _cx: &CallContext,
        _req: &PaymentRef,
    ) -> Result<Prepared<CloseStatus>, AdapterError> {
        Err(AdapterError::Unsupported {
            op: Operation::Close,
        })
    }

    fn parse_close(
        &self,
        _req: &PaymentRef,
        _resp: &HttpResponse,
    ) -> Result<CloseStatus, AdapterError> {
        Err(AdapterError::Unsupported {
            op: Operation::Close,
        })
    }

    fn prepare_refund(
        &self,
        _cx: &CallContext,
        req: &RefundRequest,
    ) -> Result<Prepared<RefundStatus>, AdapterError> {
        let orig_qry_id = req.payment_provider_ref.as_deref().ok_or_else(|| {
            AdapterError::InvalidRequest("the payment has no UnionPay queryId".to_owned())
        })?;
        let back_url = req.notify_url.as_deref().ok_or_else(|| {
            AdapterError::InvalidRequest("UnionPay refunds need a backUrl".to_owned())
        })?;
        // An undo only when the whole amount goes back on the payment's clearing day. The
        // payment was paid between its creation and now, so when those two share a clearing
        // day, so does the payment; otherwise a refund, which UnionPay takes on any day.
        let kind = request::reversal(
            req.payment_amount,
            req.amount,
            req.payment_created_at,
            req.created_at,
        );
        let fields = request::reverse(
            kind,
            &order_id(&req.provider_refund_id)?,
            &txn_time(req.created_at)?,
            req.amount,
            orig_qry_id,
            back_url,
            &order_id(&req.provider_order_id)?,
        )?;
        let signed = self.merchant.signed(fields)?;
        Ok(Prepared::Send(self.post("backTransReq.do", &signed)))
    }

    fn parse_refund(
        &self,
        req: &RefundRequest,
        resp: &HttpResponse,
    ) -> Result<RefundStatus, AdapterError> {
        let body = Self::body(resp)?;
        let order = order_id(&req.provider_refund_id)?;
        answer::reverse(body, &self.trust, resp.received_at.unix_timestamp(), &order)
    }

    fn prepare_refund_query(
        &self,
        _cx: &CallContext,
        req: &RefundRequest,
    ) -> Result<Prepared<RefundStatus>, AdapterError> {
        self.query(&req.provider_refund_id, req.created_at)
    }

    fn parse_refund_query(
        &self,
        req: &RefundRequest,
        resp: &HttpResponse,
    ) -> Result<RefundStatus, AdapterError> {
        let body = Self::body(resp)?;
        let order = order_id(&req.provider_refund_id)?;
        answer::refund_query(body, &self.trust, resp.received_at.unix_timestamp(), &order)
    }

    fn parse_notification(
        &self,
        raw: &RawNotification<'_>,
    ) -> Result<Notification, NotificationError> {
        let notice = notify::parse(raw.body, &self.trust, raw.received_at.unix_timestamp())?;
        let moongate = |order: &str| {
            crate::mapping::moongate_id(order).ok_or_else(|| {
                NotificationError::Malformed(format!("{order} is not a Moongate order"))
            })
        };
        let amount = Money::new(notice.txn_amt, Currency::CNY);
        // A transaction's `queryId` is the same on every re-send of its notification.
        let dedupe_id = format!("{}:{}", notice.txn_type, notice.query_id);
        match notice.txn_type.as_str() {
            "01" => Ok(Notification {
                dedupe_id,
                provider_order_id: moongate(&notice.order_id)?,
                total: Some(amount),
                event: NotificationEvent::Payment {
                    status: notice.consume_status(Currency::CNY),
                    refunded_total: None,
                },
            }),
            // A refund's or undo's `orderId` is its own; the payment's came back in
            // `reqReserved`. It reports no payment total: its amount is the refund's, which the
            // core checks against the refund.
            "04" | "31" => {
                let payment = notice.req_reserved.as_deref().ok_or_else(|| {
                    NotificationError::Malformed("a refund without its payment".to_owned())
                })?;
                let status = if notice.resp_code == "00" {
                    RefundStatus::Succeeded {
                        provider_ref: Some(notice.query_id.clone()),
                    }
                } else {
                    RefundStatus::Failed {
                        code: notice.resp_code.clone(),
                        message: notice.resp_msg.clone(),
                    }
                };
                Ok(Notification {
                    dedupe_id,
                    provider_order_id: moongate(payment)?,
                    total: None,
                    event: NotificationEvent::Refund {
                        provider_refund_id: moongate(&notice.order_id)?,
                        amount,
                        status,
                    },
                })
            }
            other => Err(NotificationError::Unsupported(format!("txnType {other}"))),
        }
    }

    /// UnionPay takes HTTP 200 as received and re-sends otherwise (more-wallets.md §1.4).
    fn notification_ack(&self, kind: AckKind) -> Ack {
        match kind {
            AckKind::Accepted => Ack {
                status: 200,
                content_type: "text/plain",
                body: b"ok".to_vec(),
            },
            AckKind::Rejected => Ack {
                status: 400,
                content_type: "text/plain",
                body: b"fail".to_vec(),
            },
        }
    }

    /// File transfer `76/01/000000` for the clearing day `day` (`settleDate` is its `MMDD`).
    fn prepare_statement(
        &self,
        cx: &CallContext,
        day: time::Date,
    ) -> Result<HttpRequest, AdapterError> {
        let fields = request::file_transfer(&txn_time(cx.now)?, day);
        let signed = self.merchant.signed(fields)?;
        Ok(self.post_to(self.file_url.clone(), &signed))
    }

    /// The answer carries the bill itself: `00` with `fileContent`, or `98` (文件不存在: not
    /// generated yet, or no transactions that day; UnionPay does not say which), read as
    /// not ready so that a run is tried again rather than finding everything missing.
    fn parse_statement(&self, resp: &HttpResponse) -> Result<StatementLocation, AdapterError> {
        let body = Self::body(resp)?;
        answer::file_transfer(body, &self.trust, resp.received_at.unix_timestamp())
    }

    /// UnionPay sends the bill inline; there is no download.
    fn prepare_statement_download(
        &self,
        _cx: &CallContext,
        _url: &str,
    ) -> Result<HttpRequest, AdapterError> {
        Err(AdapterError::InvalidRequest(
            "UnionPay sends its bill in the file-transfer answer; there is no link".to_owned(),
        ))
    }

    fn read_statement(
        &self,
        source: &mut dyn StatementSource,
        limits: &StatementLimits,
        sink: &mut StatementSink<'_>,
    ) -> Result<StatementTotals, StatementError> {
        crate::bill::read_bill_zip(source, self.merchant.mer_id(), limits, sink)
    }

    fn prepare_certificates(&self, _cx: &CallContext) -> Result<HttpRequest, AdapterError> {
        Err(AdapterError::Unsupported {
            op: Operation::Certificates,
        })
    }

    fn parse_certificates(
        &self,
        _resp: &HttpResponse,
    ) -> Result<Vec<ProviderCertificate>, AdapterError> {
        Err(AdapterError::Unsupported {
            op: Operation::Certificates,
        })
    }
    /// UnionPay's in-app user authorisation is not built.
    fn payer_identity(&self) -> Option<&dyn moongate_contract::PayerIdentity> {
        None
    }
}
