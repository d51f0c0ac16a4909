//! Moongate's vocabulary for payments, refunds and notifications.
//!
//! These types are not any provider's wire format: each adapter converts between
//! them and its own wire DTOs. They are also not the public API's JSON: the
//! gateway has its own DTOs in `src/http`.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::money::{Currency, Money};

/// Every provider Moongate can talk to. Adding one is a compile error in the registry
/// until it is wired up there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    /// Alipay classic OpenAPI gateway (`gateway.do`, RSA2).
    Alipay,
    /// WeChat Pay API v3 (`WECHATPAY2-SHA256-RSA2048`), plus v2 `micropay` for payment codes.
    WechatPay,
    /// UnionPay's online gateway (全渠道, ACP 5.1.0, `signMethod=01`): 云闪付 and bank apps.
    UnionPay,
}

impl ProviderKind {
    /// Every kind, for listings and exhaustive tests.
    pub const ALL: &'static [ProviderKind] = &[
        ProviderKind::Alipay,
        ProviderKind::WechatPay,
        ProviderKind::UnionPay,
    ];

    /// Stable lower-case name used in config files, URLs and the ledger.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProviderKind::Alipay => "alipay",
            ProviderKind::WechatPay => "wechatpay",
            ProviderKind::UnionPay => "unionpay",
        }
    }

    /// Parses the stable name.
    pub fn parse(name: &str) -> Option<ProviderKind> {
        ProviderKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the shopper pays: a wallet plus the product used to reach them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethod {
    /// Alipay 当面付 QR code (`alipay.trade.precreate`): the shopper scans it.
    AlipayQr,
    /// Alipay desktop web cashier (`alipay.trade.page.pay`): a redirect.
    AlipayWeb,
    /// Alipay mobile web cashier (`alipay.trade.wap.pay`): a redirect.
    AlipayWap,
    /// Alipay barcode payment (`alipay.trade.pay`, `scene=bar_code`): the cashier scans the
    /// shopper's payment code.
    AlipayPaymentCode,
    /// Alipay in-app payment (`alipay.trade.create`, `product_code=JSAPI_PAY`): a page inside
    /// the Alipay app opens the payment sheet with `AlipayJSBridge.call('tradePay', …)`; needs
    /// the payer's id under the merchant's app (`payer.openid`: an `open_id`, or a `2088…`
    /// user id).
    AlipayJsapi,
    /// WeChat Pay Native (`/v3/pay/transactions/native`): the shopper scans `code_url`.
    WechatNative,
    /// WeChat Pay JSAPI / mini-program (`/v3/pay/transactions/jsapi`): the page invokes the
    /// wallet with signed parameters; needs the payer's `openid`.
    WechatJsapi,
    /// WeChat Pay H5 (`/v3/pay/transactions/h5`): a redirect to `h5_url` from a mobile browser.
    WechatH5,
    /// WeChat Pay payment code (v2 `micropay`): the cashier scans the shopper's code.
    WechatPaymentCode,
    /// UnionPay QR apply (申码, `backTransReq` `01/07`): the shopper scans `qrCode` with
    /// 云闪付 or a bank app.
    UnionpayQr,
    /// UnionPay consume with the shopper's `62…` payment code (被扫, `backTransReq` `01/06`).
    UnionpayPaymentCode,
    /// UnionPay gateway payment in a desktop browser (`frontTransReq` `01/01/000201/07`): the
    /// browser posts a signed form to UnionPay.
    UnionpayWeb,
    /// UnionPay gateway payment in a phone's browser (`frontTransReq` `01/01/000201/08`).
    UnionpayWap,
}

impl PaymentMethod {
    /// Every method.
    pub const ALL: &'static [PaymentMethod] = &[
        PaymentMethod::AlipayQr,
        PaymentMethod::AlipayWeb,
        PaymentMethod::AlipayWap,
        PaymentMethod::AlipayPaymentCode,
        PaymentMethod::AlipayJsapi,
        PaymentMethod::WechatNative,
        PaymentMethod::WechatJsapi,
        PaymentMethod::WechatH5,
        PaymentMethod::WechatPaymentCode,
        PaymentMethod::UnionpayQr,
        PaymentMethod::UnionpayPaymentCode,
        PaymentMethod::UnionpayWeb,
        PaymentMethod::UnionpayWap,
    ];

    /// The provider that serves this method.
    pub fn provider(&self) -> ProviderKind {
        match self {
            PaymentMethod::AlipayQr
            | PaymentMethod::AlipayWeb
            | PaymentMethod::AlipayWap
            | PaymentMethod::AlipayPaymentCode
            | PaymentMethod::AlipayJsapi => ProviderKind::Alipay,
            PaymentMethod::WechatNative
            | PaymentMethod::WechatJsapi
            | PaymentMethod::WechatH5
            | PaymentMethod::WechatPaymentCode => ProviderKind::WechatPay,
            PaymentMethod::UnionpayQr
            | PaymentMethod::UnionpayPaymentCode
            | PaymentMethod::UnionpayWeb
            | PaymentMethod::UnionpayWap => ProviderKind::UnionPay,
        }
    }

    /// Stable snake_case name used in the API and the ledger.
    pub fn as_str(&self) -> &'static str {
        match self {
            PaymentMethod::AlipayQr => "alipay_qr",
            PaymentMethod::AlipayWeb => "alipay_web",
            PaymentMethod::AlipayWap => "alipay_wap",
            PaymentMethod::AlipayPaymentCode => "alipay_payment_code",
            PaymentMethod::AlipayJsapi => "alipay_jsapi",
            PaymentMethod::WechatNative => "wechat_native",
            PaymentMethod::WechatJsapi => "wechat_jsapi",
            PaymentMethod::WechatH5 => "wechat_h5",
            PaymentMethod::WechatPaymentCode => "wechat_payment_code",
            PaymentMethod::UnionpayQr => "unionpay_qr",
            PaymentMethod::UnionpayPaymentCode => "unionpay_payment_code",
            PaymentMethod::UnionpayWeb => "unionpay_web",
            PaymentMethod::UnionpayWap => "unionpay_wap",
        }
    }

    /// Parses the stable name.
    pub fn parse(name: &str) -> Option<PaymentMethod> {
        PaymentMethod::ALL
            .iter()
            .copied()
            .find(|method| method.as_str() == name)
    }
}

/// Operations a provider adapter may support.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Create a payment.
    Create,
    /// Ask the provider for a payment's state.
    Query,
    /// Close an unpaid payment.
    Close,
    /// Refund part or all of a paid payment.
    Refund,
    /// Ask the provider for a refund's state.
    RefundQuery,
    /// Verify and decode an asynchronous notification.
    Notification,
    /// Fetch and read a daily trade statement.
    Statement,
    /// Download the provider's own certificates (keys that verify its answers), for providers
    /// that hand them out only through their API.
    Certificates,
}

/// What an adapter can do; the core refuses anything else before calling it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Payment methods it can create.
    pub methods: &'static [PaymentMethod],
    /// Currencies it can charge in.
    pub currencies: &'static [Currency],
    /// Operations it implements.
    pub operations: &'static [Operation],
}

impl Capabilities {
    /// True when `method` is served.
    pub fn supports_method(&self, method: PaymentMethod) -> bool {
        self.methods.contains(&method)
    }

    /// True when `currency` can be charged.
    pub fn supports_currency(&self, currency: Currency) -> bool {
        self.currencies.contains(&currency)
    }

    /// True when `operation` is implemented.
    pub fn supports(&self, operation: Operation) -> bool {
        self.operations.contains(&operation)
    }
}

/// What the shopper must do next to pay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NextAction {
    /// Show a QR code whose content is `qr_data` (e.g. `https://qr.alipay.com/bax…`).
    DisplayQr {
        /// The string to encode in the QR code.
        qr_data: String,
    },
    /// Send the shopper's browser to `url`.
    Redirect {
        /// The provider cashier URL, already signed.
        url: String,
    },
    /// Make the shopper's browser POST `fields` to `url` as an
    /// `application/x-www-form-urlencoded` form (UnionPay's `frontTransReq`): an auto-submitting
    /// form on the merchant's page, or the cashier's button. The fields are signed; send them
    /// as they are.
    FormPost {
        /// Where the form goes.
        url: String,
        /// The form's fields, by name.
        fields: std::collections::BTreeMap<String, String>,
    },
    /// Inside WeChat (in-app page or mini-program): pass `parameters` to
    /// `WeixinJSBridge.invoke('getBrandWCPayRequest', …)` or `wx.requestPayment`.
    WechatJsapi {
        /// The signed client parameters.
        parameters: JsapiParameters,
    },
    /// Inside the Alipay app: pass `trade_no` to `AlipayJSBridge.call('tradePay',
    /// {tradeNO: …}, …)` (or `my.tradePay` in a mini-program).
    AlipayJsapi {
        /// Alipay's trade number of the created trade.
        trade_no: String,
    },
    /// The cashier scanned a payment code; the shopper confirms in the wallet (e.g. enters a
    /// password). Nothing to display; the payment settles by itself.
    AwaitShopperConfirmation,
}

/// The signed parameters a WeChat page passes to the wallet (china-wallets.md B.9); the
/// field names are WeChat's own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JsapiParameters {
    /// The app id the payer's openid belongs to.
    pub app_id: String,
    /// Unix seconds, as a string.
    pub time_stamp: String,
    /// Random string.
    pub nonce_str: String,
    /// `prepay_id=…`.
    pub package: String,
    /// Always `RSA`.
    pub sign_type: String,
    /// SHA256withRSA over `appId\ntimeStamp\nnonceStr\npackage\n` with the merchant key.
    pub pay_sign: String,
}

/// What a method needs to know about the shopper. Each field is required by some methods
/// only; adapters refuse a request without the field their method needs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payer {
    /// The payer's id under the merchant's app: WeChat's `openid` (`wechat_jsapi`), Alipay's
    /// `open_id` or `2088…` user id (`alipay_jsapi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openid: Option<String>,
    /// The shopper's IP address (`wechat_h5` `payer_client_ip`; the till's for payment codes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_ip: Option<String>,
    /// The scanned payment code (`*_payment_code`; WeChat `auth_code`, Alipay `auth_code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_code: Option<String>,
}

/// A request to create a payment at a provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreatePayment {
    /// The order number the provider knows this payment by (`out_trade_no`).
    pub provider_order_id: String,
    /// Amount to charge.
    pub amount: Money,
    /// How the shopper pays.
    pub method: PaymentMethod,
    /// Short order title shown to the shopper (Alipay `subject`).
    pub subject: String,
    /// Longer description, if any (Alipay `body`).
    pub description: Option<String>,
    /// Where the shopper's browser returns after a redirect flow.
    pub return_url: Option<String>,
    /// Where the provider sends asynchronous notifications for this payment.
    pub notify_url: String,
    /// When the payment stops being payable.
    pub expires_at: OffsetDateTime,
    /// Shopper details some methods need.
    pub payer: Payer,
    /// When the ledger recorded the payment. It never changes, so a provider that keys its
    /// orders by the time they were sent (UnionPay's `txnTime`) gets the same value on the
    /// create and on every later query.
    pub created_at: OffsetDateTime,
}

/// Identifies a payment at the provider for query and close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaymentRef {
    /// The provider order number (`out_trade_no`).
    pub provider_order_id: String,
    /// The amount the ledger expects, to cross-check answers.
    pub amount: Money,
    /// When the ledger recorded the payment ([`CreatePayment::created_at`]).
    pub created_at: OffsetDateTime,
}

/// A request to refund a paid payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRequest {
    /// The payment's provider order number.
    pub provider_order_id: String,
    /// The refund's own idempotent request number (Alipay `out_request_no`).
    pub provider_refund_id: String,
    /// Amount to refund now.
    pub amount: Money,
    /// The payment's full amount (some providers want it).
    pub payment_amount: Money,
    /// Reason shown to the shopper, if any.
    pub reason: Option<String>,
    /// Where the provider sends refund notifications, for providers that send them.
    pub notify_url: Option<String>,
    /// When the ledger recorded the refund (UnionPay names a refund by it, as a payment by
    /// [`CreatePayment::created_at`]).
    pub created_at: OffsetDateTime,
    /// When the ledger recorded the payment.
    pub payment_created_at: OffsetDateTime,
    /// The provider's transaction number of the payment (UnionPay's `queryId`, which a
    /// refund names as `origQryId`), once known.
    pub payment_provider_ref: Option<String>,
}

/// The provider's view of one payment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Created and waiting for the shopper; the action is present right after creation.
    AwaitingPayment {
        /// What the shopper must do, when the provider said.
        next_action: Option<NextAction>,
    },
    /// The provider has no such order (Alipay: a QR not yet scanned).
    NotFound,
    /// Paid.
    Succeeded {
        /// The provider's own transaction number.
        provider_ref: String,
        /// Amount the provider says was paid.
        amount: Money,
        /// When it was paid, if the provider said.
        paid_at: Option<OffsetDateTime>,
    },
    /// Closed without payment (or, at some providers, closed after a full refund).
    Closed,
    /// The provider refused the payment for good.
    Failed {
        /// Provider error code (e.g. `ACQ.TOTAL_FEE_EXCEED`).
        code: String,
        /// Provider message.
        message: String,
    },
    /// A state string this adapter does not know. Never treated as paid.
    Unrecognized(String),
}

/// The provider's view of one refund.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefundStatus {
    /// The money went back (or had already gone back under this refund number).
    Succeeded {
        /// Provider refund reference, if any.
        provider_ref: Option<String>,
    },
    /// Accepted and still being processed.
    Processing,
    /// The provider has no refund under this number.
    NotFound,
    /// Refused for good.
    Failed {
        /// Provider error code.
        code: String,
        /// Provider message.
        message: String,
    },
}

/// The provider's answer to a close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloseStatus {
    /// Closed.
    Closed,
    /// The provider has no such order (Alipay: a QR never scanned); nothing can be paid.
    NotFound,
    /// The order is in a state that cannot be closed (typically already paid): query it.
    Conflict {
        /// Provider error code.
        code: String,
    },
}

/// An inbound asynchronous notification exactly as received.
#[derive(Clone, Copy, Debug)]
pub struct RawNotification<'a> {
    /// Header pairs (names lower-cased).
    pub headers: &'a [(String, String)],
    /// Raw body bytes.
    pub body: &'a [u8],
    /// When Moongate received it.
    pub received_at: OffsetDateTime,
}

/// A verified notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// Provider identifier stable across retries of the same notification (Alipay `notify_id`,
    /// WeChat Pay envelope `id`).
    pub dedupe_id: String,
    /// The provider order number it is about.
    pub provider_order_id: String,
    /// The order's total as the provider reports it, for cross-checking against the ledger;
    /// `None` when the notification does not say (UnionPay's refund notifications name the
    /// refund's own amount only, which is checked against the refund).
    pub total: Option<Money>,
    /// What happened.
    pub event: NotificationEvent,
}

/// What a notification reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NotificationEvent {
    /// The payment's state.
    Payment {
        /// The payment's state as the provider reports it.
        status: PaymentStatus,
        /// Total refunded so far, when the notification reports refunds.
        refunded_total: Option<Money>,
    },
    /// One refund's outcome.
    Refund {
        /// The refund's own request number (`out_refund_no`).
        provider_refund_id: String,
        /// The refunded amount as the provider reports it.
        amount: Money,
        /// Its state.
        status: RefundStatus,
    },
}

/// How the core judged a notification, so the adapter can phrase the reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckKind {
    /// Recorded (or a harmless duplicate): stop retrying.
    Accepted,
    /// Not verified or not recorded: the provider should retry or give up.
    Rejected,
}

/// The exact HTTP reply a provider expects for a notification.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// Status code.
    pub status: u16,
    /// Content type of the body.
    pub content_type: &'static str,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// A provider certificate downloaded through its API, decrypted and checked by the adapter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderCertificate {
    /// Serial (upper-case hex), as the provider names it in its answers.
    pub serial_no: String,
    /// The certificate, PEM.
    pub pem: String,
    /// When the provider says it expires (RFC 3339).
    pub expire_time: String,
}
