//! The ledger's storage interface. SQLite ([`sqlite::SqliteStore`]) is the embedded default;
//! a PostgreSQL backend implements the same trait.
//!
//! Every method is one transaction. The ones that change a payment or refund also append the
//! event and its webhook outbox row in that same transaction, so a state change, its event
//! and its delivery obligation are never separated by a crash.

pub mod postgres;
mod rows;
pub mod sqlite;

use std::fmt;

use async_trait::async_trait;
use moongate_contract::ProviderKind;
use time::OffsetDateTime;

use crate::ledger::checkout::Checkout;
use crate::ledger::code::Code;
use crate::ledger::reconciliation::{
    Break, BreakStatus, LedgerPayment, LedgerRefund, StatementRecord,
};
use crate::ledger::{Failure, Payment, PaymentChange, Refund, RefundStatus};

/// Opens the configured ledger: the SQLite file, or the PostgreSQL database with its pending
/// migrations applied (instances starting together take turns).
pub async fn open(
    ledger: &crate::config::LedgerBackend,
) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    Ok(match ledger {
        crate::config::LedgerBackend::Sqlite(path) => {
            std::sync::Arc::new(sqlite::SqliteStore::open(path)?)
        }
        crate::config::LedgerBackend::Postgres {
            url,
            max_connections,
        } => std::sync::Arc::new(postgres::PgStore::open(url.expose(), *max_connections).await?),
    })
}

/// Storage failure. Never shown to API callers beyond a generic internal error.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no.
    #[error("database error: {0}")]
    Database(String),
    /// A stored row could not be decoded.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A refund would exceed what was paid, or the payment is not refundable.
    #[error("refund refused: {0}")]
    RefundRefused(RefundRefusal),
    /// The claim's request nonce was seen before: the claim (and the write it came with) is
    /// refused, and nothing was written.
    #[error("request nonce already used")]
    NonceReused,
}

/// Why a refund was refused before any provider call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundRefusal {
    /// No such payment for this merchant.
    PaymentMissing,
    /// The payment is not `succeeded`.
    NotPaid,
    /// Pending, unknown and succeeded refunds plus this one exceed the amount paid.
    ExceedsPayment,
}

impl fmt::Display for RefundRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RefundRefusal::PaymentMissing => "payment missing",
            RefundRefusal::NotPaid => "payment not paid",
            RefundRefusal::ExceedsPayment => "refunds would exceed the amount paid",
        })
    }
}

/// An idempotency key claim: scoped per merchant, bound to a hash of the request.
#[derive(Clone, Debug)]
pub struct IdemClaim {
    /// Merchant.
    pub merchant_id: String,
    /// The `Idempotency-Key` header.
    pub key: String,
    /// SHA-256 of method, path and body.
    pub request_hash: String,
    /// Now.
    pub now: OffsetDateTime,
    /// The signed request's nonce, remembered in the same write as the key: a nonce seen before
    /// refuses the claim with [`StoreError::NonceReused`] (so a POST's replay check and its
    /// first ledger write are one job, not two). `None` where there is no signed request (the
    /// cashier) or its nonce was already remembered.
    pub nonce: Option<NonceClaim>,
}

/// A request nonce to remember (see [`crate::auth`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonceClaim {
    /// The `Moongate-Nonce` header.
    pub nonce: String,
    /// Until when a replay of it is refused.
    pub keep_until: OffsetDateTime,
}

/// What claiming an idempotency key found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Begin<T> {
    /// New key: the row and the first ledger write are committed.
    Fresh(T),
    /// Same key, same request, finished: replay this response.
    Replay {
        /// HTTP status.
        status: u16,
        /// Body bytes.
        body: Vec<u8>,
    },
    /// Same key, same request, still running (or abandoned by a crash when `resource_id` is set
    /// and the claim is old: the caller may answer with the resource's current state).
    InFlight {
        /// Resource created by the first request.
        resource_id: Option<String>,
        /// When the first request claimed the key.
        claimed_at: OffsetDateTime,
    },
    /// Same key, different request.
    Mismatch,
}

/// Identifies one provider notification for deduplication.
#[derive(Clone, Debug)]
pub struct InboxKey {
    /// Provider kind.
    pub provider: String,
    /// `merchant/account`.
    pub account: String,
    /// Provider notification id.
    pub dedupe_id: String,
}

/// What commits with a payment's change, in its transaction.
#[derive(Clone, Debug)]
pub enum Also {
    /// The change alone.
    Nothing,
    /// A provider notification, applied once: a duplicate changes nothing
    /// ([`Updated::Duplicate`]).
    Inbox(InboxKey),
    /// The answer of the idempotent request that made the change, stored under its key: the
    /// request's answer and the change are one commit.
    Answer(KeyAnswer),
}

/// An idempotency key completed by a payment's change: its stored answer is `status` with
/// [`answer_body`] of the payment as the change leaves it.
#[derive(Clone, Debug)]
pub struct KeyAnswer {
    /// The key's merchant.
    pub merchant_id: String,
    /// The `Idempotency-Key`.
    pub key: String,
    /// The HTTP status answered.
    pub status: u16,
}

/// The body an answer about a payment carries (and a key completed with it keeps).
pub fn answer_body(payment: &Payment) -> Vec<u8> {
    serde_json::to_vec(&payment.to_api_json()).unwrap_or_default()
}

/// Result of an update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Updated<T> {
    /// Applied (or nothing to apply): the record as it now stands and whether it changed.
    Done {
        /// The record after the update.
        record: T,
        /// True when an event was appended.
        changed: bool,
    },
    /// The inbox already holds this notification: nothing applied.
    Duplicate,
    /// No such record.
    Missing,
}

/// Decides a payment change from its current state; `None` changes nothing.
pub type PaymentDecision = Box<dyn FnOnce(&Payment) -> Option<PaymentChange> + Send>;

/// One provider call, for the audit trail.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// Payment concerned.
    pub payment_id: String,
    /// The provider account called.
    pub account_id: String,
    /// Refund concerned, if any.
    pub refund_id: Option<String>,
    /// `create`, `query`, `close`, `refund`, `refund_query`.
    pub operation: &'static str,
    /// Started.
    pub started_at: OffsetDateTime,
    /// Duration in milliseconds.
    pub elapsed_ms: i64,
    /// Outcome summary (`ok`, `rejected`, `unknown`, …) and provider code.
    pub outcome: String,
}

/// What the janitor checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckTarget {
    /// A payment.
    Payment,
    /// A refund.
    Refund,
}

/// A webhook delivery due now.
#[derive(Clone, Debug)]
pub struct OutboxItem {
    /// Event sequence number.
    pub event_seq: i64,
    /// Event id (`evt_…`).
    pub event_id: String,
    /// Merchant.
    pub merchant_id: String,
    /// JSON body to deliver.
    pub body: String,
    /// Attempts so far.
    pub attempts: u32,
}

/// An event as stored.
#[derive(Clone, Debug)]
pub struct StoredEvent {
    /// Sequence.
    pub seq: i64,
    /// `evt_…`.
    pub id: String,
    /// e.g. `payment.succeeded`.
    pub kind: String,
    /// Object concerned.
    pub object_id: String,
}

/// One webhook delivery attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// When.
    pub attempted_at: OffsetDateTime,
    /// Answered 2xx.
    pub delivered: bool,
    /// Why not.
    pub error: Option<String>,
}

/// An event with its delivery state and log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRecord {
    /// The event body as delivered (JSON).
    pub body: String,
    /// Attempts in the current schedule.
    pub attempts: i64,
    /// When the next attempt is due (none: delivered or parked).
    pub next_attempt_at: Option<OffsetDateTime>,
    /// When it was last delivered.
    pub delivered_at: Option<OffsetDateTime>,
    /// Every attempt, oldest first.
    pub deliveries: Vec<Delivery>,
}

/// The ledger's storage: idempotency keys and request nonces.
#[async_trait]
pub trait KeyStore: Send + Sync + fmt::Debug + 'static {
    /// Records a request nonce; false when it was already used (replay). A lapsed row of the
    /// same nonce is taken over; lapsed rows are otherwise left to [`KeyStore::purge_nonces`].
    async fn remember_nonce(
        &self,
        merchant_id: &str,
        nonce: &str,
        now: OffsetDateTime,
        keep_until: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Deletes nonces lapsed before `now` (the janitor's periodic job, not each request's);
    /// returns how many.
    async fn purge_nonces(&self, now: OffsetDateTime) -> Result<u64, StoreError>;

    /// Deletes idempotency keys past their retention (48 hours; a key back later is a new
    /// request); returns how many. The janitor's job: a request only ever takes over its own.
    async fn purge_keys(&self, now: OffsetDateTime) -> Result<u64, StoreError>;

    /// Proves the ledger can commit: writes (and commits, durably) one lapsed nonce row of
    /// its own under `probe`, which the janitor's purge then removes (readiness).
    async fn probe_write(&self, probe: &str, now: OffsetDateTime) -> Result<(), StoreError>;

    /// Claims an idempotency key for an action on an existing resource.
    async fn claim_key(&self, claim: IdemClaim, resource_id: &str)
    -> Result<Begin<()>, StoreError>;

    /// Stores the response of a claimed key.
    async fn complete_key(
        &self,
        merchant_id: &str,
        key: &str,
        status: u16,
        body: Vec<u8>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Drops a claim whose request did nothing (so the key can be used again).
    async fn release_key(&self, merchant_id: &str, key: &str) -> Result<(), StoreError>;
}

/// The ledger's storage: payments, refunds and the provider attempt log.
#[async_trait]
pub trait PaymentStore: Send + Sync + fmt::Debug + 'static {
    /// Claims an idempotency key and inserts the payment (with its `payment.created` event).
    async fn begin_payment(
        &self,
        claim: IdemClaim,
        payment: Payment,
    ) -> Result<Begin<Payment>, StoreError>;

    /// What refunds of a payment hold now (pending, unknown and succeeded), minor units: what
    /// "refund all that is left" subtracts. The insert checks again under the payment's lock.
    async fn refunds_held(&self, payment_id: &str) -> Result<i64, StoreError>;

    /// Claims an idempotency key and inserts the refund after checking it fits the payment.
    async fn begin_refund(
        &self,
        claim: IdemClaim,
        refund: Refund,
    ) -> Result<Begin<Refund>, StoreError>;

    /// A payment by id, optionally scoped to a merchant.
    async fn payment(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> Result<Option<Payment>, StoreError>;

    /// A merchant's payments, newest first, after the cursor; plus whether more exist.
    async fn list_payments(
        &self,
        merchant_id: &str,
        starting_after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Payment>, bool), StoreError>;

    /// A refund by id, optionally scoped to a merchant.
    async fn refund(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> Result<Option<Refund>, StoreError>;

    /// Applies `decide` to the current payment under a write lock, with what [`Also`] says in
    /// the same transaction: a notification recorded once (a duplicate is refused), or the
    /// request's answer stored under its idempotency key (changed or not).
    async fn update_payment(
        &self,
        id: &str,
        also: Also,
        now: OffsetDateTime,
        decide: PaymentDecision,
    ) -> Result<Updated<Payment>, StoreError>;

    /// [`PaymentStore::update_payment`] with `change`, for a payment the caller holds as
    /// `known` (as its last write left it, a fresh create's say): a backend may write the
    /// change without first reading and locking the row, when it finds every column the
    /// change is decided on still as in `known`; otherwise it does what `update_payment` does.
    /// The `attempts` (the log lines of the calls that led to the change) commit with it.
    async fn update_known(
        &self,
        known: &Payment,
        also: Also,
        now: OffsetDateTime,
        change: PaymentChange,
        attempts: Vec<Attempt>,
    ) -> Result<Updated<Payment>, StoreError>;

    /// Moves a refund (and, on success, the payment's refunded total) along its state machine.
    async fn update_refund(
        &self,
        id: &str,
        status: RefundStatus,
        failure: Option<Failure>,
        now: OffsetDateTime,
    ) -> Result<Updated<Refund>, StoreError>;

    /// Appends a provider attempt to the audit trail.
    async fn record_attempt(&self, attempt: Attempt) -> Result<(), StoreError>;

    /// The provider attempts of a payment (and its refunds), oldest first.
    async fn attempts_for(&self, payment_id: &str) -> Result<Vec<Attempt>, StoreError>;

    /// Fails a `pending` payment over from one account to another (the first certainly did
    /// not take the order). `Ok(None)` when it is no longer pending on `from`.
    async fn switch_account(
        &self,
        payment_id: &str,
        from: &str,
        to: &str,
        provider: ProviderKind,
        now: OffsetDateTime,
    ) -> Result<Option<Payment>, StoreError>;
}

/// What sets Moongate's clock ([`crate::clock`]).
#[derive(Clone, Copy, Debug)]
pub enum ClockReference {
    /// The database's clock, read at `read_at`: every instance sharing it follows it.
    Database {
        /// What the database's clock read.
        now: OffsetDateTime,
        /// When (midway through the round trip).
        read_at: std::time::Instant,
    },
    /// The latest time this ledger recorded (none on a new one): a new process's clock never
    /// starts before it.
    Reached(Option<OffsetDateTime>),
}

/// The ledger's storage: its side of Moongate's clock.
#[async_trait]
pub trait ClockStore: Send + Sync + fmt::Debug + 'static {
    /// What Moongate's clock is set by.
    async fn clock_reference(&self) -> Result<ClockReference, StoreError>;

    /// Records that Moongate's clock reached `now` (read back by
    /// [`ClockStore::clock_reference`] at the next start; nothing to keep where the database's
    /// clock is the reference).
    async fn mark_clock(&self, now: OffsetDateTime) -> Result<(), StoreError>;
}

/// The ledger's storage: the janitor: open payments and refunds due for a check, leased.
#[async_trait]
pub trait JanitorStore: Send + Sync + fmt::Debug + 'static {
    /// Claims open payments (`pending`, `unknown`, `requires_action`) whose next check is due,
    /// with how many checks they have had, soonest first. Each is leased until `lease_until`:
    /// no other janitor (of this or another instance) takes it before then, and
    /// [`JanitorStore::schedule_check`] sets its real next check when this one is done.
    async fn payments_due(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(Payment, u32)>, StoreError>;

    /// Claims open refunds whose next check is due, with their check counts, leased as
    /// [`Store::payments_due`] leases payments.
    async fn refunds_due(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(Refund, u32)>, StoreError>;

    /// Records a check and when the next one is due.
    async fn schedule_check(
        &self,
        target: CheckTarget,
        id: &str,
        next_at: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Open payments (`pending`, `unknown`, `requires_action`) not touched since `before`.
    async fn payments_in_doubt(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Payment>, StoreError>;

    /// Refunds in `pending` or `unknown` not touched since `before`.
    async fn refunds_in_doubt(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Refund>, StoreError>;
}

impl EventRecord {
    /// Where its delivery stands: an attempt scheduled, delivered, or neither (parked).
    pub fn delivery_status(&self) -> DeliveryStatus {
        match (&self.delivered_at, &self.next_attempt_at) {
            (_, Some(_)) => DeliveryStatus::Pending,
            (Some(_), None) => DeliveryStatus::Delivered,
            (None, None) => DeliveryStatus::Parked,
        }
    }
}

/// Where an event's delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// An attempt is scheduled.
    Pending,
    /// The merchant's endpoint took it.
    Delivered,
    /// Every attempt failed; kept, not retried until resent.
    Parked,
}

impl DeliveryStatus {
    /// Parses the API's name.
    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "delivered" => Some(DeliveryStatus::Delivered),
            "parked" => Some(DeliveryStatus::Parked),
            _ => None,
        }
    }

    /// The API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Parked => "parked",
        }
    }
}

/// Which of a merchant's events (every field narrows; none: all of them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Event type (`payment.succeeded`, …).
    pub kind: Option<String>,
    /// The payment or refund it is about.
    pub object_id: Option<String>,
    /// Delivery status.
    pub delivery: Option<DeliveryStatus>,
    /// Created at or after.
    pub created_from: Option<OffsetDateTime>,
    /// Created before.
    pub created_to: Option<OffsetDateTime>,
    /// Only events older than this one (the cursor of the previous page).
    pub before_event: Option<String>,
}

/// The ledger's storage: events and the webhook outbox.
#[async_trait]
pub trait EventStore: Send + Sync + fmt::Debug + 'static {
    /// A merchant's event ids matching `filter`, newest first, at most `limit`.
    async fn event_ids(
        &self,
        merchant_id: &str,
        filter: EventFilter,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;

    /// Queues up to `limit` of a merchant's parked events matching `filter` (oldest first)
    /// for delivery again now, each with a fresh schedule; returns how many.
    async fn resend_parked(
        &self,
        merchant_id: &str,
        filter: EventFilter,
        limit: u32,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError>;

    /// One of a merchant's events with its delivery log.
    async fn event(
        &self,
        merchant_id: &str,
        event_id: &str,
    ) -> Result<Option<EventRecord>, StoreError>;

    /// Queues one of a merchant's events for delivery again now, with a fresh schedule.
    /// `false` when there is no such event.
    async fn resend_event(
        &self,
        merchant_id: &str,
        event_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Claims webhook deliveries due at `now`, oldest event first, each leased until
    /// `lease_until` (no other worker delivers it meanwhile; [`Store::webhook_attempted`]
    /// records the outcome and the next attempt). At most `per_merchant` of one merchant, and
    /// none of the merchants in `skip` (those the caller already has enough of in flight):
    /// one merchant's backlog never fills a claim.
    async fn due_webhooks(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
        per_merchant: u32,
        skip: &[String],
    ) -> Result<Vec<OutboxItem>, StoreError>;

    /// Records a delivery attempt: delivered, retry at `next_attempt_at`, or parked (both `None`).
    async fn webhook_attempted(
        &self,
        event_seq: i64,
        now: OffsetDateTime,
        delivered: bool,
        next_attempt_at: Option<OffsetDateTime>,
        error: Option<String>,
    ) -> Result<(), StoreError>;

    /// Parks events no delivery can be tried for (their merchant has no webhook), all in one
    /// write, each with its attempt logged under `reason`.
    async fn park_undeliverable(
        &self,
        event_seqs: Vec<i64>,
        now: OffsetDateTime,
        reason: String,
    ) -> Result<(), StoreError>;

    /// Parks, in one write, every due event of merchants no delivery can be tried for (they
    /// have no webhook), each with its attempt logged under `reason`; returns how many.
    async fn park_merchants(
        &self,
        merchant_ids: Vec<String>,
        now: OffsetDateTime,
        reason: String,
    ) -> Result<u64, StoreError>;

    /// Events about one object, oldest first.
    async fn events_for(&self, object_id: &str) -> Result<Vec<StoredEvent>, StoreError>;
}

/// The ledger's storage: reconciliation: the ledger side of a day, statements, runs, breaks, daily claims, repairs.
#[async_trait]
pub trait ReconStore: Send + Sync + fmt::Debug + 'static {
    // --- Reconciliation -------------------------------------------------------------------

    /// Succeeded payments of an account recorded as paid in `[from, to)`, and succeeded refunds
    /// of its payments completed in that window.
    async fn recon_ledger(
        &self,
        merchant_id: &str,
        account_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<(Vec<LedgerPayment>, Vec<LedgerRefund>), StoreError>;

    /// Payments (of this account) and refunds (of its payments) by id, in any state.
    async fn recon_lookup(
        &self,
        merchant_id: &str,
        account_id: &str,
        payment_ids: Vec<String>,
        refund_ids: Vec<String>,
    ) -> Result<(Vec<LedgerPayment>, Vec<LedgerRefund>), StoreError>;

    /// Claims the daily reconciliation of one account's statement day for `holder` until
    /// `lease_until`. False when another holder's claim is still live.
    async fn claim_daily_run(
        &self,
        claim: DailyClaim,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Gives a claim back (its run could not finish; any instance may try on its next pass).
    async fn release_daily_run(&self, claim: DailyClaim) -> Result<(), StoreError>;

    /// Records a stored raw statement file.
    async fn save_statement(&self, record: StatementRecord) -> Result<(), StoreError>;

    /// Stores a finished run and its breaks. A break already known for the same merchant,
    /// account, day, category and ids keeps its id, status and note; open breaks of earlier
    /// runs of that day that this run no longer finds are resolved. Returns the run's breaks
    /// as stored.
    async fn save_recon_run(
        &self,
        run: ReconRun,
        breaks: Vec<Break>,
    ) -> Result<Vec<Break>, StoreError>;

    /// A run and its breaks, optionally scoped to a merchant.
    async fn recon_run(
        &self,
        merchant_id: Option<&str>,
        run_id: &str,
    ) -> Result<Option<(ReconRun, Vec<Break>)>, StoreError>;

    /// The latest run of one account's statement day, if any.
    async fn latest_recon_run(
        &self,
        merchant_id: &str,
        account_id: &str,
        day: &str,
    ) -> Result<Option<ReconRun>, StoreError>;

    /// Runs, newest first.
    async fn recon_runs(
        &self,
        merchant_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ReconRun>, StoreError>;

    /// Breaks, newest first, optionally filtered.
    async fn breaks(
        &self,
        merchant_id: Option<&str>,
        status: Option<BreakStatus>,
        limit: u32,
    ) -> Result<Vec<StoredBreak>, StoreError>;

    /// One break, optionally scoped to a merchant.
    async fn break_by_id(
        &self,
        merchant_id: Option<&str>,
        break_id: &str,
    ) -> Result<Option<StoredBreak>, StoreError>;

    /// Sets a break's status and note. `None` when there is no such break (for the merchant).
    async fn set_break_status(
        &self,
        merchant_id: Option<&str>,
        break_id: &str,
        status: BreakStatus,
        note: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Option<StoredBreak>, StoreError>;

    /// Inserts a payment rebuilt from the provider's record (a `missing_in_ledger` repair),
    /// already `succeeded`, with its `payment.succeeded` event. `false` when the id exists.
    async fn insert_repaired_payment(
        &self,
        payment: Payment,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;
}

/// The ledger's storage: checkouts and their payments.
#[async_trait]
pub trait CheckoutStore: Send + Sync + fmt::Debug + 'static {
    // ---- Hosted cashier ----

    /// Claims the idempotency key and stores a new checkout, in one transaction.
    async fn begin_checkout(
        &self,
        idem: IdemClaim,
        checkout: Checkout,
    ) -> Result<Begin<Checkout>, StoreError>;

    /// One checkout, scoped to a merchant when `merchant_id` is set.
    async fn checkout(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> Result<Option<Checkout>, StoreError>;

    /// The checkout a cashier URL's token opens, by the token's SHA-256 (hex).
    async fn checkout_by_token_hash(&self, hash: &str) -> Result<Option<Checkout>, StoreError>;

    /// Drops the clear tokens checkouts from before derived tokens kept, once expired; how
    /// many.
    async fn forget_legacy_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError>;

    /// Inserts `payment` (with its `payment.created` event) as the checkout's new current
    /// payment, only if the current one is still `expected` and the checkout has opened fewer
    /// than `max_payments`: the one guard against two choices racing. `false`: nothing stored.
    async fn begin_checkout_payment(
        &self,
        checkout_id: &str,
        expected: Option<&str>,
        payment: Payment,
        max_payments: usize,
    ) -> Result<bool, StoreError>;

    /// Every payment a checkout opened, oldest first.
    async fn checkout_payments(&self, checkout_id: &str) -> Result<Vec<Payment>, StoreError>;

    /// Remembers a wallet OAuth `state` (by its hash) sent for a checkout from the browser
    /// whose cookie hashes to `browser_hash`.
    async fn begin_payer_identity(
        &self,
        state_hash: &str,
        checkout_id: &str,
        browser_hash: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError>;

    /// Takes a `state` once, for the browser it was sent from, if made after `made_after`: its
    /// checkout's id.
    async fn take_payer_identity(
        &self,
        state_hash: &str,
        browser_hash: &str,
        made_after: OffsetDateTime,
    ) -> Result<Option<String>, StoreError>;

    /// Sets the payer's openid of a checkout that has none; `false` when it had one.
    async fn set_checkout_openid(
        &self,
        checkout_id: &str,
        openid: &str,
    ) -> Result<bool, StoreError>;

    /// Drops `state`s made before `before`; how many.
    async fn purge_payer_identities(&self, before: OffsetDateTime) -> Result<u64, StoreError>;
}

/// The ledger's storage: static payment codes.
#[async_trait]
pub trait CodeStore: Send + Sync + fmt::Debug + 'static {
    /// Claims the idempotency key and stores a new code, in one transaction.
    async fn begin_code(&self, idem: IdemClaim, code: Code) -> Result<Begin<Code>, StoreError>;

    /// One of a merchant's codes.
    async fn code(&self, merchant_id: &str, id: &str) -> Result<Option<Code>, StoreError>;

    /// The code a URL's token opens, by the token's SHA-256 (hex).
    async fn code_by_token_hash(&self, hash: &str) -> Result<Option<Code>, StoreError>;

    /// A merchant's codes, newest first, older than `before` (a code id) when set.
    async fn codes(
        &self,
        merchant_id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Code>, StoreError>;

    /// Disables a code (once: a second call changes nothing); the code as it now is.
    async fn disable_code(
        &self,
        merchant_id: &str,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Code>, StoreError>;
}

/// Where a merchant's authorisation of a partner's app stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthorisationStatus {
    /// The token works, as far as Moongate knows.
    Active,
    /// The provider refused the token (revoked by the merchant, lapsed, replaced elsewhere);
    /// the merchant must authorise again, unless a refresh still works.
    Refused,
    /// The refresh token was refused too: only a new authorisation helps.
    Revoked,
}

impl AuthorisationStatus {
    /// The ledger's and the API's name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorisationStatus::Active => "active",
            AuthorisationStatus::Refused => "refused",
            AuthorisationStatus::Revoked => "revoked",
        }
    }

    /// Parses the ledger's name.
    pub fn parse(text: &str) -> Option<AuthorisationStatus> {
        match text {
            "active" => Some(AuthorisationStatus::Active),
            "refused" => Some(AuthorisationStatus::Refused),
            "revoked" => Some(AuthorisationStatus::Revoked),
            _ => None,
        }
    }
}

/// A merchant's authorisation of its partner's app as the ledger keeps it: the tokens only
/// sealed (`gateway/authorisations.rs` seals and opens them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAuthorisation {
    /// Merchant.
    pub merchant_id: String,
    /// Its account.
    pub account_id: String,
    /// The partner whose app it authorised.
    pub partner_id: String,
    /// The merchant's identity at the provider (`auth_app_id`).
    pub identity: String,
    /// The merchant's account id at the provider (`user_id`), when sent.
    pub user_id: Option<String>,
    /// The token, sealed.
    pub token_sealed: String,
    /// The refresh token, sealed.
    pub refresh_sealed: String,
    /// When the token lapses.
    pub expires_at: OffsetDateTime,
    /// When the refresh token lapses, when the provider said.
    pub refresh_expires_at: Option<OffsetDateTime>,
    /// Where it stands.
    pub status: AuthorisationStatus,
    /// The provider's code of the last refusal.
    pub status_code: Option<String>,
    /// When the tokens were last issued (authorised or refreshed).
    pub granted_at: OffsetDateTime,
    /// Last change of any kind.
    pub updated_at: OffsetDateTime,
    /// Bumped by every change of the tokens or the status: a change is only written over the
    /// version it was decided on.
    pub version: i64,
}

/// A link that starts one account's authorisation: opened by the merchant's browser, it binds
/// a fresh single-use `state` to that browser; the link works until it lapses or succeeds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorisationLink {
    /// `aul_…`.
    pub id: String,
    /// Merchant.
    pub merchant_id: String,
    /// Account.
    pub account_id: String,
    /// SHA-256 (hex) of the link's token; the token itself is only in the URL.
    pub link_hash: String,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Lapses.
    pub expires_at: OffsetDateTime,
}

/// The ledger's storage: merchants' authorisations of partners' apps, and the links that
/// start them.
#[async_trait]
pub trait AuthorisationStore: Send + Sync + fmt::Debug + 'static {
    /// Stores a new start link.
    async fn create_authorisation_link(&self, link: AuthorisationLink) -> Result<(), StoreError>;

    /// The browser opened the link (by its hash): binds a new `state` (by its hash) and the
    /// browser (by its cookie's hash) to it, replacing any earlier pair; `None` when the link
    /// is unknown, lapsed or already used.
    async fn open_authorisation_link(
        &self,
        link_hash: &str,
        state_hash: &str,
        browser_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<AuthorisationLink>, StoreError>;

    /// Takes a `state` once, for the browser it was bound to, while its link is open and if it
    /// was bound after `opened_after`: the link, or `None` (unknown, taken, lapsed, another
    /// browser).
    async fn take_authorisation_state(
        &self,
        state_hash: &str,
        browser_hash: &str,
        now: OffsetDateTime,
        opened_after: OffsetDateTime,
    ) -> Result<Option<AuthorisationLink>, StoreError>;

    /// Stores newly issued tokens (an authorisation or a refresh) as `active`, replacing the
    /// account's earlier ones, and marks `link_id` used; the new version.
    async fn save_authorisation(
        &self,
        authorisation: StoredAuthorisation,
        link_id: Option<&str>,
    ) -> Result<i64, StoreError>;

    /// Every stored authorisation, or one merchant's.
    async fn authorisations(
        &self,
        merchant_id: Option<&str>,
    ) -> Result<Vec<StoredAuthorisation>, StoreError>;

    /// Leases the refresh of an authorisation still at `version` until `lease_until`, so that
    /// one instance spends its refresh token; `false` when it changed or another holds it.
    async fn claim_authorisation_refresh(
        &self,
        merchant_id: &str,
        account_id: &str,
        version: i64,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Sets the status of an authorisation still at `version`; `false` when it changed.
    async fn set_authorisation_status(
        &self,
        merchant_id: &str,
        account_id: &str,
        version: i64,
        status: AuthorisationStatus,
        code: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError>;

    /// Drops lapsed and used links; how many.
    async fn purge_authorisation_links(&self, now: OffsetDateTime) -> Result<u64, StoreError>;
}

/// The whole ledger: every focused part, as one object the gateway holds (`Arc<dyn Store>`).
/// Both backends implement each part; code that uses the ledger imports the parts it needs.
pub trait Store:
    KeyStore
    + PaymentStore
    + JanitorStore
    + EventStore
    + ReconStore
    + CheckoutStore
    + ClockStore
    + AuthorisationStore
    + CodeStore
{
}

impl<T> Store for T where
    T: KeyStore
        + PaymentStore
        + JanitorStore
        + EventStore
        + ReconStore
        + CheckoutStore
        + ClockStore
        + AuthorisationStore
        + CodeStore
{
}

/// Who claims which daily reconciliation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyClaim {
    /// Merchant.
    pub merchant_id: String,
    /// Account.
    pub account_id: String,
    /// Statement day, `yyyy-MM-dd`.
    pub day: String,
    /// The claiming instance.
    pub holder: String,
}

/// A stored reconciliation run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconRun {
    /// `rec_…`.
    pub id: String,
    /// Merchant.
    pub merchant_id: String,
    /// Account.
    pub account_id: String,
    /// Statement day, `yyyy-MM-dd`.
    pub day: String,
    /// The statement file.
    pub statement_id: String,
    /// Finished.
    pub finished_at: OffsetDateTime,
    /// The report without its break list (JSON).
    pub report: String,
}

/// A break with where it belongs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBreak {
    /// Merchant.
    pub merchant_id: String,
    /// Account.
    pub account_id: String,
    /// Statement day.
    pub day: String,
    /// The last run that found it.
    pub run_id: String,
    /// The break.
    pub record: Break,
}
