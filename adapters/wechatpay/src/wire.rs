//! WeChat Pay v3 wire DTOs (china-wallets.md B.4–B.6). Requests serialise in the field order
//! below; responses tolerate fields we do not read.

use serde::{Deserialize, Serialize};

/// `amount` of an order request.
#[derive(Debug, Serialize)]
pub struct OrderAmount<'a> {
    /// Fen.
    pub total: i64,
    /// `CNY`.
    pub currency: &'a str,
}

/// `payer` of a JSAPI order.
#[derive(Debug, Serialize)]
pub struct OrderPayer<'a> {
    /// The payer's openid under `appid`.
    pub openid: &'a str,
}

/// `scene_info.h5_info`.
#[derive(Debug, Serialize)]
pub struct H5Info {
    /// `Wap`, `iOS` or `Android`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// `scene_info` of an H5 order.
#[derive(Debug, Serialize)]
pub struct SceneInfo<'a> {
    /// The shopper's IP address.
    pub payer_client_ip: &'a str,
    /// H5 scene.
    pub h5_info: H5Info,
}

/// Body of `POST /v3/pay/transactions/{native,jsapi,h5}` and of
/// `/v3/pay/partner/transactions/…` (more-wallets.md §7); the merchant's fields come first.
#[derive(Debug, Serialize)]
pub struct OrderRequest<'a> {
    /// Who places the order.
    #[serde(flatten)]
    pub merchant: OrderMerchant<'a>,
    /// Shown to the payer, at most 127 characters.
    pub description: &'a str,
    /// Merchant order number.
    pub out_trade_no: &'a str,
    /// RFC 3339, Beijing offset.
    pub time_expire: String,
    /// Notification URL (https, no query).
    pub notify_url: &'a str,
    /// Amount.
    pub amount: OrderAmount<'a>,
    /// JSAPI payer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payer: Option<Payer<'a>>,
    /// H5 scene.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scene_info: Option<SceneInfo<'a>>,
}

/// Who places an order, in the account's mode.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum OrderMerchant<'a> {
    /// A direct merchant.
    Direct(DirectMerchant<'a>),
    /// A service provider's sub-merchant.
    Partner(PartnerMerchant<'a>),
}

/// A JSAPI order's payer, in the account's mode.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Payer<'a> {
    /// `{"openid"}`.
    Direct(OrderPayer<'a>),
    /// `{"sp_openid"}` or `{"sub_openid"}`.
    Partner(PartnerPayer<'a>),
}

/// A direct merchant's order: `appid`, `mchid`.
#[derive(Debug, Serialize)]
pub struct DirectMerchant<'a> {
    /// App id.
    pub appid: &'a str,
    /// Merchant id.
    pub mchid: &'a str,
}

/// A sub-merchant's order: the provider's `sp_appid`/`sp_mchid` in place of `appid`/`mchid`,
/// and the sub-merchant.
#[derive(Debug, Serialize)]
pub struct PartnerMerchant<'a> {
    /// The provider's app id.
    pub sp_appid: &'a str,
    /// The provider's merchant id.
    pub sp_mchid: &'a str,
    /// The sub-merchant's app id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_appid: Option<&'a str>,
    /// The sub-merchant's id.
    pub sub_mchid: &'a str,
}

/// `payer` of a partner JSAPI order: the payer's openid under the provider's app
/// (`sp_openid`) or under the sub-merchant's (`sub_openid`, which needs `sub_appid`).
#[derive(Debug, Serialize)]
pub struct PartnerPayer<'a> {
    /// Under `sp_appid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sp_openid: Option<&'a str>,
    /// Under `sub_appid`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_openid: Option<&'a str>,
}

/// Answer of an order request: one of the three fields, by product.
#[derive(Debug, Default, Deserialize)]
pub struct OrderResponse {
    /// Native.
    #[serde(default)]
    pub code_url: Option<String>,
    /// JSAPI / APP.
    #[serde(default)]
    pub prepay_id: Option<String>,
    /// H5.
    #[serde(default)]
    pub h5_url: Option<String>,
}

/// `amount` of a transaction.
#[derive(Debug, Default, Deserialize)]
pub struct TransactionAmount {
    /// Order total, fen.
    #[serde(default)]
    pub total: Option<i64>,
    /// What the payer paid, fen.
    #[serde(default)]
    pub payer_total: Option<i64>,
    /// Currency.
    #[serde(default)]
    pub currency: Option<String>,
}

/// A transaction (query answer and decrypted payment notification).
#[derive(Debug, Default, Deserialize)]
pub struct Transaction {
    /// App id.
    #[serde(default)]
    pub appid: Option<String>,
    /// Merchant id.
    #[serde(default)]
    pub mchid: Option<String>,
    /// Partner mode: the provider's app id.
    #[serde(default)]
    pub sp_appid: Option<String>,
    /// Partner mode: the provider's merchant id.
    #[serde(default)]
    pub sp_mchid: Option<String>,
    /// Partner mode: the sub-merchant's app id.
    #[serde(default)]
    pub sub_appid: Option<String>,
    /// Partner mode: the sub-merchant.
    #[serde(default)]
    pub sub_mchid: Option<String>,
    /// Merchant order number.
    pub out_trade_no: String,
    /// WeChat's transaction number, once paid.
    #[serde(default)]
    pub transaction_id: Option<String>,
    /// `NATIVE`, `JSAPI`, `MWEB`, `MICROPAY`, …
    #[serde(default)]
    pub trade_type: Option<String>,
    /// `SUCCESS`, `REFUND`, `NOTPAY`, `CLOSED`, `REVOKED`, `USERPAYING`, `PAYERROR`, `ACCEPT`.
    pub trade_state: String,
    /// Description of the state.
    #[serde(default)]
    pub trade_state_desc: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub success_time: Option<String>,
    /// Amounts.
    #[serde(default)]
    pub amount: Option<TransactionAmount>,
}

/// `amount` of a refund request.
#[derive(Debug, Serialize)]
pub struct RefundAmountRequest<'a> {
    /// Fen to refund now.
    pub refund: i64,
    /// The order's total, fen.
    pub total: i64,
    /// `CNY`.
    pub currency: &'a str,
}

/// Body of `POST /v3/refund/domestic/refunds`.
#[derive(Debug, Serialize)]
pub struct RefundRequestBody<'a> {
    /// Partner mode: the sub-merchant whose order it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_mchid: Option<&'a str>,
    /// Merchant order number.
    pub out_trade_no: &'a str,
    /// Refund number, idempotent.
    pub out_refund_no: &'a str,
    /// Reason shown to the payer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// Refund notification URL.
    pub notify_url: &'a str,
    /// Amounts.
    pub amount: RefundAmountRequest<'a>,
}

/// `amount` of a refund answer or notification.
#[derive(Debug, Default, Deserialize)]
pub struct RefundAmount {
    /// Order total, fen.
    #[serde(default)]
    pub total: Option<i64>,
    /// Refunded, fen.
    #[serde(default)]
    pub refund: Option<i64>,
    /// Currency.
    #[serde(default)]
    pub currency: Option<String>,
}

/// A refund (answer of refund and refund query).
#[derive(Debug, Default, Deserialize)]
pub struct Refund {
    /// WeChat refund number.
    #[serde(default)]
    pub refund_id: Option<String>,
    /// Our refund number.
    pub out_refund_no: String,
    /// Merchant order number.
    #[serde(default)]
    pub out_trade_no: Option<String>,
    /// `SUCCESS`, `CLOSED`, `PROCESSING`, `ABNORMAL`.
    pub status: String,
    /// Amounts.
    #[serde(default)]
    pub amount: Option<RefundAmount>,
}

/// A decrypted refund notification (`refund_status`, not `status`).
#[derive(Debug, Default, Deserialize)]
pub struct RefundNotice {
    /// Merchant id.
    #[serde(default)]
    pub mchid: Option<String>,
    /// Partner mode: the provider's merchant id.
    #[serde(default)]
    pub sp_mchid: Option<String>,
    /// Partner mode: the sub-merchant.
    #[serde(default)]
    pub sub_mchid: Option<String>,
    /// Merchant order number.
    pub out_trade_no: String,
    /// Our refund number.
    pub out_refund_no: String,
    /// WeChat refund number.
    #[serde(default)]
    pub refund_id: Option<String>,
    /// `SUCCESS`, `CLOSED`, `ABNORMAL`.
    pub refund_status: String,
    /// Amounts.
    #[serde(default)]
    pub amount: Option<RefundAmount>,
}

/// Error body: `{"code":"…","message":"…","detail":{…}}`.
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    /// Stable code, e.g. `PARAM_ERROR`.
    #[serde(default)]
    pub code: String,
    /// Message.
    #[serde(default)]
    pub message: String,
}

/// The encrypted `resource` of a notification.
#[derive(Debug, Deserialize, Serialize)]
pub struct Resource {
    /// `AEAD_AES_256_GCM`.
    pub algorithm: String,
    /// base64(ciphertext ‖ tag).
    pub ciphertext: String,
    /// AAD, possibly empty.
    #[serde(default)]
    pub associated_data: String,
    /// 12 characters.
    pub nonce: String,
    /// `transaction` or `refund`.
    #[serde(default)]
    pub original_type: String,
}

/// A notification envelope.
#[derive(Debug, Deserialize, Serialize)]
pub struct Envelope {
    /// Stable across retries.
    pub id: String,
    /// RFC 3339.
    #[serde(default)]
    pub create_time: String,
    /// `encrypt-resource`.
    #[serde(default)]
    pub resource_type: String,
    /// `TRANSACTION.SUCCESS`, `REFUND.SUCCESS`, `REFUND.ABNORMAL`, `REFUND.CLOSED`.
    pub event_type: String,
    /// Human summary.
    #[serde(default)]
    pub summary: String,
    /// The encrypted payload.
    pub resource: Resource,
}

/// The encrypted certificate of a `/v3/certificates` item.
#[derive(Debug, Deserialize)]
pub struct EncryptedCertificate {
    /// `AEAD_AES_256_GCM`.
    pub algorithm: String,
    /// 12 characters.
    pub nonce: String,
    /// `certificate`.
    #[serde(default)]
    pub associated_data: String,
    /// base64(ciphertext ‖ tag) of the PEM.
    pub ciphertext: String,
}

/// One item of `/v3/certificates`.
#[derive(Debug, Deserialize)]
pub struct CertificateItem {
    /// Serial, hex.
    pub serial_no: String,
    /// RFC 3339.
    #[serde(default)]
    pub effective_time: String,
    /// RFC 3339.
    #[serde(default)]
    pub expire_time: String,
    /// The PEM, encrypted with the APIv3 key.
    pub encrypt_certificate: EncryptedCertificate,
}

/// Answer of `GET /v3/certificates`.
#[derive(Debug, Deserialize)]
pub struct CertificateList {
    /// The platform certificates currently valid.
    pub data: Vec<CertificateItem>,
}

/// Answer to `GET /v3/bill/tradebill` (B.7).
#[derive(Debug, Deserialize)]
pub struct TradeBillAnswer {
    /// `SHA1`.
    pub hash_type: String,
    /// SHA-1 (hex) of the uncompressed bill.
    pub hash_value: String,
    /// Where to download it (signed GET, valid 5 minutes).
    pub download_url: String,
}
