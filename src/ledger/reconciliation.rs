//! Reconciliation records as the ledger keeps them: the ledger side of a statement day, the
//! statement file's record, and breaks with their workflow status. The matcher, runs and
//! reports that produce and read them live in `reconcile`.

use moongate_contract::Currency;
use serde::{Deserialize, Serialize};

use super::{PaymentStatus, RefundStatus};

/// What a reconciliation result says about one ledger record or statement line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Ledger and statement agree.
    Matched,
    /// A statement refund line matched the ledger refund of the same payment.
    Refund,
    /// Agree, but the ledger recorded it outside the statement day (within the drift window).
    Timing,
    /// The ledger says paid or refunded; the provider's statement does not list it.
    MissingInProvider,
    /// The provider collected or refunded money the ledger does not have.
    MissingInLedger,
    /// Same record, different amounts.
    AmountMismatch,
    /// Same record, different currencies.
    CurrencyMismatch,
    /// The ledger and the provider disagree on the state (pending here, paid there, …).
    StatusMismatch,
    /// The statement lists the same payment or refund more than once.
    Duplicate,
    /// The provider's fee on a line differs from the account's agreed rate by more than one
    /// minor unit (only with `fee_rate` configured; a line also has its matching category).
    FeeMismatch,
}

impl Category {
    /// Every category, in report order.
    pub const ALL: [Category; 10] = [
        Category::Matched,
        Category::Refund,
        Category::Timing,
        Category::MissingInProvider,
        Category::MissingInLedger,
        Category::AmountMismatch,
        Category::CurrencyMismatch,
        Category::StatusMismatch,
        Category::Duplicate,
        Category::FeeMismatch,
    ];

    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Matched => "matched",
            Category::Refund => "refund",
            Category::Timing => "timing",
            Category::MissingInProvider => "missing_in_provider",
            Category::MissingInLedger => "missing_in_ledger",
            Category::AmountMismatch => "amount_mismatch",
            Category::CurrencyMismatch => "currency_mismatch",
            Category::StatusMismatch => "status_mismatch",
            Category::Duplicate => "duplicate",
            Category::FeeMismatch => "fee_mismatch",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.as_str() == text)
    }

    /// True when the result needs a person: it becomes a stored break. Matched payments and
    /// refunds do not; timing differences do (they are cheap to clear, and a finance team
    /// wants to see them), as does everything else.
    pub fn is_break(self) -> bool {
        !matches!(self, Category::Matched | Category::Refund)
    }

    /// One-line explanation for the report.
    pub fn meaning(self) -> &'static str {
        match self {
            Category::Matched => "payment in the ledger and on the statement, amounts equal",
            Category::Refund => "refund in the ledger and on the statement, matched to its payment",
            Category::Timing => {
                "agrees, but recorded on another day than the provider's (within the drift window)"
            }
            Category::MissingInProvider => {
                "the ledger says the money moved; the statement does not list it"
            }
            Category::MissingInLedger => "the provider moved money the ledger does not know about",
            Category::AmountMismatch => "same payment or refund, different amounts",
            Category::CurrencyMismatch => "same payment or refund, different currencies",
            Category::StatusMismatch => "the ledger and the provider disagree on the state",
            Category::Duplicate => "the statement lists the same payment or refund twice",
            Category::FeeMismatch => {
                "the provider's fee differs from the agreed rate by more than one minor unit"
            }
        }
    }
}

/// A break's workflow state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakStatus {
    /// Needs a look.
    Open,
    /// Cleared (by a person, a repair, or a later run that no longer finds it).
    Resolved,
    /// Looked at and accepted as is.
    Ignored,
}

impl BreakStatus {
    /// Every status.
    pub const ALL: [BreakStatus; 3] = [
        BreakStatus::Open,
        BreakStatus::Resolved,
        BreakStatus::Ignored,
    ];

    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakStatus::Open => "open",
            BreakStatus::Resolved => "resolved",
            BreakStatus::Ignored => "ignored",
        }
    }

    /// Parses a stable name.
    pub fn parse(text: &str) -> Option<BreakStatus> {
        [
            BreakStatus::Open,
            BreakStatus::Resolved,
            BreakStatus::Ignored,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// A ledger payment as the matcher needs it (compact: a million of these fit in memory).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerPayment {
    /// `pay_…`, also the provider's `out_trade_no`.
    pub id: Box<str>,
    /// The provider's transaction number, when known.
    pub provider_ref: Option<Box<str>>,
    /// Minor units.
    pub amount: i64,
    /// Currency.
    pub currency: Currency,
    /// Ledger status.
    pub status: PaymentStatus,
    /// When the ledger recorded it as paid (ms since the epoch), when it did.
    pub paid_at_ms: Option<i64>,
}

/// A ledger refund as the matcher needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerRefund {
    /// `re_…`, also the provider's refund request number.
    pub id: Box<str>,
    /// Its payment.
    pub payment_id: Box<str>,
    /// Minor units.
    pub amount: i64,
    /// Currency.
    pub currency: Currency,
    /// Ledger status.
    pub status: RefundStatus,
    /// When it last changed (for a succeeded refund: when it succeeded), ms.
    pub settled_at_ms: i64,
}

/// A stored raw statement file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementRecord {
    /// `stm_…`.
    pub id: String,
    /// Merchant.
    pub merchant_id: String,
    /// Account.
    pub account_id: String,
    /// Provider kind.
    pub provider: String,
    /// Statement day, `yyyy-MM-dd` (Beijing).
    pub day: String,
    /// `download`, `import` or `empty` (the provider has no statement: nothing happened).
    pub source: String,
    /// SHA-256 (hex) of the raw file, computed before parsing.
    pub sha256: String,
    /// Where the raw file is kept.
    pub path: Option<String>,
    /// File size.
    pub bytes: u64,
    /// When it was fetched or imported (RFC 3339).
    pub fetched_at: String,
}

/// One break (or, in a report, any non-matched result).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Break {
    /// `brk_…` once stored.
    pub id: String,
    /// Category.
    pub category: Category,
    /// `payment` or `refund`.
    pub kind: String,
    /// Payment (`out_trade_no`).
    pub payment_id: String,
    /// Refund, for refund results.
    pub refund_id: Option<String>,
    /// The provider's transaction number, when known.
    pub provider_txn_id: Option<String>,
    /// Currency of the amounts.
    pub currency: String,
    /// Ledger amount, minor units.
    pub ledger_amount: Option<i64>,
    /// Statement amount, minor units.
    pub provider_amount: Option<i64>,
    /// Ledger status.
    pub ledger_status: Option<String>,
    /// Statement status.
    pub provider_status: Option<String>,
    /// Line in the statement file.
    pub statement_line: Option<u64>,
    /// Seconds between the ledger's time and the provider's, when both are known.
    pub drift_secs: Option<i64>,
    /// What exactly differs.
    pub detail: String,
    /// Workflow state.
    pub status: BreakStatus,
    /// Resolution note.
    pub note: Option<String>,
}
