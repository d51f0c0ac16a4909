//! WeChat Pay API v3 behind Moongate's adapter contract, plus the v2 `micropay` call that
//! payment codes still need.
//!
//! Byte-level rules follow `shared/reference/china-wallets.md` section B:
//! - requests carry `Authorization: WECHATPAY2-SHA256-RSA2048 …` over
//!   `METHOD\nPATH?QUERY\nTIMESTAMP\nNONCE\nBODY\n` ([`sign`]);
//! - every 2xx answer must carry a valid `Wechatpay-Signature` over
//!   `TIMESTAMP\nNONCE\nBODY\n`, within 5 minutes, by the key its `Wechatpay-Serial` names
//!   (public-key mode, certificate mode or both; [`verify`]);
//! - notifications are verified the same way, then `resource` is decrypted with
//!   `AEAD_AES_256_GCM` and the APIv3 key ([`aead`]);
//! - payment codes go through v2 `/pay/micropay` (XML, HMAC-SHA256; [`v2`]) and are then
//!   followed with the v3 query, which knows `MICROPAY` orders too.
//!
//! Outcomes are classified by what they mean for money: an unknown state or code is never a
//! success and never a definite failure.

#![warn(missing_docs)]

pub mod aead;
pub mod bill;
mod certificates;
pub mod facts;
mod mapping;
mod micropay;
pub mod oauth;
pub mod settings;
pub mod sign;
pub mod v2;
pub mod verify;
pub mod wire;

pub use facts::FACTS;
use mapping::*;
pub use mapping::{format_rfc3339_beijing, parse_compact_beijing};

use std::collections::BTreeMap;
use std::sync::Arc;

use moongate_contract::crypto::{Certificate, KeyError, RsaSigner, RsaVerifier};
use moongate_contract::{
    Ack, AckKind, AdapterError, CallContext, Capabilities, CloseStatus, CreatePayment, Currency,
    HttpMethod, HttpRequest, HttpResponse, JsapiParameters, Money, NextAction, Notification,
    NotificationError, NotificationEvent, Operation, PaymentAdapter, PaymentMethod, PaymentRef,
    PaymentStatus, Prepared, ProviderKind, RawNotification, RefundRequest, RefundStatus, Secret,
};
use moongate_contract::{
    StatementError, StatementLimits, StatementLocation, StatementSink, StatementSource,
    StatementTotals,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{OffsetDateTime, PrimitiveDateTime, UtcOffset};

use crate::verify::{PlatformKeys, VerifyError};

/// Beijing time: WeChat Pay writes its times with this offset.
const BEIJING: UtcOffset = match UtcOffset::from_hms(8, 0, 0) {
    Ok(offset) => offset,
    Err(_) => UtcOffset::UTC,
};

/// Longest `description` WeChat Pay accepts, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 127;

/// Longest v2 `body`, in bytes.
const MAX_V2_BODY_BYTES: usize = 128;

/// Unpaid orders are closed by WeChat Pay after 7 days; we never ask for longer.
const MAX_EXPIRY: time::Duration = time::Duration::days(7);

const OPERATIONS: &[Operation] = &[
    Operation::Create,
    Operation::Query,
    Operation::Close,
    Operation::Refund,
    Operation::RefundQuery,
    Operation::Notification,
    Operation::Statement,
    Operation::Certificates,
];

const CAPABILITIES: Capabilities = Capabilities {
    methods: &[
        PaymentMethod::WechatNative,
        PaymentMethod::WechatJsapi,
        PaymentMethod::WechatH5,
    ],
    currencies: &[Currency::CNY],
    operations: OPERATIONS,
};

const CAPABILITIES_WITH_PAYMENT_CODE: Capabilities = Capabilities {
    methods: &[
        PaymentMethod::WechatNative,
        PaymentMethod::WechatJsapi,
        PaymentMethod::WechatH5,
        PaymentMethod::WechatPaymentCode,
    ],
    currencies: &[Currency::CNY],
    operations: OPERATIONS,
};

/// What the adapter needs to know about one merchant account, secrets already resolved.
#[derive(Debug)]
pub struct AccountKeys<'a> {
    /// `mchid`.
    pub mchid: &'a str,
    /// `appid`.
    pub appid: &'a str,
    /// Merchant certificate serial (hex).
    pub merchant_serial_no: &'a str,
    /// Merchant API private key, PEM.
    pub merchant_private_key: &'a str,
    /// APIv3 key (32 bytes).
    pub apiv3_key: &'a str,
    /// API v2 key (32 bytes), for payment codes.
    pub api_v2_key: Option<&'a str>,
    /// WeChat Pay public key id and PEM.
    pub wechatpay_public_key: Option<(&'a str, &'a str)>,
    /// Platform certificates, PEM.
    pub platform_certificates: &'a [String],
    /// API base URL without trailing slash.
    pub api_base_url: &'a str,
    /// The app's web OAuth (`snsapi_base`), when its secret is configured.
    pub oauth: Option<oauth::OAuth>,
}

/// A sub-merchant (特约商户) of a WeChat Pay service provider: its adapter is made from the
/// provider's ([`WechatPayAdapter::for_sub_merchant`]).
#[derive(Debug, Clone, Copy)]
pub struct SubMerchant<'a> {
    /// `sub_mchid`.
    pub sub_mchid: &'a str,
    /// `sub_appid`: when set, JSAPI payers are `sub_openid`s under it and the pay-sign names
    /// it; otherwise they are `sp_openid`s under the provider's app.
    pub sub_appid: Option<&'a str>,
}

/// The sub-merchant an adapter in partner mode names in every call.
#[derive(Debug)]
struct Partnered {
    sub_mchid: String,
    sub_appid: Option<String>,
}

/// Which key failed to load.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccountError {
    /// The merchant private key.
    #[error("merchant_private_key: {0}")]
    MerchantPrivateKey(KeyError),
    /// The APIv3 key.
    #[error("apiv3_key: must be exactly 32 bytes")]
    ApiV3Key,
    /// The v2 key.
    #[error("api_v2_key: must be exactly 32 bytes")]
    ApiV2Key,
    /// The WeChat Pay public key.
    #[error("wechatpay_public_key: {0}")]
    PublicKey(KeyError),
    /// A platform certificate.
    #[error("platform_certificates[{0}]: {1}")]
    Certificate(usize, KeyError),
}

/// One WeChat Pay merchant: a direct merchant (`mchid` + `appid`), or a sub-merchant signed
/// for by its service provider (partner mode: `mchid` and `appid` are the provider's).
#[derive(Debug)]
pub struct WechatPayAdapter {
    mchid: String,
    appid: String,
    partner: Option<Partnered>,
    serial_no: String,
    base_url: String,
    // The keys, shared by every sub-merchant adapter of one service provider.
    signer: Arc<RsaSigner>,
    api_v3_key: Arc<Secret<Vec<u8>>>,
    api_v2_key: Option<Arc<Secret<String>>>,
    platform: Arc<PlatformKeys>,
    /// The app's web OAuth, when its secret is configured (shared like the keys).
    oauth: Option<Arc<oauth::OAuth>>,
}

/// A platform certificate downloaded from `GET /v3/certificates`, decrypted and checked.
pub use moongate_contract::ProviderCertificate as PlatformCertificate;

/// A non-2xx answer, decoded.
#[derive(Debug)]
struct ApiFailure {
    status: u16,
    code: String,
    message: String,
}

impl ApiFailure {
    /// The default classification: refused before acting (4xx except a few), or unknown.
    fn into_error(self) -> AdapterError {
        let ApiFailure {
            status,
            code,
            message,
        } = self;
        match status {
            400 | 401 | 403 | 404 | 429 => AdapterError::Rejected { code, message },
            _ => AdapterError::Indeterminate { code, message },
        }
    }
}

/// A verified v3 answer.
enum Answer {
    Ok(Vec<u8>),
    Failed(ApiFailure),
}

impl WechatPayAdapter {
    /// Loads the keys of one account.
    pub fn new(keys: &AccountKeys<'_>) -> Result<WechatPayAdapter, AccountError> {
        let signer = RsaSigner::from_pem(keys.merchant_private_key)
            .map_err(AccountError::MerchantPrivateKey)?;
        if keys.apiv3_key.len() != 32 {
            return Err(AccountError::ApiV3Key);
        }
        if keys.api_v2_key.is_some_and(|k| k.len() != 32) {
            return Err(AccountError::ApiV2Key);
        }
        let mut platform = PlatformKeys::new();
        if let Some((id, pem)) = keys.wechatpay_public_key {
            let key = RsaVerifier::from_pem(pem).map_err(AccountError::PublicKey)?;
            platform = platform.with_public_key(id, key);
        }
        for (index, pem) in keys.platform_certificates.iter().enumerate() {
            let certificate =
                Certificate::from_pem(pem).map_err(|e| AccountError::Certificate(index, e))?;
            platform = platform.with_certificate(&certificate.serial_hex, certificate.verifier);
        }
        Ok(WechatPayAdapter {
            mchid: keys.mchid.to_owned(),
            appid: keys.appid.to_owned(),
            partner: None,
            serial_no: keys.merchant_serial_no.to_ascii_uppercase(),
            base_url: keys.api_base_url.trim_end_matches('/').to_owned(),
            signer: Arc::new(signer),
            api_v3_key: Arc::new(Secret::new(keys.apiv3_key.as_bytes().to_vec())),
            api_v2_key: keys.api_v2_key.map(|k| Arc::new(Secret::new(k.to_owned()))),
            platform: Arc::new(platform),
            oauth: keys.oauth.clone().map(Arc::new),
        })
    }

    /// The adapter of one sub-merchant of this service provider: the same keys (shared, not
    /// loaded again: a provider may serve thousands), naming `sub` in every call.
    pub fn for_sub_merchant(&self, sub: SubMerchant<'_>) -> WechatPayAdapter {
        WechatPayAdapter {
            mchid: self.mchid.clone(),
            appid: self.appid.clone(),
            partner: Some(Partnered {
                sub_mchid: sub.sub_mchid.to_owned(),
                sub_appid: sub.sub_appid.map(str::to_owned),
            }),
            serial_no: self.serial_no.clone(),
            base_url: self.base_url.clone(),
            signer: Arc::clone(&self.signer),
            api_v3_key: Arc::clone(&self.api_v3_key),
            api_v2_key: self.api_v2_key.clone(),
            platform: Arc::clone(&self.platform),
            // The provider's app's OAuth gives `sp_openid`s: only for sub-merchants that pay
            // under the provider's app (a `sub_appid`'s secret is the sub-merchant's).
            oauth: if sub.sub_appid.is_none() {
                self.oauth.clone()
            } else {
                None
            },
        }
    }

    /// A sub-merchant's adapter whose own app (`sub_appid`) learns its payers' `sub_openid`s
    /// with `oauth` (its official account's secret).
    pub fn with_oauth(mut self, oauth: oauth::OAuth) -> WechatPayAdapter {
        self.oauth = Some(Arc::new(oauth));
        self
    }

    /// The merchant id (the service provider's, in partner mode).
    pub fn mchid(&self) -> &str {
        &self.mchid
    }

    /// The sub-merchant's id, in partner mode.
    pub fn sub_mchid(&self) -> Option<&str> {
        self.partner.as_ref().map(|p| p.sub_mchid.as_str())
    }

    /// The app a JSAPI payer's openid belongs to and the pay-sign names.
    fn payer_appid(&self) -> &str {
        self.partner
            .as_ref()
            .and_then(|p| p.sub_appid.as_deref())
            .unwrap_or(&self.appid)
    }

    /// Renders a signed v3 request. `path_and_query` is exactly what goes on the wire.
    pub fn v3_request(
        &self,
        cx: &CallContext,
        method: HttpMethod,
        path_and_query: &str,
        body: Option<String>,
    ) -> Result<HttpRequest, AdapterError> {
        let body = body.unwrap_or_default();
        let timestamp = cx.now.unix_timestamp();
        let message =
            sign::request_message(method.as_str(), path_and_query, timestamp, &cx.nonce, &body);
        let signature = self
            .signer
            .sign_base64(message.as_bytes())
            .map_err(|_| AdapterError::Signing)?;
        let mut headers = vec![
            (
                "authorization".to_owned(),
                sign::authorization(
                    &self.mchid,
                    &cx.nonce,
                    timestamp,
                    &self.serial_no,
                    &signature,
                ),
            ),
            ("accept".to_owned(), "application/json".to_owned()),
            (
                "user-agent".to_owned(),
                concat!("Moongate/", env!("CARGO_PKG_VERSION")).to_owned(),
            ),
        ];
        if method == HttpMethod::Post {
            headers.push(("content-type".to_owned(), "application/json".to_owned()));
        }
        if let Some(serial) = self.platform.preferred_serial() {
            headers.push(("wechatpay-serial".to_owned(), serial));
        }
        Ok(HttpRequest {
            method,
            url: format!("{}{path_and_query}", self.base_url),
            headers,
            body: body.into_bytes(),
        })
    }

    fn post_json<B: Serialize>(
        &self,
        cx: &CallContext,
        path: &str,
        body: &B,
    ) -> Result<HttpRequest, AdapterError> {
        let json = serde_json::to_string(body)
            .map_err(|e| AdapterError::InvalidRequest(format!("request body: {e}")))?;
        self.v3_request(cx, HttpMethod::Post, path, Some(json))
    }

    /// Verifies a v3 answer. A 2xx must be signed; an error body is read whether signed or
    /// not (TLS protects it; the Go SDK does the same), but a signature that is present must
    /// verify.
    fn open(&self, resp: &HttpResponse) -> Result<Answer, AdapterError> {
        let signed = resp.header("wechatpay-signature").is_some();
        if (200..300).contains(&resp.status) || signed {
            self.platform
                .verify(
                    |name| resp.header(name).map(str::to_owned),
                    &resp.body,
                    resp.received_at,
                )
                .map_err(|e| AdapterError::Protocol(format!("response signature: {e}")))?;
        }
        if (200..300).contains(&resp.status) && resp.status != 202 {
            return Ok(Answer::Ok(resp.body.clone()));
        }
        if resp.status == 202 {
            return Err(AdapterError::Indeterminate {
                code: "ACCEPTED".to_owned(),
                message: "accepted, not yet processed".to_owned(),
            });
        }
        let error: wire::ErrorBody = serde_json::from_slice(&resp.body).unwrap_or_default();
        if error.code.is_empty() {
            return Err(AdapterError::Protocol(format!(
                "HTTP status {} without an error body",
                resp.status
            )));
        }
        Ok(Answer::Failed(ApiFailure {
            status: resp.status,
            code: error.code,
            message: error.message,
        }))
    }

    fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, AdapterError> {
        serde_json::from_slice(body).map_err(|e| AdapterError::Protocol(format!("answer: {e}")))
    }

    fn check_transaction(
        &self,
        tx: &wire::Transaction,
        order_no: &str,
    ) -> Result<(), AdapterError> {
        if tx.out_trade_no != order_no {
            return Err(AdapterError::Protocol(
                "out_trade_no echo mismatch".to_owned(),
            ));
        }
        // What the answer echoes must be ours; what it leaves out is not held against it.
        let differs =
            |echo: &Option<String>, ours: &str| echo.as_deref().is_some_and(|e| e != ours);
        let (mchid, appid) = match &self.partner {
            None => (&tx.mchid, &tx.appid),
            Some(partner) => {
                if differs(&tx.sub_mchid, &partner.sub_mchid) {
                    return Err(AdapterError::Protocol("sub_mchid echo mismatch".to_owned()));
                }
                if let Some(sub_appid) = &partner.sub_appid
                    && differs(&tx.sub_appid, sub_appid)
                {
                    return Err(AdapterError::Protocol("sub_appid echo mismatch".to_owned()));
                }
                (&tx.sp_mchid, &tx.sp_appid)
            }
        };
        if differs(mchid, &self.mchid) {
            return Err(AdapterError::Protocol("mchid echo mismatch".to_owned()));
        }
        if differs(appid, &self.appid) {
            return Err(AdapterError::Protocol("appid echo mismatch".to_owned()));
        }
        Ok(())
    }

    /// Whether a decrypted payment notification is about this account: the merchant and app
    /// (in partner mode the provider's, and the sub-merchant) must be named and be ours.
    fn owns_transaction(&self, tx: &wire::Transaction) -> bool {
        match &self.partner {
            None => {
                tx.mchid.as_deref() == Some(self.mchid.as_str())
                    && tx.appid.as_deref() == Some(self.appid.as_str())
            }
            Some(partner) => {
                tx.sp_mchid.as_deref() == Some(self.mchid.as_str())
                    && tx.sp_appid.as_deref() == Some(self.appid.as_str())
                    && tx.sub_mchid.as_deref() == Some(partner.sub_mchid.as_str())
            }
        }
    }

    /// Whether a decrypted refund notification is about this account.
    fn owns_refund(&self, notice: &wire::RefundNotice) -> bool {
        match &self.partner {
            None => notice.mchid.as_deref() == Some(self.mchid.as_str()),
            Some(partner) => {
                notice.sp_mchid.as_deref() == Some(self.mchid.as_str())
                    && notice.sub_mchid.as_deref() == Some(partner.sub_mchid.as_str())
            }
        }
    }

    /// The query string naming the merchant of an order: `mchid=…`, or in partner mode
    /// `sp_mchid=…&sub_mchid=…`.
    fn merchant_query(&self) -> String {
        match &self.partner {
            None => format!("mchid={}", encode_path_segment(&self.mchid)),
            Some(partner) => format!(
                "sp_mchid={}&sub_mchid={}",
                encode_path_segment(&self.mchid),
                encode_path_segment(&partner.sub_mchid)
            ),
        }
    }

    /// `/v3/pay/transactions` or, in partner mode, `/v3/pay/partner/transactions`.
    fn transactions_path(&self) -> &'static str {
        if self.partner.is_some() {
            "/v3/pay/partner/transactions"
        } else {
            "/v3/pay/transactions"
        }
    }

    fn pay_sign(&self, cx: &CallContext, prepay_id: &str) -> Result<JsapiParameters, AdapterError> {
        let time_stamp = cx.now.unix_timestamp().to_string();
        let package = format!("prepay_id={prepay_id}");
        let app_id = self.payer_appid();
        let message = sign::jsapi_message(app_id, &time_stamp, &cx.nonce, &package);
        let pay_sign = self
            .signer
            .sign_base64(message.as_bytes())
            .map_err(|_| AdapterError::Signing)?;
        Ok(JsapiParameters {
            app_id: app_id.to_owned(),
            time_stamp,
            nonce_str: cx.nonce.clone(),
            package,
            sign_type: "RSA".to_owned(),
            pay_sign,
        })
    }
}

impl PaymentAdapter for WechatPayAdapter {
    fn kind(&self) -> ProviderKind {
        ProviderKind::WechatPay
    }

    fn capabilities(&self) -> Capabilities {
        if self.api_v2_key.is_some() {
            CAPABILITIES_WITH_PAYMENT_CODE
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
        if req.method == PaymentMethod::WechatPaymentCode {
            return self.micropay_request(cx, req).map(Prepared::Send);
        }
        let path =
            order_path(req.method, self.partner.is_some()).ok_or(AdapterError::Unsupported {
                op: Operation::Create,
            })?;
        let description: String = req.subject.chars().take(MAX_DESCRIPTION_CHARS).collect();
        if description.trim().is_empty() {
            return Err(AdapterError::InvalidRequest(
                "description is empty".to_owned(),
            ));
        }
        let ahead = req.expires_at - cx.now;
        if ahead < time::Duration::minutes(1) || ahead > MAX_EXPIRY {
            return Err(AdapterError::InvalidParameter {
                param: "expires_in_seconds",
                message: "WeChat Pay takes an expiry between 1 minute and 7 days ahead".to_owned(),
            });
        }
        let openid = match req.method {
            PaymentMethod::WechatJsapi => Some(
                req.payer
                    .openid
                    .as_deref()
                    .filter(|o| !o.is_empty())
                    .ok_or_else(|| AdapterError::InvalidParameter {
                        param: "payer.openid",
                        message: "wechat_jsapi needs payer.openid".to_owned(),
                    })?,
            ),
            _ => None,
        };
        let scene_info = match req.method {
            PaymentMethod::WechatH5 => Some(wire::SceneInfo {
                payer_client_ip: req
                    .payer
                    .client_ip
                    .as_deref()
                    .filter(|ip| !ip.is_empty())
                    .ok_or_else(|| AdapterError::InvalidParameter {
                        param: "payer.client_ip",
                        message: "wechat_h5 needs payer.client_ip".to_owned(),
                    })?,
                h5_info: wire::H5Info { kind: "Wap" },
            }),
            _ => None,
        };
        let (merchant, payer) = match &self.partner {
            None => (
                wire::OrderMerchant::Direct(wire::DirectMerchant {
                    appid: &self.appid,
                    mchid: &self.mchid,
                }),
                openid.map(|openid| wire::Payer::Direct(wire::OrderPayer { openid })),
            ),
            Some(partner) => (
                wire::OrderMerchant::Partner(wire::PartnerMerchant {
                    sp_appid: &self.appid,
                    sp_mchid: &self.mchid,
                    sub_appid: partner.sub_appid.as_deref(),
                    sub_mchid: &partner.sub_mchid,
                }),
                // The payer's openid is under the sub-merchant's app when it has one.
                openid.map(|openid| {
                    let (sp_openid, sub_openid) = match partner.sub_appid {
                        Some(_) => (None, Some(openid)),
                        None => (Some(openid), None),
                    };
                    wire::Payer::Partner(wire::PartnerPayer {
                        sp_openid,
                        sub_openid,
                    })
                }),
            ),
        };
        let body = wire::OrderRequest {
            merchant,
            description: &description,
            out_trade_no: &req.provider_order_id,
            time_expire: format_rfc3339_beijing(req.expires_at)?,
            notify_url: &req.notify_url,
            amount: wire::OrderAmount {
                total: fen(req.amount)?,
                currency: "CNY",
            },
            payer,
            scene_info,
        };
        self.post_json(cx, path, &body).map(Prepared::Send)
    }

    fn parse_create(
        &self,
        cx: &CallContext,
        req: &CreatePayment,
        resp: &HttpResponse,
    ) -> Result<PaymentStatus, AdapterError> {
        if req.method == PaymentMethod::WechatPaymentCode {
            return self.parse_micropay(req, resp);
        }
        let failure = match self.open(resp)? {
            Answer::Ok(body) => {
                let answer: wire::OrderResponse = Self::decode(&body)?;
                let missing = |what: &str| AdapterError::Protocol(format!("{what} missing"));
                let next_action = match req.method {
                    PaymentMethod::WechatNative => NextAction::DisplayQr {
                        qr_data: answer
                            .code_url
                            .filter(|c| !c.is_empty())
                            .ok_or_else(|| missing("code_url"))?,
                    },
                    PaymentMethod::WechatJsapi => NextAction::WechatJsapi {
                        parameters: self.pay_sign(
                            cx,
                            &answer
                                .prepay_id
                                .filter(|p| !p.is_empty())
                                .ok_or_else(|| missing("prepay_id"))?,
                        )?,
                    },
                    PaymentMethod::WechatH5 => {
                        let mut url = answer
                            .h5_url
                            .filter(|u| !u.is_empty())
                            .ok_or_else(|| missing("h5_url"))?;
                        // WeChat sends the shopper to `redirect_url` after the cashier.
                        if let Some(back) = &req.return_url {
                            url.push_str(if url.contains('?') { "&" } else { "?" });
                            url.push_str("redirect_url=");
                            url.extend(form_urlencoded::byte_serialize(back.as_bytes()));
                        }
                        NextAction::Redirect { url }
                    }
                    _ => {
                        return Err(AdapterError::Unsupported {
                            op: Operation::Create,
                        });
                    }
                };
                return Ok(PaymentStatus::AwaitingPayment {
                    next_action: Some(next_action),
                });
            }
            Answer::Failed(failure) => failure,
        };
        match failure.code.as_str() {
            // Already paid, or the number was used before: the query tells.
            "ORDERPAID" | "OUT_TRADE_NO_USED" | "SYSTEM_ERROR" | "SYSTEMERROR" | "BANKERROR" => {
                Err(AdapterError::Indeterminate {
                    code: failure.code,
                    message: failure.message,
                })
            }
            "ORDERCLOSED" | "ORDER_CLOSED" => Ok(PaymentStatus::Closed),
            _ if failure.status == 403 => Ok(PaymentStatus::Failed {
                code: failure.code,
                message: failure.message,
            }),
            _ => Err(failure.into_error()),
        }
    }

    fn prepare_query(
        &self,
        cx: &CallContext,
        req: &PaymentRef,
    ) -> Result<Prepared<PaymentStatus>, AdapterError> {
        check_order_no(&req.provider_order_id, "out_trade_no")?;
        let path = format!(
            "{}/out-trade-no/{}?{}",
            self.transactions_path(),
            encode_path_segment(&req.provider_order_id),
            self.merchant_query()
        );
        self.v3_request(cx, HttpMethod::Get, &path, None)
            .map(Prepared::Send)
    }

    fn parse_query(
        &self,
        req: &PaymentRef,
        resp: &HttpResponse,
    ) -> Result<PaymentStatus, AdapterError> {
        match self.open(resp)? {
            Answer::Ok(body) => {
                let tx: wire::Transaction = Self::decode(&body)?;
                self.check_transaction(&tx, &req.provider_order_id)?;
                transaction_status(&tx)
            }
            Answer::Failed(failure) if failure.status == 404 && order_missing(&failure.code) => {
                Ok(PaymentStatus::NotFound)
            }
            Answer::Failed(failure) => Err(failure.into_error()),
        }
    }

    fn prepare_close(
        &self,
        cx: &CallContext,
        req: &PaymentRef,
    ) -> Result<Prepared<CloseStatus>, AdapterError> {
        check_order_no(&req.provider_order_id, "out_trade_no")?;
        let path = format!(
            "{}/out-trade-no/{}/close",
            self.transactions_path(),
            encode_path_segment(&req.provider_order_id)
        );
        #[derive(Serialize)]
        struct CloseBody<'a> {
            mchid: &'a str,
        }
        #[derive(Serialize)]
        struct PartnerCloseBody<'a> {
            sp_mchid: &'a str,
            sub_mchid: &'a str,
        }
        match &self.partner {
            None => self.post_json(cx, &path, &CloseBody { mchid: &self.mchid }),
            Some(partner) => self.post_json(
                cx,
                &path,
                &PartnerCloseBody {
                    sp_mchid: &self.mchid,
                    sub_mchid: &partner.sub_mchid,
                },
            ),
        }
        .map(Prepared::Send)
    }

    fn parse_close(
        &self,
        _req: &PaymentRef,
        resp: &HttpResponse,
    ) -> Result<CloseStatus, AdapterError> {
        match self.open(resp)? {
            Answer::Ok(_) if resp.status == 204 => Ok(CloseStatus::Closed),
            Answer::Ok(_) => Err(AdapterError::Protocol(format!(
                "close answered HTTP {} instead of 204",
                resp.status
            ))),
            Answer::Failed(failure) => match failure.code.as_str() {
                code if order_missing(code) => Ok(CloseStatus::NotFound),
                "ORDERPAID" | "ORDER_PAID" | "TRADE_ERROR" | "ORDERCLOSED" | "ORDER_CLOSED" => {
                    Ok(CloseStatus::Conflict { code: failure.code })
                }
                _ => Err(failure.into_error()),
            },
        }
    }

    fn prepare_refund(
        &self,
        cx: &CallContext,
        req: &RefundRequest,
    ) -> Result<Prepared<RefundStatus>, AdapterError> {
        check_order_no(&req.provider_order_id, "out_trade_no")?;
        check_order_no(&req.provider_refund_id, "out_refund_no")?;
        let reason: Option<String> = req
            .reason
            .as_deref()
            .filter(|r| !r.is_empty())
            .map(|r| r.chars().take(80).collect());
        let notify_url = req.notify_url.as_deref().ok_or_else(|| {
            AdapterError::InvalidRequest("refunds need a notification URL".to_owned())
        })?;
        let body = wire::RefundRequestBody {
            sub_mchid: self.sub_mchid(),
            out_trade_no: &req.provider_order_id,
            out_refund_no: &req.provider_refund_id,
            reason: reason.as_deref(),
            notify_url,
            amount: wire::RefundAmountRequest {
                refund: fen(req.amount)?,
                total: fen(req.payment_amount)?,
                currency: "CNY",
            },
        };
        self.post_json(cx, "/v3/refund/domestic/refunds", &body)
            .map(Prepared::Send)
    }

    fn parse_refund(
        &self,
        req: &RefundRequest,
        resp: &HttpResponse,
    ) -> Result<RefundStatus, AdapterError> {
        match self.open(resp)? {
            Answer::Ok(body) => {
                let refund = read_refund(&body, req)?;
                refund_status(&refund.status, refund.refund_id.as_deref())
            }
            Answer::Failed(failure) => match (failure.status, failure.code.as_str()) {
                (_, "SYSTEM_ERROR" | "SYSTEMERROR") => Err(failure.into_error()),
                (429, _) | (401, _) => Err(failure.into_error()),
                // NOT_ENOUGH, USER_ACCOUNT_ABNORMAL, INVALID_REQUEST (amount exceeds, too old),
                // RESOURCE_NOT_EXISTS, PARAM_ERROR, NO_AUTH: the refund did not happen.
                (400 | 403 | 404, _) => Ok(RefundStatus::Failed {
                    code: failure.code,
                    message: failure.message,
                }),
                _ => Err(failure.into_error()),
            },
        }
    }

    fn prepare_refund_query(
        &self,
        cx: &CallContext,
        req: &RefundRequest,
    ) -> Result<Prepared<RefundStatus>, AdapterError> {
        check_order_no(&req.provider_refund_id, "out_refund_no")?;
        let mut path = format!(
            "/v3/refund/domestic/refunds/{}",
            encode_path_segment(&req.provider_refund_id)
        );
        if let Some(sub_mchid) = self.sub_mchid() {
            path.push_str("?sub_mchid=");
            path.push_str(&encode_path_segment(sub_mchid));
        }
        self.v3_request(cx, HttpMethod::Get, &path, None)
            .map(Prepared::Send)
    }

    fn parse_refund_query(
        &self,
        req: &RefundRequest,
        resp: &HttpResponse,
    ) -> Result<RefundStatus, AdapterError> {
        match self.open(resp)? {
            Answer::Ok(body) => {
                let refund = read_refund(&body, req)?;
                let refunded = refund.amount.as_ref().and_then(|a| a.refund);
                if refunded.is_some_and(|r| r != req.amount.minor) {
                    return Err(AdapterError::Protocol(
                        "refund amount differs from the requested one".to_owned(),
                    ));
                }
                refund_status(&refund.status, refund.refund_id.as_deref())
            }
            Answer::Failed(failure) if failure.status == 404 => Ok(RefundStatus::NotFound),
            Answer::Failed(failure) => Err(failure.into_error()),
        }
    }

    fn parse_notification(
        &self,
        raw: &RawNotification<'_>,
    ) -> Result<Notification, NotificationError> {
        let header = |name: &str| {
            raw.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        self.platform
            .verify(header, raw.body, raw.received_at)
            .map_err(|e| match e {
                VerifyError::Stale => NotificationError::Stale,
                VerifyError::MissingHeader(name) => {
                    NotificationError::Malformed(format!("missing header {name}"))
                }
                _ => NotificationError::BadSignature,
            })?;
        let envelope: wire::Envelope = serde_json::from_slice(raw.body)
            .map_err(|e| NotificationError::Malformed(format!("envelope: {e}")))?;
        if envelope.resource.algorithm != "AEAD_AES_256_GCM" {
            return Err(NotificationError::Malformed(format!(
                "unsupported algorithm {}",
                envelope.resource.algorithm
            )));
        }
        let plain = aead::decrypt(
            self.api_v3_key.expose(),
            &envelope.resource.nonce,
            &envelope.resource.associated_data,
            &envelope.resource.ciphertext,
        )
        .map_err(|_| NotificationError::Undecryptable)?;
        let malformed =
            |e: serde_json::Error| NotificationError::Malformed(format!("resource: {e}"));
        match envelope.event_type.as_str() {
            "TRANSACTION.SUCCESS" => {
                let tx: wire::Transaction = serde_json::from_slice(&plain).map_err(malformed)?;
                // Every sub-merchant of a provider shares its keys: verified and decrypted,
                // the notification is still refused here unless it names this sub-merchant.
                if !self.owns_transaction(&tx) {
                    return Err(NotificationError::WrongAccount);
                }
                let total = transaction_amount(&tx)
                    .map_err(|e| NotificationError::Malformed(e.to_string()))?;
                let status = transaction_status(&tx)
                    .map_err(|e| NotificationError::Malformed(e.to_string()))?;
                Ok(Notification {
                    dedupe_id: envelope.id,
                    provider_order_id: tx.out_trade_no,
                    total: Some(total),
                    event: NotificationEvent::Payment {
                        status,
                        refunded_total: None,
                    },
                })
            }
            "REFUND.SUCCESS" | "REFUND.ABNORMAL" | "REFUND.CLOSED" => {
                let notice: wire::RefundNotice =
                    serde_json::from_slice(&plain).map_err(malformed)?;
                if !self.owns_refund(&notice) {
                    return Err(NotificationError::WrongAccount);
                }
                let amount = notice.amount.as_ref();
                let (Some(total), Some(refund)) =
                    (amount.and_then(|a| a.total), amount.and_then(|a| a.refund))
                else {
                    return Err(NotificationError::Malformed("amount missing".to_owned()));
                };
                let status = refund_status(&notice.refund_status, notice.refund_id.as_deref())
                    .map_err(|e| NotificationError::Malformed(e.to_string()))?;
                Ok(Notification {
                    dedupe_id: envelope.id,
                    provider_order_id: notice.out_trade_no,
                    total: Some(Money::new(total, Currency::CNY)),
                    event: NotificationEvent::Refund {
                        provider_refund_id: notice.out_refund_no,
                        amount: Money::new(refund, Currency::CNY),
                        status,
                    },
                })
            }
            other => Err(NotificationError::Unsupported(other.to_owned())),
        }
    }

    fn notification_ack(&self, kind: AckKind) -> Ack {
        match kind {
            // "HTTP 200 or 204, no body needed" (B.6).
            AckKind::Accepted => Ack {
                status: 204,
                content_type: "application/json",
                body: Vec::new(),
            },
            AckKind::Rejected => Ack {
                status: 500,
                content_type: "application/json",
                body: r#"{"code":"FAIL","message":"失败"}"#.as_bytes().to_vec(),
            },
        }
    }

    /// `GET /v3/bill/tradebill?bill_date=…&bill_type=ALL` (B.7): every payment and refund line;
    /// in partner mode `&sub_mchid=…`, the sub-merchant's own bill.
    fn prepare_statement(
        &self,
        cx: &CallContext,
        day: time::Date,
    ) -> Result<HttpRequest, AdapterError> {
        let mut path = format!(
            "/v3/bill/tradebill?bill_date={}&bill_type=ALL",
            moongate_contract::statement::format_day(day)
        );
        if let Some(sub_mchid) = self.sub_mchid() {
            path.push_str("&sub_mchid=");
            path.push_str(&encode_path_segment(sub_mchid));
        }
        self.v3_request(cx, HttpMethod::Get, &path, None)
    }

    /// A signed `{hash_type, hash_value, download_url}`; `NO_STATEMENT_EXIST` (nothing happened
    /// that day) is an empty statement, `STATEMENT_CREATING` is "not yet".
    fn parse_statement(&self, resp: &HttpResponse) -> Result<StatementLocation, AdapterError> {
        match self.open(resp)? {
            Answer::Ok(body) => {
                let answer: wire::TradeBillAnswer = Self::decode(&body)?;
                if !answer.hash_type.eq_ignore_ascii_case("SHA1") {
                    return Err(AdapterError::Protocol(format!(
                        "unsupported hash_type {}",
                        answer.hash_type
                    )));
                }
                let sha1 = answer.hash_value.to_ascii_lowercase();
                if sha1.len() != 40 || !sha1.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(AdapterError::Protocol(
                        "hash_value is not a SHA-1".to_owned(),
                    ));
                }
                Ok(StatementLocation::Download {
                    url: answer.download_url,
                    sha1: Some(sha1),
                })
            }
            Answer::Failed(failure) if failure.code == "NO_STATEMENT_EXIST" => {
                Ok(StatementLocation::Empty)
            }
            Answer::Failed(failure) if failure.code == "STATEMENT_CREATING" => {
                Ok(StatementLocation::NotReady { code: failure.code })
            }
            Answer::Failed(failure) => Err(failure.into_error()),
        }
    }

    /// The download is signed like any v3 call (over the download URL's path and query); the
    /// answer is unsigned, so the caller checks the SHA-1 instead. Only URLs on the configured
    /// API host get our signature.
    fn prepare_statement_download(
        &self,
        cx: &CallContext,
        url: &str,
    ) -> Result<HttpRequest, AdapterError> {
        let path_and_query = url
            .strip_prefix(self.base_url.as_str())
            .filter(|rest| rest.starts_with('/'))
            .ok_or_else(|| {
                AdapterError::Protocol("download_url is not on the WeChat Pay API host".to_owned())
            })?;
        self.v3_request(cx, HttpMethod::Get, path_and_query, None)
    }

    /// Payment lines are the `SUCCESS` records (amount: `订单金额`), refund lines the `REFUND`
    /// records (amount: `申请退款金额`); other states (`REVOKED`) are handed over as unsettled
    /// payment lines for the matcher to flag. In partner mode a record of another sub-merchant
    /// (`特约商户号`; a provider's combined bill has them) is a sibling's and is left out; the
    /// file's summary is still checked over every record.
    fn read_statement(
        &self,
        source: &mut dyn StatementSource,
        limits: &StatementLimits,
        sink: &mut StatementSink<'_>,
    ) -> Result<StatementTotals, StatementError> {
        let reader = std::io::BufReader::with_capacity(1 << 16, source);
        let mut totals = StatementTotals::default();
        let to_statement = |e: bill::BillError| StatementError::at(e.line as u64, e.message);
        let sub_mchid = self.sub_mchid();
        bill::read_rows(reader, limits, |row, number| {
            if let Some(ours) = sub_mchid {
                match row.sub_mchid() {
                    Some(theirs) if theirs == ours => {}
                    Some(_) => return Ok(()),
                    None => {
                        return Err(bill::BillError {
                            line: number,
                            message: "no 特约商户号 column: whose records these are is unknown"
                                .to_owned(),
                        });
                    }
                }
            }
            let line = bill::statement_line(&row, number as u64);
            totals.add(&line);
            sink(line).map_err(|e| bill::BillError {
                line: number,
                message: e.message,
            })
        })
        .map_err(to_statement)?;
        Ok(totals)
    }

    // The inherent methods (also used by the certificate tests) do the work.
    fn prepare_certificates(&self, cx: &CallContext) -> Result<HttpRequest, AdapterError> {
        WechatPayAdapter::prepare_certificates(self, cx)
    }

    fn parse_certificates(
        &self,
        resp: &HttpResponse,
    ) -> Result<Vec<PlatformCertificate>, AdapterError> {
        WechatPayAdapter::parse_certificates(self, resp)
    }

    fn payer_identity(&self) -> Option<&dyn moongate_contract::PayerIdentity> {
        self.oauth
            .is_some()
            .then_some(self as &dyn moongate_contract::PayerIdentity)
    }
}
