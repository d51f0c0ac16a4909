//! A hosted-cashier checkout as the ledger keeps it (what the cashier shows and how it
//! decides lives in `cashier`).

use moongate_contract::{Currency, PaymentMethod};
use time::OffsetDateTime;

/// A checkout as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkout {
    /// `co_…`.
    pub id: String,
    /// SHA-256 (hex) of the token in its cashier URL (the token itself is derived from the
    /// id with the cashier key and never stored: `cashier::key`).
    pub token_hash: String,
    /// Owner.
    pub merchant_id: String,
    /// Minor units.
    pub amount: i64,
    /// Currency.
    pub currency: Currency,
    /// The merchant's order reference (copied to every payment).
    pub merchant_reference: String,
    /// Shown to the shopper.
    pub description: String,
    /// Where the shopper goes once paid.
    pub return_url: String,
    /// Where "back to the shop" leads when the shopper gives up or the checkout expired.
    pub cancel_url: Option<String>,
    /// Methods the storefront allows (empty: every method the merchant's routing serves).
    pub methods: Vec<PaymentMethod>,
    /// The shopper's WeChat openid under the merchant's app id, when the storefront knows it
    /// (needed for JSAPI inside WeChat).
    pub openid: Option<String>,
    /// Merchant metadata, copied to every payment (plus `checkout_id`).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// When the link stops working.
    pub expires_at: OffsetDateTime,
    /// Created.
    pub created_at: OffsetDateTime,
    /// The current payment, once the shopper chose a wallet.
    pub payment_id: Option<String>,
    /// The random token of a checkout created before tokens were derived, kept (in clear, as
    /// then) only until the checkout expires, so its link still opens and is still shown.
    pub legacy_token: Option<String>,
}
