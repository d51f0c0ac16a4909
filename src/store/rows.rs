//! What both backends share: the column lists, the plain row shapes each backend reads its
//! columns into, their decoding (enums, JSON columns, Unix-millisecond timestamps), and the
//! pure decisions taken inside a transaction (how a change applies to a payment, whether a
//! refund fits, what an existing idempotency key says). The SQL differs per backend; the
//! meaning does not.

use moongate_contract::{Currency, Payer, PaymentMethod, ProviderKind};
use time::OffsetDateTime;

use super::{Begin, IdemClaim, RefundRefusal, StoreError};
use crate::ledger::checkout::Checkout;
use crate::ledger::reconciliation::{Break, LedgerPayment, LedgerRefund};
use crate::ledger::{Payment, PaymentChange, PaymentStatus, Refund, RefundStatus};
use crate::routing::Channel;

/// A new payment or refund is first checked by the janitor this long after its creation: its
/// own provider call is still running until then.
pub(super) const FIRST_CHECK_MS: i64 = 30_000;

/// Idempotency keys are kept this long (the API promises at least 24 hours).
pub(super) const IDEMPOTENCY_RETENTION_MS: i64 = 48 * 3600 * 1000;

/// The payment columns, in [`PaymentRow`]'s order.
pub(super) const PAYMENT_COLUMNS: &str = "id, merchant_id, account_id, provider, method, amount, \
    currency, merchant_reference, description, return_url, metadata, provider_order_id, \
    provider_ref, status, next_action, failure, amount_refunded, expires_at, created_at, \
    updated_at, payer, route, channel";

/// The refund columns, in [`RefundRow`]'s order.
pub(super) const REFUND_COLUMNS: &str = "id, payment_id, merchant_id, amount, currency, reason, status, failure, created_at, updated_at";

/// The checkout columns, in [`CheckoutRow`]'s order.
pub(super) const CHECKOUT_COLUMNS: &str = "id, token_hash, merchant_id, amount, currency, \
    merchant_reference, description, return_url, cancel_url, methods, openid, metadata, \
    expires_at, created_at, payment_id, legacy_token";

/// The code columns, in [`CodeRow`]'s order.
pub(super) const CODE_COLUMNS: &str = "id, token_hash, merchant_id, name, tags, amount, \
    currency, methods, expires_at, disabled_at, created_at";

/// A static code as its columns hold it ([`CODE_COLUMNS`] order).
#[derive(Debug)]
pub(super) struct CodeRow {
    pub id: String,
    pub token_hash: String,
    pub merchant_id: String,
    pub name: String,
    pub tags: String,
    pub amount: Option<i64>,
    pub currency: String,
    pub methods: String,
    pub expires_at: Option<i64>,
    pub disabled_at: Option<i64>,
    pub created_at: i64,
}

impl CodeRow {
    pub fn of(c: &crate::ledger::code::Code) -> Result<CodeRow, StoreError> {
        let methods: Vec<&str> = c.methods.iter().map(PaymentMethod::as_str).collect();
        Ok(CodeRow {
            id: c.id.clone(),
            token_hash: c.token_hash.clone(),
            merchant_id: c.merchant_id.clone(),
            name: c.name.clone(),
            tags: serde_json::Value::Object(c.tags.clone()).to_string(),
            amount: c.amount,
            currency: c.currency.code().to_owned(),
            methods: to_json(&methods)?,
            expires_at: c.expires_at.map(ms),
            disabled_at: c.disabled_at.map(ms),
            created_at: ms(c.created_at),
        })
    }

    pub fn decode(self) -> Result<crate::ledger::code::Code, StoreError> {
        let methods: Vec<String> = parse_json(&self.methods, "code methods")?;
        let methods = methods
            .iter()
            .map(|m| PaymentMethod::parse(m).ok_or_else(|| corrupt("code method")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(crate::ledger::code::Code {
            id: self.id,
            token_hash: self.token_hash,
            merchant_id: self.merchant_id,
            name: self.name,
            tags: parse_json(&self.tags, "code tags")?,
            amount: self.amount,
            currency: moongate_contract::Currency::parse(&self.currency)
                .map_err(|_| corrupt("code currency"))?,
            methods,
            expires_at: self.expires_at.map(from_ms).transpose()?,
            disabled_at: self.disabled_at.map(from_ms).transpose()?,
            created_at: from_ms(self.created_at)?,
        })
    }
}

/// Unix milliseconds, the ledger's time column type in both backends.
pub(super) fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The inverse of [`ms`].
pub(super) fn from_ms(value: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(value) * 1_000_000)
        .map_err(|_| StoreError::Corrupt("timestamp".into()))
}

pub(super) fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

pub(super) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) fn json_opt<T: serde::Serialize>(
    value: &Option<T>,
) -> Result<Option<String>, StoreError> {
    value.as_ref().map(to_json).transpose()
}

fn parse_json<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|_| corrupt(what))
}

fn parse_json_opt<T: serde::de::DeserializeOwned>(
    text: Option<String>,
    what: &str,
) -> Result<Option<T>, StoreError> {
    text.as_deref().map(|t| parse_json(t, what)).transpose()
}

/// A payment as its columns hold it ([`PAYMENT_COLUMNS`] order).
#[derive(Debug)]
pub(super) struct PaymentRow {
    pub id: String,
    pub merchant_id: String,
    pub account_id: String,
    pub provider: String,
    pub method: String,
    pub amount: i64,
    pub currency: String,
    pub merchant_reference: String,
    pub description: String,
    pub return_url: Option<String>,
    pub metadata: String,
    pub provider_order_id: String,
    pub provider_ref: Option<String>,
    pub status: String,
    pub next_action: Option<String>,
    pub failure: Option<String>,
    pub amount_refunded: i64,
    pub expires_at: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub payer: Option<String>,
    pub route: Option<String>,
    pub channel: Option<String>,
}

impl PaymentRow {
    /// The columns of `p`, ready to bind.
    pub fn of(p: &Payment) -> Result<PaymentRow, StoreError> {
        Ok(PaymentRow {
            id: p.id.clone(),
            merchant_id: p.merchant_id.clone(),
            account_id: p.account_id.clone(),
            provider: p.provider.as_str().to_owned(),
            method: p.method.as_str().to_owned(),
            amount: p.amount,
            currency: p.currency.code().to_owned(),
            merchant_reference: p.merchant_reference.clone(),
            description: p.description.clone(),
            return_url: p.return_url.clone(),
            metadata: serde_json::Value::Object(p.metadata.clone()).to_string(),
            provider_order_id: p.provider_order_id.clone(),
            provider_ref: p.provider_ref.clone(),
            status: p.status.as_str().to_owned(),
            next_action: json_opt(&p.next_action)?,
            failure: json_opt(&p.failure)?,
            amount_refunded: p.amount_refunded,
            expires_at: ms(p.expires_at),
            created_at: ms(p.created_at),
            updated_at: ms(p.updated_at),
            payer: Some(to_json(&p.payer)?),
            route: p.route.clone(),
            channel: p.channel.map(|c| c.as_str().to_owned()),
        })
    }

    pub fn decode(self) -> Result<Payment, StoreError> {
        Ok(Payment {
            provider: ProviderKind::parse(&self.provider).ok_or_else(|| corrupt("provider"))?,
            method: PaymentMethod::parse(&self.method).ok_or_else(|| corrupt("method"))?,
            currency: Currency::parse(&self.currency).map_err(|_| corrupt("currency"))?,
            metadata: parse_json(&self.metadata, "metadata")?,
            status: PaymentStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?,
            next_action: parse_json_opt(self.next_action, "next_action")?,
            failure: parse_json_opt(self.failure, "failure")?,
            expires_at: from_ms(self.expires_at)?,
            created_at: from_ms(self.created_at)?,
            updated_at: from_ms(self.updated_at)?,
            payer: parse_json_opt(self.payer, "payer")?.unwrap_or_else(Payer::default),
            channel: match self.channel {
                Some(text) => Some(Channel::parse(&text).ok_or_else(|| corrupt("channel"))?),
                None => None,
            },
            id: self.id,
            merchant_id: self.merchant_id,
            account_id: self.account_id,
            amount: self.amount,
            merchant_reference: self.merchant_reference,
            description: self.description,
            return_url: self.return_url,
            provider_order_id: self.provider_order_id,
            provider_ref: self.provider_ref,
            amount_refunded: self.amount_refunded,
            route: self.route,
        })
    }
}

/// A refund as its columns hold it ([`REFUND_COLUMNS`] order).
#[derive(Debug)]
pub(super) struct RefundRow {
    pub id: String,
    pub payment_id: String,
    pub merchant_id: String,
    pub amount: i64,
    pub currency: String,
    pub reason: Option<String>,
    pub status: String,
    pub failure: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl RefundRow {
    pub fn of(r: &Refund) -> Result<RefundRow, StoreError> {
        Ok(RefundRow {
            id: r.id.clone(),
            payment_id: r.payment_id.clone(),
            merchant_id: r.merchant_id.clone(),
            amount: r.amount,
            currency: r.currency.code().to_owned(),
            reason: r.reason.clone(),
            status: r.status.as_str().to_owned(),
            failure: json_opt(&r.failure)?,
            created_at: ms(r.created_at),
            updated_at: ms(r.updated_at),
        })
    }

    pub fn decode(self) -> Result<Refund, StoreError> {
        Ok(Refund {
            currency: Currency::parse(&self.currency).map_err(|_| corrupt("currency"))?,
            status: RefundStatus::parse(&self.status).ok_or_else(|| corrupt("refund status"))?,
            failure: parse_json_opt(self.failure, "failure")?,
            created_at: from_ms(self.created_at)?,
            updated_at: from_ms(self.updated_at)?,
            id: self.id,
            payment_id: self.payment_id,
            merchant_id: self.merchant_id,
            amount: self.amount,
            reason: self.reason,
        })
    }
}

/// A checkout as its columns hold it ([`CHECKOUT_COLUMNS`] order).
#[derive(Debug)]
pub(super) struct CheckoutRow {
    pub id: String,
    pub token_hash: String,
    pub merchant_id: String,
    pub amount: i64,
    pub currency: String,
    pub merchant_reference: String,
    pub description: String,
    pub return_url: String,
    pub cancel_url: Option<String>,
    pub methods: String,
    pub openid: Option<String>,
    pub metadata: String,
    pub expires_at: i64,
    pub created_at: i64,
    pub payment_id: Option<String>,
    pub legacy_token: Option<String>,
}

impl CheckoutRow {
    pub fn of(c: &Checkout) -> Result<CheckoutRow, StoreError> {
        let methods: Vec<&str> = c.methods.iter().map(PaymentMethod::as_str).collect();
        Ok(CheckoutRow {
            id: c.id.clone(),
            token_hash: c.token_hash.clone(),
            merchant_id: c.merchant_id.clone(),
            amount: c.amount,
            currency: c.currency.code().to_owned(),
            merchant_reference: c.merchant_reference.clone(),
            description: c.description.clone(),
            return_url: c.return_url.clone(),
            cancel_url: c.cancel_url.clone(),
            methods: to_json(&methods)?,
            openid: c.openid.clone(),
            metadata: serde_json::Value::Object(c.metadata.clone()).to_string(),
            expires_at: ms(c.expires_at),
            created_at: ms(c.created_at),
            payment_id: c.payment_id.clone(),
            legacy_token: c.legacy_token.clone(),
        })
    }

    pub fn decode(self) -> Result<Checkout, StoreError> {
        let methods: Vec<String> = parse_json(&self.methods, "checkout methods")?;
        let methods = methods
            .iter()
            .map(|m| PaymentMethod::parse(m).ok_or_else(|| corrupt("checkout method")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Checkout {
            currency: Currency::parse(&self.currency).map_err(|_| corrupt("checkout currency"))?,
            metadata: parse_json(&self.metadata, "checkout metadata")?,
            expires_at: from_ms(self.expires_at)?,
            created_at: from_ms(self.created_at)?,
            methods,
            id: self.id,
            token_hash: self.token_hash,
            merchant_id: self.merchant_id,
            amount: self.amount,
            merchant_reference: self.merchant_reference,
            description: self.description,
            return_url: self.return_url,
            cancel_url: self.cancel_url,
            openid: self.openid,
            payment_id: self.payment_id,
            legacy_token: self.legacy_token,
        })
    }
}

/// An idempotency key row as found under a claim.
#[derive(Debug)]
pub(super) struct KeyRow {
    pub request_hash: String,
    pub resource_id: Option<String>,
    pub status: Option<i64>,
    pub response: Option<Vec<u8>>,
    pub created_at: i64,
}

impl KeyRow {
    /// What an existing key says to a new request bearing it.
    pub fn verdict(self, claim: &IdemClaim) -> Result<Begin<()>, StoreError> {
        if self.request_hash != claim.request_hash {
            return Ok(Begin::Mismatch);
        }
        Ok(match (self.status, self.response) {
            (Some(status), Some(body)) => Begin::Replay {
                status: u16::try_from(status).map_err(|_| corrupt("idempotency status"))?,
                body,
            },
            _ => Begin::InFlight {
                resource_id: self.resource_id,
                claimed_at: from_ms(self.created_at)?,
            },
        })
    }
}

/// A finished or pending claim, re-typed for a `begin_*` answer (never `Fresh`).
pub(super) fn cast<T, U>(begin: Begin<T>) -> Begin<U> {
    match begin {
        Begin::Fresh(_) | Begin::Mismatch => Begin::Mismatch,
        Begin::Replay { status, body } => Begin::Replay { status, body },
        Begin::InFlight {
            resource_id,
            claimed_at,
        } => Begin::InFlight {
            resource_id,
            claimed_at,
        },
    }
}

/// Applies a decided change to `payment`; true when anything changed (an event is due).
/// Status moves only along the state machine.
pub(super) fn apply_change(payment: &mut Payment, change: PaymentChange) -> bool {
    let mut changed = false;
    if let Some(status) = change.status
        && payment.status.can_become(status)
    {
        payment.status = status;
        changed = true;
    }
    if let Some(next_action) = change.next_action
        && payment.next_action != next_action
    {
        payment.next_action = next_action;
        changed = true;
    }
    if let Some(provider_ref) = change.provider_ref
        && payment.provider_ref.as_deref() != Some(provider_ref.as_str())
    {
        payment.provider_ref = Some(provider_ref);
        changed = true;
    }
    if let Some(failure) = change.failure
        && payment.failure.as_ref() != Some(&failure)
    {
        payment.failure = Some(failure);
        changed = true;
    }
    // A scanned payment code is a bearer credential of the payer's wallet: once the payment is
    // settled nothing needs it (queries, refunds and cancels name the order), so it is not kept.
    if !PaymentStatus::OPEN.contains(&payment.status) && payment.payer.payment_code.is_some() {
        payment.payer.payment_code = None;
        changed = true;
    }
    changed
}

/// Whether `refund` fits its payment, given what other refunds already hold (pending,
/// unknown and succeeded ones).
pub(super) fn refund_fits(
    payment: Option<&Payment>,
    refund: &Refund,
    held: i64,
) -> Result<(), StoreError> {
    let payment = payment
        .filter(|p| p.merchant_id == refund.merchant_id)
        .ok_or(StoreError::RefundRefused(RefundRefusal::PaymentMissing))?;
    if payment.status != PaymentStatus::Succeeded {
        return Err(StoreError::RefundRefused(RefundRefusal::NotPaid));
    }
    let total = held
        .checked_add(refund.amount)
        .ok_or(StoreError::RefundRefused(RefundRefusal::ExceedsPayment))?;
    if total > payment.amount || refund.currency != payment.currency {
        return Err(StoreError::RefundRefused(RefundRefusal::ExceedsPayment));
    }
    Ok(())
}

/// An attempt's stored operation name as the `&'static str` the audit type carries.
pub(super) fn operation_name(stored: &str) -> &'static str {
    match stored {
        "create" => "create",
        "query" => "query",
        "close" => "close",
        "refund" => "refund",
        "refund_query" => "refund_query",
        _ => "other",
    }
}

/// Clamps a stored counter to `u32`.
pub(super) fn count(value: i64) -> u32 {
    u32::try_from(value.max(0)).unwrap_or(u32::MAX)
}

/// `'pending', 'unknown', 'requires_action'`: [`PaymentStatus::OPEN`] as an SQL list.
pub(super) fn open_payment_statuses() -> &'static str {
    static LIST: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        sql_list(PaymentStatus::OPEN.iter().map(PaymentStatus::as_str))
    });
    &LIST
}

/// `'pending', 'unknown'`: [`RefundStatus::OPEN`] as an SQL list.
pub(super) fn open_refund_statuses() -> &'static str {
    static LIST: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| sql_list(RefundStatus::OPEN.iter().map(RefundStatus::as_str)));
    &LIST
}

/// Quoted SQL literals of stable names (which are `[a-z_]`, so need no escaping).
fn sql_list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names
        .map(|name| format!("'{name}'"))
        .collect::<Vec<_>>()
        .join(", ")
}
// Reconciliation rows and statements both backends share.

/// The daily-run claim statement: SQLite and PostgreSQL both take this upsert (`?n` and `$n`
/// aside): a missing or lapsed claim is (re)taken, a live one of another holder is not.
pub(super) const CLAIM_DAILY: &str = "INSERT INTO recon_claims (merchant_id, account_id, day, holder, lease_until) \
    VALUES ($1, $2, $3, $4, $6) ON CONFLICT (merchant_id, account_id, day) DO UPDATE \
    SET holder = excluded.holder, lease_until = excluded.lease_until \
    WHERE recon_claims.lease_until <= $5 OR recon_claims.holder = excluded.holder";

pub(super) const RELEASE_DAILY: &str = "DELETE FROM recon_claims WHERE merchant_id = $1 AND account_id = $2 AND day = $3 AND holder = $4";

/// A ledger payment as reconciliation reads it ([`PAYMENT_FIELDS`] order).
pub(super) struct LedgerPaymentRow {
    pub id: String,
    pub provider_ref: Option<String>,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub paid_at_ms: Option<i64>,
}

impl LedgerPaymentRow {
    pub fn decode(self) -> Result<LedgerPayment, StoreError> {
        Ok(LedgerPayment {
            id: self.id.into_boxed_str(),
            provider_ref: self.provider_ref.map(String::into_boxed_str),
            amount: self.amount,
            currency: Currency::parse(&self.currency).map_err(|_| corrupt("currency"))?,
            status: PaymentStatus::parse(&self.status).ok_or_else(|| corrupt("status"))?,
            paid_at_ms: self.paid_at_ms,
        })
    }
}

/// A ledger refund as reconciliation reads it ([`REFUND_FIELDS`] order).
pub(super) struct LedgerRefundRow {
    pub id: String,
    pub payment_id: String,
    pub amount: i64,
    pub currency: String,
    pub status: String,
    pub settled_at_ms: i64,
}

impl LedgerRefundRow {
    pub fn decode(self) -> Result<LedgerRefund, StoreError> {
        Ok(LedgerRefund {
            id: self.id.into_boxed_str(),
            payment_id: self.payment_id.into_boxed_str(),
            amount: self.amount,
            currency: Currency::parse(&self.currency).map_err(|_| corrupt("currency"))?,
            status: RefundStatus::parse(&self.status).ok_or_else(|| corrupt("refund status"))?,
            settled_at_ms: self.settled_at_ms,
        })
    }
}

pub(super) const PAYMENT_FIELDS: &str = "id, provider_ref, amount, currency, status, paid_at";

pub(super) const REFUND_FIELDS: &str =
    "r.id, r.payment_id, r.amount, r.currency, r.status, r.updated_at";

pub(super) fn break_json(record: &Break) -> Result<String, StoreError> {
    serde_json::to_string(record).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(super) const BREAK_FIELDS: &str =
    "merchant_id, account_id, day, run_id, id, body, status, note";

pub(super) const RUN_FIELDS: &str =
    "id, merchant_id, account_id, day, statement_id, finished_at, report";

/// Report order: the category enum's order, not its name's.
pub(super) fn report_order(breaks: &mut [Break]) {
    breaks.sort_by(|a, b| {
        (a.category, &a.payment_id, &a.refund_id).cmp(&(b.category, &b.payment_id, &b.refund_id))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_status_lists_come_from_the_ledger_sets() {
        assert_eq!(
            open_payment_statuses(),
            "'pending', 'unknown', 'requires_action'"
        );
        assert_eq!(open_refund_statuses(), "'pending', 'unknown'");
    }

    #[test]
    fn the_postgres_partial_indexes_use_the_same_sets() {
        // A migration is history and is never rewritten: when a set changes, a new migration
        // must recreate the index, or the planner stops using it. This fails until it does.
        let migrations: String = super::super::postgres::MIGRATIONS
            .iter()
            .map(|(_, _, sql)| *sql)
            .collect();
        let payments = format!("WHERE status IN ({});", open_payment_statuses());
        let refunds = format!("WHERE status IN ({});", open_refund_statuses());
        assert!(migrations.contains(&payments), "{payments}");
        assert!(migrations.contains(&refunds), "{refunds}");
    }
}
