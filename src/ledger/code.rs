//! A static payment code (聚合码): one printed QR a shop's customers scan with any wallet app.
//! Its URL (`/c/{token}`) opens a page that leads the shopper into a checkout for the code's
//! merchant (the amount fixed on the code, or typed by the shopper), so every payment goes
//! through the hosted cashier's one path.

use moongate_contract::{Currency, PaymentMethod};
use time::OffsetDateTime;

use crate::ledger::rfc3339;

/// A code as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Code {
    /// `code_…`.
    pub id: String,
    /// SHA-256 (hex) of the token in its URL (the token is derived from the id with the server
    /// key and never stored).
    pub token_hash: String,
    /// Owner.
    pub merchant_id: String,
    /// Shown on the poster and the scan page (the shop, the till).
    pub name: String,
    /// Store and till tags: copied into each payment's metadata, where routing rules match them.
    pub tags: serde_json::Map<String, serde_json::Value>,
    /// A fixed amount in minor units, or `None` for the shopper to type.
    pub amount: Option<i64>,
    /// Currency.
    pub currency: Currency,
    /// The methods it offers (empty: every cashier method the merchant's routing serves).
    pub methods: Vec<PaymentMethod>,
    /// After this it takes no payment.
    pub expires_at: Option<OffsetDateTime>,
    /// When it was disabled, if it was.
    pub disabled_at: Option<OffsetDateTime>,
    /// Created.
    pub created_at: OffsetDateTime,
}

/// Where a code stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeStatus {
    /// Takes payments.
    Active,
    /// Disabled by the merchant.
    Disabled,
    /// Past its expiry.
    Expired,
}

impl CodeStatus {
    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeStatus::Active => "active",
            CodeStatus::Disabled => "disabled",
            CodeStatus::Expired => "expired",
        }
    }
}

impl Code {
    /// Where it stands at `now` (disabled wins over expired).
    pub fn status(&self, now: OffsetDateTime) -> CodeStatus {
        if self.disabled_at.is_some() {
            CodeStatus::Disabled
        } else if self.expires_at.is_some_and(|at| now >= at) {
            CodeStatus::Expired
        } else {
            CodeStatus::Active
        }
    }

    /// The API's view, with its URL (`None` in the answer an idempotency key keeps: the URL is
    /// a credential, derived again for each answer).
    pub fn to_api_json(&self, url: Option<&str>, now: OffsetDateTime) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "object": "code",
            "url": url,
            "status": self.status(now).as_str(),
            "name": self.name,
            "tags": self.tags,
            "amount": self.amount,
            "currency": self.currency.code(),
            "methods": self.methods.iter().map(PaymentMethod::as_str).collect::<Vec<_>>(),
            "expires_at": self.expires_at.map(rfc3339),
            "disabled_at": self.disabled_at.map(rfc3339),
            "created_at": rfc3339(self.created_at),
        })
    }
}
