//! Ledger records and their state machines (pure; the storage traits and backends live in `store`).
//!
//! Invariants:
//! - a payment's status only moves along [`PaymentStatus::can_become`]; `succeeded` is final,
//!   and a provider's word that money moved is always recorded, even after a cancel or failure;
//! - refunds of a payment (pending, unknown or succeeded) never add up to more than it was paid;
//! - every change appends exactly one event to the append-only event log, in the same
//!   transaction, together with its webhook outbox row.

pub mod checkout;
pub mod code;
pub mod reconciliation;

use moongate_contract::{Currency, NextAction, Payer, PaymentMethod, ProviderKind};

use crate::routing::Channel;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// Where a payment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    /// Recorded; the provider has not answered yet.
    Pending,
    /// The shopper must act (`next_action`).
    RequiresAction,
    /// Paid.
    Succeeded,
    /// Refused by the provider; nothing was charged.
    Failed,
    /// Closed before payment.
    Canceled,
    /// The provider call's outcome is unknown; Moongate re-queries until it knows.
    Unknown,
}

impl PaymentStatus {
    /// Every status.
    pub const ALL: [PaymentStatus; 6] = [
        PaymentStatus::Pending,
        PaymentStatus::RequiresAction,
        PaymentStatus::Succeeded,
        PaymentStatus::Failed,
        PaymentStatus::Canceled,
        PaymentStatus::Unknown,
    ];

    /// The statuses in which the provider may still move money, so the janitor keeps checking
    /// (the one definition; the ledger's SQL is built from it).
    pub const OPEN: [PaymentStatus; 3] = [
        PaymentStatus::Pending,
        PaymentStatus::Unknown,
        PaymentStatus::RequiresAction,
    ];

    /// Stable name (API, ledger, events).
    pub fn as_str(&self) -> &'static str {
        match self {
            PaymentStatus::Pending => "pending",
            PaymentStatus::RequiresAction => "requires_action",
            PaymentStatus::Succeeded => "succeeded",
            PaymentStatus::Failed => "failed",
            PaymentStatus::Canceled => "canceled",
            PaymentStatus::Unknown => "unknown",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<PaymentStatus> {
        [
            PaymentStatus::Pending,
            PaymentStatus::RequiresAction,
            PaymentStatus::Succeeded,
            PaymentStatus::Failed,
            PaymentStatus::Canceled,
            PaymentStatus::Unknown,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// The legal moves. Staying put is not a move (no event).
    pub fn can_become(self, next: PaymentStatus) -> bool {
        use PaymentStatus::*;
        match (self, next) {
            (a, b) if a == b => false,
            (Succeeded, _) => false,
            // Money moved at the provider: always recorded.
            (_, Succeeded) => true,
            (Pending, RequiresAction | Failed | Canceled | Unknown) => true,
            (Unknown, RequiresAction | Failed | Canceled) => true,
            (RequiresAction, Failed | Canceled | Unknown) => true,
            _ => false,
        }
    }

    /// True once nothing but a late provider "paid" can change it.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            PaymentStatus::Succeeded | PaymentStatus::Failed | PaymentStatus::Canceled
        )
    }
}

/// Where a refund stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Recorded; the provider has not answered yet.
    Pending,
    /// The money went back.
    Succeeded,
    /// Refused by the provider.
    Failed,
    /// Outcome unknown; re-queried until known.
    Unknown,
}

impl RefundStatus {
    /// Every status.
    pub const ALL: [RefundStatus; 4] = [
        RefundStatus::Pending,
        RefundStatus::Succeeded,
        RefundStatus::Failed,
        RefundStatus::Unknown,
    ];

    /// The statuses in which a refund may still move money (the janitor keeps checking).
    pub const OPEN: [RefundStatus; 2] = [RefundStatus::Pending, RefundStatus::Unknown];

    /// Stable name.
    pub fn as_str(&self) -> &'static str {
        match self {
            RefundStatus::Pending => "pending",
            RefundStatus::Succeeded => "succeeded",
            RefundStatus::Failed => "failed",
            RefundStatus::Unknown => "unknown",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<RefundStatus> {
        [
            RefundStatus::Pending,
            RefundStatus::Succeeded,
            RefundStatus::Failed,
            RefundStatus::Unknown,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }

    /// The legal moves.
    pub fn can_become(self, next: RefundStatus) -> bool {
        use RefundStatus::*;
        matches!(
            (self, next),
            (Pending, Succeeded | Failed | Unknown) | (Unknown, Succeeded | Failed)
        )
    }

    /// True when the amount is (or may be) on its way back, so it counts against the payment.
    pub fn holds_amount(self) -> bool {
        !matches!(self, RefundStatus::Failed)
    }
}

/// A provider's refusal, kept on the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Provider or Moongate code.
    pub code: String,
    /// Message.
    pub message: String,
}

/// A payment as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    /// `pay_…`; also the provider order number.
    pub id: String,
    /// Owner.
    pub merchant_id: String,
    /// Provider account used.
    pub account_id: String,
    /// Provider kind.
    pub provider: ProviderKind,
    /// Wallet method.
    pub method: PaymentMethod,
    /// Minor units.
    pub amount: i64,
    /// Currency.
    pub currency: Currency,
    /// The merchant's order reference.
    pub merchant_reference: String,
    /// Shown to the shopper.
    pub description: String,
    /// Browser return URL.
    pub return_url: Option<String>,
    /// Merchant metadata (JSON object of strings).
    pub metadata: serde_json::Map<String, serde_json::Value>,
    /// Provider order number sent to the provider.
    pub provider_order_id: String,
    /// Provider transaction number once paid.
    pub provider_ref: Option<String>,
    /// Status.
    pub status: PaymentStatus,
    /// What the shopper must do.
    pub next_action: Option<NextAction>,
    /// Why it failed.
    pub failure: Option<Failure>,
    /// Sum of succeeded refunds, minor units.
    pub amount_refunded: i64,
    /// When it stops being payable.
    pub expires_at: OffsetDateTime,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
    /// Shopper details the method needed (openid, IP, the scanned payment code).
    pub payer: Payer,
    /// The routing rule that chose the account (none: named in the request, or no rules).
    pub route: Option<String>,
    /// Where the storefront said the payment is made.
    pub channel: Option<Channel>,
}

/// A refund as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refund {
    /// `re_…`; also the provider refund request number.
    pub id: String,
    /// Its payment.
    pub payment_id: String,
    /// Owner.
    pub merchant_id: String,
    /// Minor units.
    pub amount: i64,
    /// Currency.
    pub currency: Currency,
    /// Reason given.
    pub reason: Option<String>,
    /// Status.
    pub status: RefundStatus,
    /// Why it failed.
    pub failure: Option<Failure>,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Last change.
    pub updated_at: OffsetDateTime,
}

/// A change to apply to a payment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PaymentChange {
    /// New status (must be a legal move, or the same status with no event).
    pub status: Option<PaymentStatus>,
    /// New next action.
    pub next_action: Option<Option<NextAction>>,
    /// Provider transaction number.
    pub provider_ref: Option<String>,
    /// Failure detail.
    pub failure: Option<Failure>,
    /// Add to `amount_refunded`.
    pub refunded_delta: i64,
}

/// Crockford base32 without padding.
const BASE32: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Identifiers: a prefix and 24 characters of Crockford base32, the first 10 the creation
/// time in milliseconds (so that ids made together sort together, and the ledger's indexes of
/// them grow at one end instead of at a random page each), the last 14 random (70 bits).
/// Ids are not secrets.
pub fn new_id(prefix: &str) -> String {
    let millis =
        u64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let mut out = String::with_capacity(prefix.len() + 25);
    out.push_str(prefix);
    out.push('_');
    for shift in (0..10).rev() {
        push_base32(&mut out, (millis >> (shift * 5)) as u8);
    }
    push_random(&mut out, 14);
    out
}

/// `n` random characters of Crockford base32 (5 bits each).
pub fn random_token(n: usize) -> String {
    let mut out = String::with_capacity(n);
    push_random(&mut out, n);
    out
}

fn push_base32(out: &mut String, value: u8) {
    out.push(char::from(
        BASE32.get(usize::from(value % 32)).copied().unwrap_or(b'0'),
    ));
}

/// Fills `out` from a per-thread buffer of the OS random source, refilled 4 KiB at a time:
/// ids take several random strings per request, and one `getrandom` call each was a visible
/// part of a create's system time. Only ids and the like draw from it; keys and tokens that
/// are secrets read the OS source directly.
fn fill_random(out: &mut [u8]) -> Result<(), ring::error::Unspecified> {
    use ring::rand::SecureRandom;
    const POOL: usize = 4096;
    thread_local! {
        static BUFFER: std::cell::RefCell<(Box<[u8; POOL]>, usize)> =
            std::cell::RefCell::new((Box::new([0; POOL]), POOL));
    }
    BUFFER.with_borrow_mut(|(pool, used)| {
        if out.len() > POOL - *used {
            ring::rand::SystemRandom::new().fill(&mut pool[..])?;
            *used = 0;
        }
        let end = *used + out.len();
        let taken = pool.get_mut(*used..end).ok_or(ring::error::Unspecified)?;
        out.copy_from_slice(taken);
        // Drawn bytes are wiped, so no id can be derived again from what stays in memory.
        taken.fill(0);
        *used = end;
        Ok(())
    })
}

fn push_random(out: &mut String, n: usize) {
    let mut bytes = [0_u8; 64];
    let bytes = bytes.get_mut(..n.min(64)).unwrap_or_default();
    // The OS random source practically never fails; if it does, the characters fall back to
    // clock-derived bytes: ids are not secrets, and a collision is refused by the ledger's
    // unique constraints.
    if fill_random(bytes).is_err() {
        let nanos = OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .to_le_bytes();
        for (slot, byte) in bytes.iter_mut().zip(nanos.iter().cycle()) {
            *slot = *byte;
        }
    }
    for byte in bytes.iter() {
        push_base32(out, *byte);
    }
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    // The ledger keeps milliseconds; show every timestamp at that precision.
    let t = t.replace_millisecond(t.millisecond()).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl Payment {
    /// The public JSON shape (API responses and webhook events).
    pub fn to_api_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "object": "payment",
            "amount": self.amount,
            "currency": self.currency.code(),
            "amount_refunded": self.amount_refunded,
            "method": self.method.as_str(),
            "status": self.status.as_str(),
            "merchant_reference": self.merchant_reference,
            "description": self.description,
            "return_url": self.return_url,
            "metadata": self.metadata,
            "next_action": self.next_action,
            "failure": self.failure,
            // The scanned payment code is a one-time bearer credential: never echoed.
            "payer": {
                "openid": self.payer.openid,
                "client_ip": self.payer.client_ip,
            },
            "channel": self.channel.map(|c| c.as_str()),
            "provider": {
                "kind": self.provider.as_str(),
                "account": self.account_id,
                "route": self.route,
                "order_id": self.provider_order_id,
                "transaction_id": self.provider_ref,
            },
            "expires_at": rfc3339(self.expires_at),
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

impl Refund {
    /// The public JSON shape.
    pub fn to_api_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "object": "refund",
            "payment_id": self.payment_id,
            "amount": self.amount,
            "currency": self.currency.code(),
            "reason": self.reason,
            "status": self.status.as_str(),
            "failure": self.failure,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
        })
    }
}

/// The webhook event body for a change.
pub fn event_json(
    id: &str,
    kind: &str,
    created: OffsetDateTime,
    object: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "object": "event",
        "type": kind,
        "created_at": rfc3339(created),
        "data": { "object": object },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn succeeded_is_final_and_paid_always_wins() {
        use PaymentStatus::*;
        for s in [Pending, RequiresAction, Failed, Canceled, Unknown] {
            assert!(s.can_become(Succeeded), "{s:?}");
            assert!(!Succeeded.can_become(s), "{s:?}");
        }
        assert!(!Canceled.can_become(RequiresAction));
        assert!(!Failed.can_become(Canceled));
        assert!(!Pending.can_become(Pending));
    }

    #[test]
    fn refunds_move_forward_only() {
        use RefundStatus::*;
        assert!(Pending.can_become(Unknown));
        assert!(Unknown.can_become(Succeeded));
        assert!(!Succeeded.can_become(Failed));
        assert!(!Failed.can_become(Succeeded));
    }

    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = new_id("pay");
        assert!(a.starts_with("pay_") && a.len() == 28, "{a}");
        assert_ne!(a, new_id("pay"));
    }

    #[test]
    fn ids_made_later_sort_later() {
        let first = new_id("evt");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let ids: Vec<String> = (0..100).map(|_| new_id("evt")).collect();
        assert!(ids.iter().all(|id| *id > first), "{first} {ids:?}");
        // The random part differs within one millisecond.
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len());
        assert_eq!(random_token(32).len(), 32);
    }
}
