//! Alipay classic OpenAPI gateway (`gateway.do`, RSA2) behind Moongate's adapter contract.
//!
//! Byte-level rules follow `shared/reference/china-wallets.md` section A:
//! - requests: protocol parameters in the URL query, `biz_content` in a
//!   `application/x-www-form-urlencoded` POST body; every sent parameter except `sign` is signed
//!   ([`sign::SignRule::Request`]); page/wap pay is a signed GET redirect URL, no server call;
//! - responses: the signature covers the raw bytes of the `<method>_response` node
//!   ([`wire::split_signed_response`]); a success must be signed, a `\/`-escaped body is retried
//!   once unescaped (as Alipay's Java SDK does);
//! - notifications: form body, `sign` and `sign_type` excluded ([`sign::SignRule::NotificationV1`]),
//!   answered with exactly `success`;
//! - public-key mode or certificate mode ([`cert`]): in the latter every request carries
//!   `app_cert_sn` and `alipay_root_cert_sn`, and an answer is verified with the configured
//!   Alipay certificate whose SN its `alipay_cert_sn` names (an SN we do not hold is refused,
//!   never guessed: that is how a rotation of Alipay's certificate shows).
//!
//! Outcomes are classified by what they mean for money: a code we do not know is never a
//! success and never a definite failure, it is [`AdapterError::Indeterminate`].

#![warn(missing_docs)]

pub mod auth;
pub mod bill;
pub mod buyer;
pub mod cert;
pub mod facts;
mod mapping;
pub mod settings;
pub mod sign;
pub mod wire;

pub use facts::FACTS;
use mapping::*;
pub use mapping::{format_beijing, parse_beijing};

use std::collections::HashMap;
use std::sync::Arc;

use moongate_contract::crypto::{KeyError, RsaSigner, RsaVerifier};

use crate::cert::{CertificateError, CertificateKeys};
use moongate_contract::{
    Ack, AckKind, AdapterError, CallContext, Capabilities, CloseStatus, CreatePayment, Currency,
    HttpMethod, HttpRequest, HttpResponse, Money, NextAction, Notification, NotificationError,
    NotificationEvent, Operation, PaymentAdapter, PaymentMethod, PaymentRef, PaymentStatus,
    Prepared, ProviderCertificate, ProviderKind, RawNotification, RefundRequest, RefundStatus,
    StatementError, StatementLimits, StatementLocation, StatementSink, StatementSource,
    StatementTotals, TokenSlot,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::sign::{SignRule, sign_content};
use crate::wire::Common;

/// Beijing time, the zone of every Alipay timestamp.
const BEIJING: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(offset) => offset,
    Err(_) => UtcOffset::UTC,
};

/// Largest amount Alipay accepts in one trade: 100,000,000.00 yuan.
pub const MAX_AMOUNT_FEN: i64 = 10_000_000_000;

/// Longest `timeout_express` Alipay accepts: 15 days.
const MAX_TIMEOUT_MINUTES: i64 = 15 * 24 * 60;

/// Content type of server calls and notifications.
pub const FORM_CONTENT_TYPE: &str = "application/x-www-form-urlencoded;charset=utf-8";

const OPERATIONS: &[Operation] = &[
    Operation::Create,
    Operation::Query,
    Operation::Close,
    Operation::Refund,
    Operation::RefundQuery,
    Operation::Notification,
    Operation::Statement,
];

const CAPABILITIES: Capabilities = Capabilities {
    methods: &[
        PaymentMethod::AlipayQr,
        PaymentMethod::AlipayWeb,
        PaymentMethod::AlipayWap,
        PaymentMethod::AlipayPaymentCode,
    ],
    currencies: &[Currency::CNY],
    operations: OPERATIONS,
};

/// An app with the JSAPI product (`jsapi = true`) also pays inside the Alipay app.
const CAPABILITIES_WITH_JSAPI: Capabilities = Capabilities {
    methods: &[
        PaymentMethod::AlipayQr,
        PaymentMethod::AlipayWeb,
        PaymentMethod::AlipayWap,
        PaymentMethod::AlipayPaymentCode,
        PaymentMethod::AlipayJsapi,
    ],
    currencies: &[Currency::CNY],
    operations: OPERATIONS,
};

/// What the adapter needs to know about one Alipay application, secrets already resolved.
#[derive(Debug)]
pub struct AccountKeys<'a> {
    /// `app_id`.
    pub app_id: &'a str,
    /// Gateway URL (production, Alipay's sandbox or Moongate's local sandbox).
    pub gateway_url: &'a str,
    /// The consent page of `appToAppAuth` (an ISV app's; production when `None`).
    pub consent_url: Option<&'a str>,
    /// Seller PID, when configured.
    pub seller_id: Option<&'a str>,
    /// Application private key, PEM or bare base64.
    pub app_private_key: &'a str,
    /// How Alipay's answers are verified.
    pub alipay: AlipayKeys<'a>,
}

/// A merchant's authorisation of an ISV app (more-wallets.md §7): the adapter of a merchant
/// served through the ISV is made from the ISV app's ([`AlipayAdapter::for_authorisation`]).
#[derive(Debug)]
pub struct Authorisation<'a> {
    /// The merchant's app id (`auth_app_id` in its notifications).
    pub auth_app_id: &'a str,
    /// Its `app_auth_token`, sent (and signed) with every call: a configured secret, or the
    /// one the core obtained and refreshes; empty until the merchant authorises.
    pub app_auth_token: TokenSlot,
}

/// Alipay's side of the keys, in one of its two modes.
#[derive(Debug)]
pub enum AlipayKeys<'a> {
    /// Public-key mode: Alipay's public key, PEM or bare base64.
    PublicKey(&'a str),
    /// Certificate mode: PEM texts of the application's certificate, Alipay's certificates
    /// (current first) and Alipay's root bundle.
    Certificates {
        /// `appCertPublicKey_….crt`.
        app_cert: &'a str,
        /// `alipayCertPublicKey_RSA2.crt`, one or more.
        alipay_certs: Vec<&'a str>,
        /// `alipayRootCert.crt`.
        alipay_root_cert: &'a str,
    },
}

/// Which key failed to load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The application private key.
    #[error("app_private_key: {0}")]
    AppPrivateKey(KeyError),
    /// Alipay's public key.
    #[error("alipay_public_key: {0}")]
    AlipayPublicKey(KeyError),
    /// A certificate of certificate mode.
    #[error("{}: {}", .0.setting(), .0)]
    Certificates(CertificateError),
}

impl AccountError {
    /// The setting at fault (relative to the settings table, `.app_cert`, `.alipay_certs[1]`)
    /// and what is wrong with it.
    pub fn setting(&self) -> (String, String) {
        match self {
            AccountError::AppPrivateKey(e) => (".app_private_key".to_owned(), e.to_string()),
            AccountError::AlipayPublicKey(e) => (".alipay_public_key".to_owned(), e.to_string()),
            AccountError::Certificates(e) => (format!(".{}", e.setting()), e.to_string()),
        }
    }
}

/// How answers are verified.
#[derive(Debug)]
enum Trust {
    PublicKey(RsaVerifier),
    Certificates(CertificateKeys),
}

/// One Alipay application.
#[derive(Debug)]
pub struct AlipayAdapter {
    app_id: String,
    gateway_url: String,
    seller_id: Option<String>,
    // The keys, shared by every merchant an ISV app serves.
    signer: Arc<RsaSigner>,
    trust: Arc<Trust>,
    /// ISV mode: the merchant's app id and its `app_auth_token`.
    authorisation: Option<(String, TokenSlot)>,
    /// The consent page of merchants authorising this (ISV) app.
    consent_url: String,
    /// The user authorisation page (`publicAppAuthorize.htm`) of `auth_base`.
    user_authorize_url: String,
    /// The app has the JSAPI payment product: `alipay_jsapi`, and the payer's id learned
    /// inside the Alipay app.
    jsapi: bool,
}

impl AlipayAdapter {
    /// Loads the keys of one account.
    pub fn new(keys: &AccountKeys<'_>) -> Result<AlipayAdapter, AccountError> {
        let signer =
            RsaSigner::from_pem(keys.app_private_key).map_err(AccountError::AppPrivateKey)?;
        let trust = match &keys.alipay {
            AlipayKeys::PublicKey(pem) => {
                Trust::PublicKey(RsaVerifier::from_pem(pem).map_err(AccountError::AlipayPublicKey)?)
            }
            AlipayKeys::Certificates {
                app_cert,
                alipay_certs,
                alipay_root_cert,
            } => Trust::Certificates(
                CertificateKeys::load(&signer, app_cert, alipay_certs, alipay_root_cert)
                    .map_err(AccountError::Certificates)?,
            ),
        };
        Ok(AlipayAdapter {
            app_id: keys.app_id.to_owned(),
            gateway_url: keys.gateway_url.to_owned(),
            seller_id: keys.seller_id.map(str::to_owned),
            signer: Arc::new(signer),
            trust: Arc::new(trust),
            authorisation: None,
            consent_url: keys
                .consent_url
                .unwrap_or(auth::PRODUCTION_CONSENT_URL)
                .to_owned(),
            user_authorize_url: buyer::PRODUCTION_AUTHORIZE_URL.to_owned(),
            jsapi: false,
        })
    }

    /// Sends shoppers to `url` for the `auth_base` user authorisation (Alipay's sandbox or
    /// Moongate's; production by default). A served merchant's adapter inherits the ISV's.
    pub fn with_user_authorize_url(mut self, url: &str) -> AlipayAdapter {
        url.clone_into(&mut self.user_authorize_url);
        self
    }

    /// Turns the JSAPI product on or off: with it, the app takes `alipay_jsapi` and learns
    /// the payer's id inside the Alipay app ([`moongate_contract::PayerIdentity`]).
    pub fn with_jsapi(mut self, jsapi: bool) -> AlipayAdapter {
        self.jsapi = jsapi;
        self
    }

    /// The adapter of one merchant that authorised this ISV app: the same keys (shared, not
    /// loaded again: an ISV may serve thousands), calling with the merchant's token;
    /// `seller_id` is the merchant's PID, when configured.
    pub fn for_authorisation(
        &self,
        authorisation: &Authorisation<'_>,
        seller_id: Option<&str>,
    ) -> AlipayAdapter {
        AlipayAdapter {
            app_id: self.app_id.clone(),
            gateway_url: self.gateway_url.clone(),
            seller_id: seller_id.map(str::to_owned),
            signer: Arc::clone(&self.signer),
            trust: Arc::clone(&self.trust),
            authorisation: Some((
                authorisation.auth_app_id.to_owned(),
                authorisation.app_auth_token.clone(),
            )),
            consent_url: self.consent_url.clone(),
            user_authorize_url: self.user_authorize_url.clone(),
            // The merchant's own product: its settings say (`with_jsapi`).
            jsapi: false,
        }
    }

    /// `app_cert_sn` and `alipay_root_cert_sn` in certificate mode.
    fn certificate_sns(&self) -> Option<(&str, &str)> {
        match &*self.trust {
            Trust::PublicKey(_) => None,
            Trust::Certificates(keys) => Some((&keys.app_cert_sn, &keys.root_cert_sn)),
        }
    }

    /// The keys an answer may be verified with: in certificate mode the one of the Alipay
    /// certificate it names, or, when it names none, each configured one.
    fn answer_keys(&self, alipay_cert_sn: Option<&str>) -> Result<Vec<&RsaVerifier>, String> {
        match (&*self.trust, alipay_cert_sn) {
            (Trust::PublicKey(key), _) => Ok(vec![key]),
            (Trust::Certificates(keys), Some(sn)) => keys.alipay_key(sn).map(|k| vec![k]).ok_or_else(|| {
                format!(
                    "signed with Alipay certificate {sn}, which alipay_certs does not hold: Alipay \
                     has rotated its certificate; download the new one \
                     (alipay.open.app.alipaycert.download or the open platform) and add it to \
                     alipay_certs"
                )
            }),
            (Trust::Certificates(keys), None) => Ok(keys.alipay.iter().map(|(_, k)| k).collect()),
        }
    }

    /// The application id.
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// Renders the full, signed parameter list of one call, `sign` last.
    fn signed_params(
        &self,
        cx: &CallContext,
        method: &str,
        notify_url: Option<&str>,
        return_url: Option<&str>,
        business: Vec<(&'static str, String)>,
    ) -> Result<Vec<(&'static str, String)>, AdapterError> {
        let mut params: Vec<(&'static str, String)> = vec![
            ("app_id", self.app_id.clone()),
            ("method", method.to_owned()),
            ("format", "JSON".to_owned()),
            ("charset", "utf-8".to_owned()),
            ("sign_type", "RSA2".to_owned()),
            ("timestamp", format_beijing(cx.now)?),
            ("version", "1.0".to_owned()),
        ];
        if let Some((app_cert_sn, root_cert_sn)) = self.certificate_sns() {
            params.push(("app_cert_sn", app_cert_sn.to_owned()));
            params.push(("alipay_root_cert_sn", root_cert_sn.to_owned()));
        }
        if let Some(url) = notify_url {
            params.push(("notify_url", url.to_owned()));
        }
        if let Some(url) = return_url {
            params.push(("return_url", url.to_owned()));
        }
        if let Some((auth_app_id, slot)) = &self.authorisation {
            let Some(token) = slot.current() else {
                return Err(AdapterError::Unauthorised {
                    code: "not_authorised".to_owned(),
                    message: format!(
                        "the merchant app {auth_app_id} has not authorised this ISV app yet"
                    ),
                });
            };
            params.push(("app_auth_token", token.expose().clone()));
        }
        params.extend(business);
        let content = sign_content(
            params.iter().map(|(k, v)| (*k, v.as_str())),
            SignRule::Request,
        );
        let sign = self
            .signer
            .sign_base64(content.as_bytes())
            .map_err(|_| AdapterError::Signing)?;
        params.push(("sign", sign));
        Ok(params)
    }

    /// A server-to-server call: protocol parameters in the query, `biz_content` in the form body.
    fn server_call<B: Serialize>(
        &self,
        cx: &CallContext,
        method: &str,
        notify_url: Option<&str>,
        biz: &B,
    ) -> Result<HttpRequest, AdapterError> {
        let biz_content = serde_json::to_string(biz)
            .map_err(|e| AdapterError::InvalidRequest(format!("biz_content: {e}")))?;
        self.server_call_with(cx, method, notify_url, vec![("biz_content", biz_content)])
    }

    /// A server-to-server call with its application parameters as they are (`biz_content`,
    /// or a method's own, like `alipay.system.oauth.token`'s `grant_type` and `code`): those
    /// go in the form body, the protocol parameters in the query.
    fn server_call_with(
        &self,
        cx: &CallContext,
        method: &str,
        notify_url: Option<&str>,
        business: Vec<(&'static str, String)>,
    ) -> Result<HttpRequest, AdapterError> {
        let in_body: Vec<&'static str> = business.iter().map(|(k, _)| *k).collect();
        let params = self.signed_params(cx, method, notify_url, None, business)?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        let mut body = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &params {
            // Application parameters go in the body, as Alipay's Java SDK sends them (the
            // token then stays out of URLs that proxies log).
            if in_body.contains(key) || *key == "app_auth_token" {
                body.append_pair(key, value);
            } else {
                query.append_pair(key, value);
            }
        }
        Ok(HttpRequest {
            method: HttpMethod::Post,
            url: format!("{}?{}", self.gateway_url, query.finish()),
            headers: vec![("content-type".to_owned(), FORM_CONTENT_TYPE.to_owned())],
            body: body.finish().into_bytes(),
        })
    }

    /// Opens a response: HTTP status, envelope, signature, common fields.
    fn open<T: DeserializeOwned>(
        &self,
        method: &str,
        resp: &HttpResponse,
    ) -> Result<Opened<T>, AdapterError> {
        self.open_with(method, resp, false)
    }

    /// [`AlipayAdapter::open`]; with `codeless_success`, a node without `code` is a success
    /// (`alipay.system.oauth.token` answers so; it must then be signed all the same).
    fn open_with<T: DeserializeOwned>(
        &self,
        method: &str,
        resp: &HttpResponse,
        codeless_success: bool,
    ) -> Result<Opened<T>, AdapterError> {
        if resp.status != 200 {
            return Err(AdapterError::Protocol(format!(
                "HTTP status {}",
                resp.status
            )));
        }
        let node_name = format!("{}_response", method.replace('.', "_"));
        let response = wire::split_signed_response(&resp.body, &node_name)
            .map_err(|e| AdapterError::Protocol(e.to_owned()))?;
        let node = response.node;
        let signed = match response.sign.as_deref() {
            Some(sign) if !sign.is_empty() => {
                let keys = self
                    .answer_keys(response.alipay_cert_sn.as_deref())
                    .map_err(|e| AdapterError::Protocol(format!("response {e}")))?;
                if !keys.iter().any(|key| verify_node(key, node, sign)) {
                    return Err(AdapterError::Protocol(
                        "response signature does not verify".to_owned(),
                    ));
                }
                true
            }
            _ => false,
        };
        let wire::MaybeCommon {
            code,
            msg,
            sub_code,
            sub_msg,
        } = serde_json::from_slice(node)
            .map_err(|e| AdapterError::Protocol(format!("response node: {e}")))?;
        let code = match code {
            Some(code) => code,
            None if codeless_success => "10000".to_owned(),
            None => {
                return Err(AdapterError::Protocol(
                    "response node: missing field `code`".to_owned(),
                ));
            }
        };
        let common = Common {
            code,
            msg,
            sub_code,
            sub_msg,
        };
        if common.code == "10000" && !signed {
            return Err(AdapterError::Protocol(
                "unsigned success response".to_owned(),
            ));
        }
        let body: T = serde_json::from_slice(node)
            .map_err(|e| AdapterError::Protocol(format!("response node: {e}")))?;
        Ok(Opened {
            common,
            signed,
            body,
        })
    }
}

/// Whether `key` signed a response node; Alipay's Java SDK retries once with `\/` unescaped
/// (china-wallets.md A.5).
fn verify_node(key: &RsaVerifier, node: &[u8], sign: &str) -> bool {
    if key.verify_base64(node, sign) {
        return true;
    }
    let text = String::from_utf8_lossy(node);
    text.contains("\\/") && key.verify_base64(text.replace("\\/", "/").as_bytes(), sign)
}

impl AlipayAdapter {
    /// Reads the answer to `alipay.trade.pay` (payment code, A.7): `10000` paid, `10003` the
    /// shopper is confirming, `20000` or a system error unknown (query), other `40004`s refused.
    fn parse_pay(
        &self,
        req: &CreatePayment,
        resp: &HttpResponse,
    ) -> Result<PaymentStatus, AdapterError> {
        let opened: Opened<wire::PayResponse> = self.open(PAY, resp)?;
        match opened.common.code.as_str() {
            "10000" => {
                let body = &opened.body;
                if body.out_trade_no.as_deref() != Some(req.provider_order_id.as_str()) {
                    return Err(AdapterError::Protocol(
                        "out_trade_no echo mismatch".to_owned(),
                    ));
                }
                Ok(PaymentStatus::Succeeded {
                    provider_ref: body
                        .trade_no
                        .clone()
                        .ok_or_else(|| AdapterError::Protocol("trade_no missing".to_owned()))?,
                    amount: parse_yuan(body.total_amount.as_deref(), "total_amount")?,
                    paid_at: body.gmt_payment.as_deref().and_then(parse_beijing),
                })
            }
            "10003" => Ok(PaymentStatus::AwaitingPayment {
                next_action: Some(NextAction::AwaitShopperConfirmation),
            }),
            "40004" => match opened.common.sub_code.as_deref() {
                Some("ACQ.SYSTEM_ERROR") | Some("ACQ.TRADE_HAS_SUCCESS") | None => {
                    Err(opened.indeterminate())
                }
                Some(_) => Ok(PaymentStatus::Failed {
                    code: opened.code(),
                    message: opened.message(),
                }),
            },
            _ => Err(opened.gateway_error()),
        }
    }
}

impl AlipayAdapter {
    /// Reads the answer to `alipay.trade.create` (JSAPI): `10000` with the `trade_no` the page
    /// passes to `tradePay`; a signed business refusal fails the payment (nobody could pay it
    /// yet); a system error or anything else is unknown (query).
    fn parse_trade_create(
        &self,
        req: &CreatePayment,
        resp: &HttpResponse,
    ) -> Result<PaymentStatus, AdapterError> {
        let opened: Opened<wire::CreateResponse> = self.open(TRADE_CREATE, resp)?;
        if opened.common.code == "10000" {
            if opened.body.out_trade_no.as_deref() != Some(req.provider_order_id.as_str()) {
                return Err(AdapterError::Protocol(
                    "out_trade_no echo mismatch".to_owned(),
                ));
            }
            let trade_no = opened
                .body
                .trade_no
                .clone()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| AdapterError::Protocol("trade_no missing".to_owned()))?;
            return Ok(PaymentStatus::AwaitingPayment {
                next_action: Some(NextAction::AlipayJsapi { trade_no }),
            });
        }
        match opened.business_code() {
            Some("ACQ.SYSTEM_ERROR") | Some("ACQ.TRADE_HAS_SUCCESS") => Err(opened.indeterminate()),
            Some(_) => Ok(PaymentStatus::Failed {
                code: opened.code(),
                message: opened.message(),
            }),
            None => Err(opened.gateway_error()),
        }
    }
}

#[derive(Serialize)]
struct BillBiz {
    bill_type: &'static str,
    bill_date: String,
}

#[derive(Serialize)]
struct OrderBiz<'a> {
    out_trade_no: &'a str,
}

#[derive(Serialize)]
struct RefundBiz<'a> {
    out_trade_no: &'a str,
    refund_amount: String,
    out_request_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund_reason: Option<&'a str>,
}

#[derive(Serialize)]
struct RefundQueryBiz<'a> {
    out_trade_no: &'a str,
    out_request_no: &'a str,
}

const PRECREATE: &str = "alipay.trade.precreate";
const PAY: &str = "alipay.trade.pay";
const PAGE_PAY: &str = "alipay.trade.page.pay";
const WAP_PAY: &str = "alipay.trade.wap.pay";
const TRADE_CREATE: &str = "alipay.trade.create";
const QUERY: &str = "alipay.trade.query";
const BILL: &str = "alipay.data.dataservice.bill.downloadurl.query";

/// Where Alipay serves bill files (`dwbillcenter.alipay.com`; its sandbox under
/// `alipaydev.com`).
const BILL_DOMAINS: &[&str] = &["alipay.com", "alipaydev.com"];
const CLOSE: &str = "alipay.trade.close";
const REFUND: &str = "alipay.trade.refund";
const REFUND_QUERY: &str = "alipay.trade.fastpay.refund.query";

impl PaymentAdapter for AlipayAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Alipay
    }

    fn capabilities(&self) -> Capabilities {
        if self.jsapi {
            CAPABILITIES_WITH_JSAPI
        } else {
            CAPABILITIES
        }
    }

    fn prepare_create(
        &self,
        cx: &CallContext,
        req: &CreatePayment,
    ) -> Result<Prepared<PaymentStatus>, AdapterError> {
        check_order_no(&req.provider_order_id, "out_trade_no")?;
        if req.subject.is_empty() || req.subject.chars().count() > 256 {
            return Err(AdapterError::InvalidParameter {
                param: "description",
                message: "Alipay takes a subject of 1-256 characters".into(),
            });
        }
        let minutes = (req.expires_at - cx.now).whole_minutes();
        if !(1..=MAX_TIMEOUT_MINUTES).contains(&minutes) {
            return Err(AdapterError::InvalidParameter {
                param: "expires_in_seconds",
                message: "Alipay takes an expiry between 1 minute and 15 days ahead".to_owned(),
            });
        }
        let (method, product_code) = match req.method {
            PaymentMethod::AlipayQr => (PRECREATE, None),
            PaymentMethod::AlipayWeb => (PAGE_PAY, Some("FAST_INSTANT_TRADE_PAY")),
            PaymentMethod::AlipayWap => (WAP_PAY, Some("QUICK_WAP_WAY")),
            PaymentMethod::AlipayPaymentCode => (PAY, Some("FACE_TO_FACE_PAYMENT")),
            PaymentMethod::AlipayJsapi if self.jsapi => (TRADE_CREATE, Some("JSAPI_PAY")),
            _ => {
                return Err(AdapterError::Unsupported {
                    op: Operation::Create,
                });
            }
        };
        let (scene, auth_code) = if req.method == PaymentMethod::AlipayPaymentCode {
            let code = req
                .payer
                .payment_code
                .as_deref()
                .filter(|c| facts::PAYMENT_CODE.matches(c))
                .ok_or_else(|| {
                    AdapterError::InvalidRequest(
                        "payer.payment_code is not an Alipay code".to_owned(),
                    )
                })?;
            (Some("bar_code"), Some(code))
        } else {
            (None, None)
        };
        let buyer = if req.method == PaymentMethod::AlipayJsapi {
            let id = req.payer.openid.as_deref().ok_or_else(|| {
                AdapterError::InvalidRequest("alipay_jsapi needs payer.openid".to_owned())
            })?;
            Some(
                buyer::BuyerId::parse(id).ok_or_else(|| AdapterError::InvalidParameter {
                    param: "payer.openid",
                    message: "not an Alipay open_id or 2088 user id".to_owned(),
                })?,
            )
        } else {
            None
        };
        let biz = wire::PayBizContent {
            out_trade_no: &req.provider_order_id,
            total_amount: yuan(req.amount)?,
            subject: &req.subject,
            product_code,
            body: req.description.as_deref().filter(|d| !d.is_empty()),
            timeout_express: format!("{minutes}m"),
            quit_url: match req.method {
                PaymentMethod::AlipayWap => req.return_url.as_deref(),
                _ => None,
            },
            seller_id: self.seller_id.as_deref(),
            scene,
            auth_code,
            buyer_id: buyer.and_then(buyer::BuyerId::user_id),
            buyer_open_id: buyer.and_then(buyer::BuyerId::open_id),
        };
        if matches!(
            req.method,
            PaymentMethod::AlipayQr | PaymentMethod::AlipayPaymentCode | PaymentMethod::AlipayJsapi
        ) {
            return self
                .server_call(cx, method, Some(&req.notify_url), &biz)
                .map(Prepared::Send);
        }
        let biz_content = serde_json::to_string(&biz)
            .map_err(|e| AdapterError::InvalidRequest(format!("biz_content: {e}")))?;
        let params = self.signed_params(
            cx,
            method,
            Some(&req.notify_url),
            req.return_url.as_deref(),
            vec![("biz_content", biz_content)],
        )?;
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &params {
            query.append_pair(key, value);
        }
        let url = format!("{}?{}", self.gateway_url, query.finish());
        Ok(Prepared::Ready(PaymentStatus::AwaitingPayment {
            next_action: Some(NextAction::Redirect { url }),
        }))
    }

    fn parse_create(
        &self,
        _cx: &CallContext,
        req: &CreatePayment,
        resp: &HttpResponse,
    ) -> Result<PaymentStatus, AdapterError> {
        if req.method == PaymentMethod::AlipayPaymentCode {
            return self.parse_pay(req, resp);
        }
        if req.method == PaymentMethod::AlipayJsapi {
            return self.parse_trade_create(req, resp);
        }
        if req.method != PaymentMethod::AlipayQr {
            return Err(AdapterError::Protocol(
                "redirect payments are not sent".to_owned(),
            ));
        }
        let opened: Opened<wire::PrecreateResponse> = self.open(PRECREATE, resp)?;
        if opened.common.code == "10000" {
            if let Some(echo) = opened.body.out_trade_no.as_deref()
                && echo != req.provider_order_id
            {
                return Err(AdapterError::Protocol(
                    "out_trade_no echo mismatch".to_owned(),
                ));
            }
            let qr_data = opened
                .body
                .qr_code
                .clone()
                .filter(|q| !q.is_empty())
                .ok_or_else(|| AdapterError::Protocol("qr_code missing".to_owned()))?;
            return Ok(PaymentStatus::AwaitingPayment {
                next_action: Some(NextAction::DisplayQr { qr_data }),
            });
        }
        if opened.common.code == "40004" {
            // Unsigned business failures are still trusted for create: the worst a forged one
            // can do is fail a payment nobody could pay yet.
            return match opened.common.sub_code.as_deref() {
                Some("ACQ.SYSTEM_ERROR") | Some("ACQ.TRADE_HAS_SUCCESS") | None => {
                    Err(opened.indeterminate())
                }
                Some(_) => Ok(PaymentStatus::Failed {
                    code: opened.code(),
                    message: opened.message(),
                }),
            };
        }
        Err(opened.gateway_error())
    }

    fn prepare_query(
        &self,
        cx: &CallContext,
        req: &PaymentRef,
    ) -> Result<Prepared<PaymentStatus>, AdapterError> {
        check_order_no(&req.provider_order_id, "out_trade_no")?;
        let biz = OrderBiz {
            out_trade_no: &req.provider_order_id,
        };
        self.server_call(cx, QUERY, None, &biz).map(Prepared::Send)
    }

    fn parse_query(
        &self,
        req: &PaymentRef,
        resp: &HttpResponse,
    ) -> Result<PaymentStatus, AdapterError> {
        let opened: Opened<wire::QueryResponse> = self.open(QUERY, resp)?;
        if opened.common.code == "10000" {
            let body = &opened.body;
            if body
                .out_trade_no
                .as_deref()
                .is_some_and(|o| o != req.provider_order_id)
            {
                return Err(AdapterError::Protocol(
                    "out_trade_no echo mismatch".to_owned(),
                ));
            }
            let status = body.trade_status.as_deref().unwrap_or_default();
            return Ok(match status {
                "WAIT_BUYER_PAY" => PaymentStatus::AwaitingPayment { next_action: None },
                "TRADE_SUCCESS" | "TRADE_FINISHED" => PaymentStatus::Succeeded {
                    provider_ref: body
                        .trade_no
                        .clone()
                        .ok_or_else(|| AdapterError::Protocol("trade_no missing".to_owned()))?,
                    amount: parse_yuan(body.total_amount.as_deref(), "total_amount")?,
                    paid_at: body.send_pay_date.as_deref().and_then(parse_beijing),
                },
                "TRADE_CLOSED" => PaymentStatus::Closed,
                other => PaymentStatus::Unrecognized(other.to_owned()),
            });
        }
        match opened.business_code() {
            Some("ACQ.TRADE_NOT_EXIST") => Ok(PaymentStatus::NotFound),
            Some(_) => Err(opened.indeterminate()),
            _ => Err(opened.gateway_error()),
        }
    }

    fn prepare_close(
        &self,
        cx: &CallContext,
        req: &PaymentRef,
    ) -> Result<Prepared<CloseStatus>, AdapterError> {
        check_order_no(&req.provider_order_id, "out_trade_no")?;
        let biz = OrderBiz {
            out_trade_no: &req.provider_order_id,
        };
        self.server_call(cx, CLOSE, None, &biz).map(Prepared::Send)
    }

    fn parse_close(
        &self,
        _req: &PaymentRef,
        resp: &HttpResponse,
    ) -> Result<CloseStatus, AdapterError> {
        let opened: Opened<wire::CloseResponse> = self.open(CLOSE, resp)?;
        if opened.common.code == "10000" {
            return Ok(CloseStatus::Closed);
        }
        match opened.business_code() {
            Some("ACQ.TRADE_NOT_EXIST") => Ok(CloseStatus::NotFound),
            Some("ACQ.TRADE_STATUS_ERROR")
            | Some("ACQ.TRADE_HAS_SUCCESS")
            | Some("ACQ.TRADE_HAS_FINISHED") => Ok(CloseStatus::Conflict {
                code: opened.code(),
            }),
            Some(_) => Err(opened.indeterminate()),
            None => Err(opened.gateway_error()),
        }
    }

    fn prepare_refund(
        &self,
        cx: &CallContext,
        req: &RefundRequest,
    ) -> Result<Prepared<RefundStatus>, AdapterError> {
        check_order_no(&req.provider_order_id, "out_trade_no")?;
        check_order_no(&req.provider_refund_id, "out_request_no")?;
        let biz = RefundBiz {
            out_trade_no: &req.provider_order_id,
            refund_amount: yuan(req.amount)?,
            out_request_no: &req.provider_refund_id,
            refund_reason: req.reason.as_deref().filter(|r| !r.is_empty()),
        };
        self.server_call(cx, REFUND, None, &biz).map(Prepared::Send)
    }

    fn parse_refund(
        &self,
        _req: &RefundRequest,
        resp: &HttpResponse,
    ) -> Result<RefundStatus, AdapterError> {
        let opened: Opened<wire::RefundResponse> = self.open(REFUND, resp)?;
        if opened.common.code == "10000" {
            // `fund_change=N` on a repeated out_request_no is still this refund's success.
            return Ok(RefundStatus::Succeeded {
                provider_ref: opened.body.trade_no.clone(),
            });
        }
        match opened.business_code() {
            Some("ACQ.SYSTEM_ERROR") => Err(opened.indeterminate()),
            Some(_) => Ok(RefundStatus::Failed {
                code: opened.code(),
                message: opened.message(),
            }),
            None => Err(opened.gateway_error()),
        }
    }

    fn prepare_refund_query(
        &self,
        cx: &CallContext,
        req: &RefundRequest,
    ) -> Result<Prepared<RefundStatus>, AdapterError> {
        check_order_no(&req.provider_order_id, "out_trade_no")?;
        check_order_no(&req.provider_refund_id, "out_request_no")?;
        let biz = RefundQueryBiz {
            out_trade_no: &req.provider_order_id,
            out_request_no: &req.provider_refund_id,
        };
        self.server_call(cx, REFUND_QUERY, None, &biz)
            .map(Prepared::Send)
    }

    fn parse_refund_query(
        &self,
        req: &RefundRequest,
        resp: &HttpResponse,
    ) -> Result<RefundStatus, AdapterError> {
        let opened: Opened<wire::RefundQueryResponse> = self.open(REFUND_QUERY, resp)?;
        if opened.common.code == "10000" {
            let body = &opened.body;
            match body.refund_status.as_deref() {
                Some("REFUND_PROCESSING") => return Ok(RefundStatus::Processing),
                Some("REFUND_FAIL") => {
                    return Ok(RefundStatus::Failed {
                        code: "REFUND_FAIL".to_owned(),
                        message: "refund failed".to_owned(),
                    });
                }
                Some("REFUND_SUCCESS") | None => {}
                Some(other) => {
                    return Err(AdapterError::Indeterminate {
                        code: other.to_owned(),
                        message: "unknown refund_status".to_owned(),
                    });
                }
            }
            // Unknown out_request_no still answers 10000, just without refund_amount (A.7).
            let Some(amount) = body.refund_amount.as_deref().filter(|a| !a.is_empty()) else {
                return Ok(RefundStatus::NotFound);
            };
            let amount = parse_yuan(Some(amount), "refund_amount")?;
            if amount != req.amount {
                return Err(AdapterError::Protocol(format!(
                    "refund_amount {} differs from the requested {}",
                    amount.to_decimal_string(),
                    req.amount.to_decimal_string()
                )));
            }
            return Ok(RefundStatus::Succeeded {
                provider_ref: body.trade_no.clone(),
            });
        }
        match opened.business_code() {
            Some("ACQ.TRADE_NOT_EXIST") => Ok(RefundStatus::NotFound),
            _ => Err(opened.gateway_error()),
        }
    }

    fn parse_notification(
        &self,
        raw: &RawNotification<'_>,
    ) -> Result<Notification, NotificationError> {
        let fields = parse_form_strict(raw.body)?;
        if let Some(charset) = fields.get("charset")
            && !charset.eq_ignore_ascii_case("utf-8")
        {
            return Err(NotificationError::Malformed(format!(
                "unsupported charset {charset:?}"
            )));
        }
        let sign = fields
            .get("sign")
            .filter(|s| !s.is_empty())
            .ok_or(NotificationError::BadSignature)?;
        if fields.get("sign_type").is_some_and(|t| t != "RSA2") {
            return Err(NotificationError::BadSignature);
        }
        // Certificate mode: a notification may name the Alipay certificate that signed it.
        // The V1 rule signs that field like any other; one SDK (pay-java-parent#66) found it
        // left out, so both are tried: the field only chooses among keys we already trust.
        let cert_sn = fields.get("alipay_cert_sn").map(String::as_str);
        let keys = self
            .answer_keys(cert_sn)
            .map_err(|_| NotificationError::BadSignature)?;
        let content = |without_sn: bool| {
            sign_content(
                fields
                    .iter()
                    .filter(|(k, _)| !(without_sn && *k == "alipay_cert_sn"))
                    .map(|(k, v)| (k.as_str(), v.as_str())),
                SignRule::NotificationV1,
            )
        };
        let mut contents = vec![content(false)];
        if cert_sn.is_some() && matches!(*self.trust, Trust::Certificates(_)) {
            contents.push(content(true));
        }
        let verified = keys.iter().any(|key| {
            contents
                .iter()
                .any(|text| key.verify_base64(text.as_bytes(), sign))
        });
        if !verified {
            return Err(NotificationError::BadSignature);
        }
        let field = |name: &str| {
            fields
                .get(name)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| NotificationError::Malformed(format!("{name} missing")))
        };
        if field("app_id")? != &self.app_id {
            return Err(NotificationError::WrongAccount);
        }
        // ISV mode: the app is the ISV's, shared by all its merchants; the merchant is the
        // authorising app.
        if let Some((auth_app_id, _)) = &self.authorisation
            && field("auth_app_id")? != auth_app_id
        {
            return Err(NotificationError::WrongAccount);
        }
        if let (Some(ours), Some(theirs)) = (self.seller_id.as_deref(), fields.get("seller_id"))
            && ours != theirs
        {
            return Err(NotificationError::WrongAccount);
        }
        let notify_type = field("notify_type")?;
        if notify_type != "trade_status_sync" {
            return Err(NotificationError::Unsupported(notify_type.clone()));
        }
        let money = |name: &str| -> Result<Money, NotificationError> {
            Money::parse_decimal(field(name)?, Currency::CNY)
                .map_err(|_| NotificationError::Malformed(format!("{name} is not an amount")))
        };
        let total = money("total_amount")?;
        let refunded_total = match fields.get("refund_fee").filter(|v| !v.is_empty()) {
            Some(_) => Some(money("refund_fee")?),
            None => None,
        };
        let paid = |fields: &HashMap<String, String>| -> Result<PaymentStatus, NotificationError> {
            Ok(PaymentStatus::Succeeded {
                provider_ref: field("trade_no")?.clone(),
                amount: total,
                paid_at: fields.get("gmt_payment").and_then(|t| parse_beijing(t)),
            })
        };
        let status = match field("trade_status")?.as_str() {
            "WAIT_BUYER_PAY" => PaymentStatus::AwaitingPayment { next_action: None },
            "TRADE_SUCCESS" | "TRADE_FINISHED" => paid(&fields)?,
            // A fully refunded trade closes too: it was paid, and refund_fee says how much went back.
            "TRADE_CLOSED" if refunded_total.is_some_and(|r| r.minor > 0) => paid(&fields)?,
            "TRADE_CLOSED" => PaymentStatus::Closed,
            other => PaymentStatus::Unrecognized(other.to_owned()),
        };
        Ok(Notification {
            dedupe_id: field("notify_id")?.clone(),
            provider_order_id: field("out_trade_no")?.clone(),
            total: Some(total),
            event: NotificationEvent::Payment {
                status,
                refunded_total,
            },
        })
    }

    fn notification_ack(&self, kind: AckKind) -> Ack {
        match kind {
            AckKind::Accepted => Ack {
                status: 200,
                content_type: "text/plain",
                body: b"success".to_vec(),
            },
            AckKind::Rejected => Ack {
                status: 400,
                content_type: "text/plain",
                body: b"fail".to_vec(),
            },
        }
    }

    /// `alipay.data.dataservice.bill.downloadurl.query` with `bill_type=trade` (A.11).
    fn prepare_statement(
        &self,
        cx: &CallContext,
        day: time::Date,
    ) -> Result<HttpRequest, AdapterError> {
        let biz = BillBiz {
            bill_type: "trade",
            bill_date: moongate_contract::statement::format_day(day),
        };
        self.server_call(cx, BILL, None, &biz)
    }

    /// A signed `bill_download_url` (valid 30 s: download at once); `isp.bill_not_exist` means
    /// nothing happened that day.
    fn parse_statement(&self, resp: &HttpResponse) -> Result<StatementLocation, AdapterError> {
        let opened: Opened<wire::BillResponse> = self.open(BILL, resp)?;
        if opened.common.code == "10000" {
            let url = opened
                .body
                .bill_download_url
                .filter(|u| !u.is_empty())
                .ok_or_else(|| AdapterError::Protocol("bill_download_url missing".to_owned()))?;
            return Ok(StatementLocation::Download { url, sha1: None });
        }
        match opened.business_code() {
            Some("isp.bill_not_exist") => Ok(StatementLocation::Empty),
            Some(_) => Err(opened.indeterminate()),
            None => Err(opened.gateway_error()),
        }
    }

    /// A plain GET of the link (it carries its own token); a browser-like user agent, since
    /// some of Alipay's download CDNs refuse bare clients. Alipay states no hash of the file,
    /// so what vouches for it is the signed answer that named the link and TLS to Alipay's own
    /// host: the link must be on an Alipay domain and is fetched over https (Alipay hands out
    /// `http://dwbillcenter.alipay.com/…` links, upgraded here), or on the configured gateway's
    /// origin (a local sandbox).
    fn prepare_statement_download(
        &self,
        _cx: &CallContext,
        url: &str,
    ) -> Result<HttpRequest, AdapterError> {
        let url = moongate_contract::check_download_url(url, BILL_DOMAINS, &self.gateway_url)
            .map_err(|why| AdapterError::Protocol(format!("bill_download_url {why}")))?;
        Ok(HttpRequest {
            method: HttpMethod::Get,
            url,
            headers: vec![(
                "user-agent".to_owned(),
                concat!(
                    "Mozilla/5.0 (compatible; Moongate/",
                    env!("CARGO_PKG_VERSION"),
                    ")"
                )
                .to_owned(),
            )],
            body: Vec::new(),
        })
    }

    fn read_statement(
        &self,
        source: &mut dyn StatementSource,
        limits: &StatementLimits,
        sink: &mut StatementSink<'_>,
    ) -> Result<StatementTotals, StatementError> {
        let account = self.seller_id.as_ref().map(|pid| format!("{pid}0156"));
        bill::read_trade_bill_zip(source, account.as_deref(), limits, sink)
    }

    /// Alipay's public key is configured by hand (public-key mode); there is nothing to fetch.
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
    /// Alipay's `auth_base`, for apps with the JSAPI product.
    fn payer_identity(&self) -> Option<&dyn moongate_contract::PayerIdentity> {
        self.jsapi
            .then_some(self as &dyn moongate_contract::PayerIdentity)
    }
}

/// Decodes a form body, refusing repeated keys (which a signature could not cover unambiguously).
pub fn parse_form_strict(body: &[u8]) -> Result<HashMap<String, String>, NotificationError> {
    if std::str::from_utf8(body).is_err() {
        return Err(NotificationError::Malformed("body is not UTF-8".to_owned()));
    }
    let mut fields = HashMap::new();
    for (key, value) in form_urlencoded::parse(body) {
        if fields
            .insert(key.clone().into_owned(), value.into_owned())
            .is_some()
        {
            return Err(NotificationError::Malformed(format!(
                "repeated field {key}"
            )));
        }
    }
    Ok(fields)
}
