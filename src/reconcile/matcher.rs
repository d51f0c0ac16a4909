//! The pure matcher: one statement day of one account.
//!
//! The ledger side is loaded up front (succeeded payments and refunds recorded within the
//! statement day ± the drift window), keyed by Moongate's ids, which are the providers'
//! `out_trade_no` / refund request numbers. Statement lines then stream through [`Matcher::line`]
//! one at a time and only results that are not plain matches are kept. Lines whose id is not in
//! the window are deferred; the caller looks those ids up in the whole ledger and hands them to
//! [`Matcher::finish`], which also turns unseen ledger records of the day into
//! `missing_in_provider`. Amounts are integer minor units throughout.

use std::collections::{BTreeMap, HashMap};

use moongate_contract::{Currency, LineKind, StatementLine};
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

use super::report::{format_milli, format_minor};
use super::{Break, BreakStatus, Category, LedgerPayment, LedgerRefund};
use crate::ledger::{PaymentStatus, RefundStatus};

/// What is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchSettings {
    /// The statement day (Beijing).
    pub day: Date,
    /// Drift window either side of the day, seconds.
    pub drift_secs: i64,
    /// The account's agreed fee rate (parts per million), when configured.
    pub fee_rate_ppm: Option<i64>,
}

impl MatchSettings {
    /// `[start, end)` of the day in ms since the epoch.
    pub fn day_bounds_ms(&self) -> (i64, i64) {
        let start = self
            .day
            .midnight()
            .assume_offset(moongate_contract::statement::BEIJING);
        let start_ms = unix_ms(start);
        (start_ms, start_ms + 86_400_000)
    }

    /// `[start, end)` of the ledger window (the day ± drift), as instants.
    pub fn window(&self) -> (OffsetDateTime, OffsetDateTime) {
        let (start, end) = self.day_bounds_ms();
        let drift = self.drift_secs * 1000;
        (from_ms(start - drift), from_ms(end + drift))
    }
}

fn unix_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn from_ms(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// Count and sums of one category in one currency.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CategoryTally {
    /// Category.
    pub category: Option<Category>,
    /// Currency.
    pub currency: String,
    /// Results.
    pub count: u64,
    /// Sum of the ledger amounts, minor units.
    pub ledger_amount: i64,
    /// Sum of the statement amounts, minor units.
    pub provider_amount: i64,
}

/// Ledger control totals for the statement day itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerTotals {
    /// Succeeded payments recorded on the day.
    pub payments: u64,
    /// Their sum, minor units.
    pub payment_total: i64,
    /// Succeeded refunds recorded on the day.
    pub refunds: u64,
    /// Their sum, minor units.
    pub refund_total: i64,
}

/// Fees the statement charged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeTally {
    /// Lines carrying a fee.
    pub lines: u64,
    /// Net fee, thousandths of a minor unit (refunds give some back).
    pub total_milli: i64,
    /// What the agreed rate would have charged, when one is configured.
    pub expected_milli: Option<i64>,
    /// The agreed rate, parts per million.
    pub rate_ppm: Option<i64>,
}

/// What a finished match produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Per category and currency, in [`Category::ALL`] order.
    pub tallies: Vec<CategoryTally>,
    /// Every result that is a break, sorted by category then id.
    pub breaks: Vec<Break>,
    /// Ledger side of the control totals.
    pub ledger: LedgerTotals,
    /// Fees.
    pub fees: FeeTally,
}

/// Ledger records of the window, indexed by id. The ids move out of the records into the
/// index (one allocation each), and the index maps to a position: a million payments cost
/// about 150 MB here.
struct Indexed<T> {
    records: Vec<T>,
    seen: Vec<bool>,
    index: HashMap<Box<str>, u32>,
}

impl<T> Indexed<T> {
    fn new(mut records: Vec<T>, id: impl Fn(&mut T) -> Box<str>) -> Indexed<T> {
        let mut index = HashMap::with_capacity(records.len());
        for (position, record) in records.iter_mut().enumerate() {
            index.insert(id(record), u32::try_from(position).unwrap_or(u32::MAX));
        }
        let seen = vec![false; records.len()];
        Indexed {
            records,
            seen,
            index,
        }
    }

    /// The record with this id: `Ok` the first time, `Err(Some)` when already seen.
    fn take(&mut self, id: &str) -> Result<&T, Option<&T>> {
        let Some(&position) = self.index.get(id) else {
            return Err(None);
        };
        let position = position as usize;
        match (self.seen.get_mut(position), self.records.get(position)) {
            (Some(seen), Some(record)) if !*seen => {
                *seen = true;
                Ok(record)
            }
            (_, record) => Err(record),
        }
    }

    /// Records never seen, with their ids.
    fn unseen(&self) -> impl Iterator<Item = (&str, &T)> {
        self.index.iter().filter_map(|(id, &position)| {
            let position = position as usize;
            match self.seen.get(position) {
                Some(false) => self.records.get(position).map(|r| (&**id, r)),
                _ => None,
            }
        })
    }

    fn len(&self) -> usize {
        self.records.len()
    }
}

/// Streams one statement against the ledger.
pub struct Matcher {
    settings: MatchSettings,
    day_start_ms: i64,
    day_end_ms: i64,
    payments: Indexed<LedgerPayment>,
    refunds: Indexed<LedgerRefund>,
    deferred: Vec<StatementLine>,
    deferred_payments: HashMap<Box<str>, u32>,
    deferred_refunds: HashMap<Box<str>, u32>,
    tallies: BTreeMap<(Category, Currency), CategoryTally>,
    breaks: Vec<Break>,
    ledger: LedgerTotals,
    fees: FeeTally,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("day", &self.settings.day)
            .field("payments", &self.payments.len())
            .field("refunds", &self.refunds.len())
            .field("breaks", &self.breaks.len())
            .finish_non_exhaustive()
    }
}

fn kind_name(kind: LineKind) -> &'static str {
    match kind {
        LineKind::Payment => "payment",
        LineKind::Refund => "refund",
    }
}

impl Matcher {
    /// A matcher over the ledger window (see [`MatchSettings::window`]).
    pub fn new(
        settings: MatchSettings,
        payments: Vec<LedgerPayment>,
        refunds: Vec<LedgerRefund>,
    ) -> Matcher {
        let (day_start_ms, day_end_ms) = settings.day_bounds_ms();
        let mut ledger = LedgerTotals::default();
        let in_day = |ms: i64| ms >= day_start_ms && ms < day_end_ms;
        for payment in &payments {
            if payment.status == PaymentStatus::Succeeded && payment.paid_at_ms.is_some_and(in_day)
            {
                ledger.payments += 1;
                ledger.payment_total = ledger.payment_total.saturating_add(payment.amount);
            }
        }
        for refund in &refunds {
            if refund.status == RefundStatus::Succeeded && in_day(refund.settled_at_ms) {
                ledger.refunds += 1;
                ledger.refund_total = ledger.refund_total.saturating_add(refund.amount);
            }
        }
        let payment_map = Indexed::new(payments, |p: &mut LedgerPayment| std::mem::take(&mut p.id));
        let refund_map = Indexed::new(refunds, |r: &mut LedgerRefund| std::mem::take(&mut r.id));
        Matcher {
            settings,
            day_start_ms,
            day_end_ms,
            payments: payment_map,
            refunds: refund_map,
            deferred: Vec::new(),
            deferred_payments: HashMap::new(),
            deferred_refunds: HashMap::new(),
            tallies: BTreeMap::new(),
            breaks: Vec::new(),
            ledger,
            fees: FeeTally::default(),
        }
    }

    fn in_day(&self, ms: i64) -> bool {
        ms >= self.day_start_ms && ms < self.day_end_ms
    }

    /// Takes one statement line.
    pub fn line(&mut self, line: StatementLine) {
        if line.fee_milli != 0 {
            self.fees.lines += 1;
            self.fees.total_milli = self.fees.total_milli.saturating_add(line.fee_milli);
        }
        if let Some(ppm) = self.settings.fee_rate_ppm {
            self.check_fee(&line, ppm);
        }
        match line.kind {
            LineKind::Payment => {
                let found = match self.payments.take(&line.payment_id) {
                    Ok(record) => Ok(record.clone()),
                    Err(seen) => Err(seen.map(|r| r.amount)),
                };
                match found {
                    Ok(record) => self.payment_result(&line, &record, false),
                    Err(Some(ledger_amount)) => self.duplicate(&line, Some(ledger_amount)),
                    Err(None) => self.defer(line),
                }
            }
            LineKind::Refund => {
                let key = line.refund_id.clone().unwrap_or_default();
                let found = match self.refunds.take(&key) {
                    Ok(record) => Ok(record.clone()),
                    Err(seen) => Err(seen.map(|r| r.amount)),
                };
                match found {
                    Ok(record) => self.refund_result(&line, &record),
                    Err(Some(ledger_amount)) => self.duplicate(&line, Some(ledger_amount)),
                    Err(None) => self.defer(line),
                }
            }
        }
    }

    /// Expected fee: amount × rate, in thousandths of a minor unit (given back on refunds).
    /// One minor unit of tolerance covers the providers' rounding to the fen.
    fn check_fee(&mut self, line: &StatementLine, ppm: i64) {
        let magnitude =
            i64::try_from(i128::from(line.amount) * i128::from(ppm) / 1000).unwrap_or(i64::MAX);
        let expected = match line.kind {
            LineKind::Payment => magnitude,
            LineKind::Refund => -magnitude,
        };
        self.fees.rate_ppm = Some(ppm);
        self.fees.expected_milli = Some(
            self.fees
                .expected_milli
                .unwrap_or(0)
                .saturating_add(expected),
        );
        if (line.fee_milli - expected).abs() <= 1000 {
            return;
        }
        let detail = format!(
            "fee {} {cur}, the agreed {}.{:04} % gives {} {cur}",
            format_milli(line.fee_milli, line.currency),
            ppm / 10_000,
            ppm % 10_000,
            format_milli(expected, line.currency),
            cur = line.currency.code(),
        );
        self.record(
            Category::FeeMismatch,
            Some(line),
            kind_name(line.kind),
            &line.payment_id,
            line.refund_id.as_deref(),
            line.currency,
            None,
            detail,
        );
    }

    fn defer(&mut self, line: StatementLine) {
        let (map, key) = match line.kind {
            LineKind::Payment => (&mut self.deferred_payments, line.payment_id.as_str()),
            LineKind::Refund => (
                &mut self.deferred_refunds,
                line.refund_id.as_deref().unwrap_or_default(),
            ),
        };
        let count = map.entry(key.into()).or_insert(0);
        *count += 1;
        if *count > 1 {
            self.duplicate(&line, None);
        } else {
            self.deferred.push(line);
        }
    }

    /// Ids the caller must look up in the whole ledger before [`Matcher::finish`].
    pub fn deferred_ids(&self) -> (Vec<String>, Vec<String>) {
        (
            self.deferred_payments
                .keys()
                .map(|k| k.to_string())
                .collect(),
            self.deferred_refunds
                .keys()
                .map(|k| k.to_string())
                .collect(),
        )
    }

    fn tally(&mut self, category: Category, currency: Currency, ledger: i64, provider: i64) {
        let entry = self
            .tallies
            .entry((category, currency))
            .or_insert_with(|| CategoryTally {
                category: Some(category),
                currency: currency.code().to_owned(),
                ..CategoryTally::default()
            });
        entry.count += 1;
        entry.ledger_amount = entry.ledger_amount.saturating_add(ledger);
        entry.provider_amount = entry.provider_amount.saturating_add(provider);
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        category: Category,
        line: Option<&StatementLine>,
        kind: &str,
        payment_id: &str,
        refund_id: Option<&str>,
        currency: Currency,
        ledger: Option<(i64, &str, Option<i64>)>,
        detail: String,
    ) {
        self.tally(
            category,
            currency,
            ledger.map_or(0, |(amount, _, _)| amount),
            line.map_or(0, |l| l.amount),
        );
        if !category.is_break() {
            return;
        }
        let provider_ms = line.and_then(|l| l.completed_at).map(unix_ms);
        let drift_secs = match (ledger.and_then(|(_, _, at)| at), provider_ms) {
            (Some(ledger_ms), Some(provider_ms)) => Some((ledger_ms - provider_ms) / 1000),
            _ => None,
        };
        self.breaks.push(Break {
            id: String::new(),
            category,
            kind: kind.to_owned(),
            payment_id: payment_id.to_owned(),
            refund_id: refund_id.map(str::to_owned),
            provider_txn_id: line.map(|l| l.provider_txn_id.clone()),
            currency: currency.code().to_owned(),
            ledger_amount: ledger.map(|(amount, _, _)| amount),
            provider_amount: line.map(|l| l.amount),
            ledger_status: ledger.map(|(_, status, _)| status.to_owned()),
            provider_status: line.map(|l| l.provider_status.clone()),
            statement_line: line.map(|l| l.line),
            drift_secs,
            detail,
            status: BreakStatus::Open,
            note: None,
        });
    }

    fn duplicate(&mut self, line: &StatementLine, ledger_amount: Option<i64>) {
        let detail = format!(
            "statement line {} repeats {} {}",
            line.line,
            kind_name(line.kind),
            line.refund_id.as_deref().unwrap_or(&line.payment_id)
        );
        let ledger = ledger_amount.map(|amount| (amount, "", None));
        self.record(
            Category::Duplicate,
            Some(line),
            kind_name(line.kind),
            &line.payment_id,
            line.refund_id.as_deref(),
            line.currency,
            ledger,
            detail,
        );
    }

    fn payment_result(&mut self, line: &StatementLine, record: &LedgerPayment, looked_up: bool) {
        let (category, detail) = if record.currency != line.currency {
            (
                Category::CurrencyMismatch,
                format!(
                    "ledger {}, statement {}",
                    record.currency.code(),
                    line.currency.code()
                ),
            )
        } else if record.amount != line.amount {
            (
                Category::AmountMismatch,
                format!(
                    "ledger {}, statement {} (difference {}) {}",
                    format_minor(record.amount, line.currency),
                    format_minor(line.amount, line.currency),
                    format_minor(line.amount - record.amount, line.currency),
                    line.currency.code()
                ),
            )
        } else if !line.settled {
            (
                Category::StatusMismatch,
                format!(
                    "the provider reports {} for a payment the ledger holds as {}",
                    line.provider_status,
                    record.status.as_str()
                ),
            )
        } else if record.status != PaymentStatus::Succeeded {
            (
                Category::StatusMismatch,
                format!(
                    "the provider collected it; the ledger holds it as {} (a lost notification?)",
                    record.status.as_str()
                ),
            )
        } else if record
            .provider_ref
            .as_deref()
            .is_some_and(|r| !line.provider_txn_id.is_empty() && r != line.provider_txn_id)
        {
            (
                Category::StatusMismatch,
                format!(
                    "provider transaction {} in the statement, {} in the ledger",
                    line.provider_txn_id,
                    record.provider_ref.as_deref().unwrap_or_default()
                ),
            )
        } else if !record.paid_at_ms.is_some_and(|ms| self.in_day(ms)) {
            let inside = !looked_up;
            (
                Category::Timing,
                if inside {
                    "recorded as paid on the neighbouring day, within the drift window".to_owned()
                } else {
                    "recorded as paid outside the drift window".to_owned()
                },
            )
        } else {
            (Category::Matched, String::new())
        };
        self.record(
            category,
            Some(line),
            "payment",
            &line.payment_id,
            None,
            line.currency,
            Some((record.amount, record.status.as_str(), record.paid_at_ms)),
            detail,
        );
    }

    fn refund_result(&mut self, line: &StatementLine, record: &LedgerRefund) {
        let (category, detail) = if *record.payment_id != *line.payment_id {
            (
                Category::StatusMismatch,
                format!(
                    "the statement refunds payment {}; the ledger refund belongs to {}",
                    line.payment_id, record.payment_id
                ),
            )
        } else if record.currency != line.currency {
            (
                Category::CurrencyMismatch,
                format!(
                    "ledger {}, statement {}",
                    record.currency.code(),
                    line.currency.code()
                ),
            )
        } else if record.amount != line.amount {
            (
                Category::AmountMismatch,
                format!(
                    "refund: ledger {}, statement {} (difference {}) {}",
                    format_minor(record.amount, line.currency),
                    format_minor(line.amount, line.currency),
                    format_minor(line.amount - record.amount, line.currency),
                    line.currency.code()
                ),
            )
        } else if !line.settled || record.status != RefundStatus::Succeeded {
            (
                Category::StatusMismatch,
                format!(
                    "refund: the provider reports {}, the ledger holds {}",
                    line.provider_status,
                    record.status.as_str()
                ),
            )
        } else if !self.in_day(record.settled_at_ms) {
            (
                Category::Timing,
                "refund recorded on another day than the provider's".to_owned(),
            )
        } else {
            (Category::Refund, String::new())
        };
        self.record(
            category,
            Some(line),
            "refund",
            &line.payment_id,
            line.refund_id.as_deref(),
            line.currency,
            Some((
                record.amount,
                record.status.as_str(),
                Some(record.settled_at_ms),
            )),
            detail,
        );
    }

    /// Classifies the deferred lines with the ledger records found for them (anywhere in the
    /// ledger, for this account), then every unseen ledger record of the day.
    pub fn finish(
        mut self,
        found_payments: Vec<LedgerPayment>,
        found_refunds: Vec<LedgerRefund>,
    ) -> Outcome {
        let payments: HashMap<Box<str>, LedgerPayment> = found_payments
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect();
        let refunds: HashMap<Box<str>, LedgerRefund> = found_refunds
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        for line in std::mem::take(&mut self.deferred) {
            match line.kind {
                LineKind::Payment => match payments.get(line.payment_id.as_str()) {
                    Some(record) => self.payment_result(&line, record, true),
                    None => self.record(
                        Category::MissingInLedger,
                        Some(&line),
                        "payment",
                        &line.payment_id,
                        None,
                        line.currency,
                        None,
                        format!(
                            "the provider collected {} {} for an order the ledger does not have",
                            format_minor(line.amount, line.currency),
                            line.currency.code()
                        ),
                    ),
                },
                LineKind::Refund => {
                    let found = line
                        .refund_id
                        .as_deref()
                        .and_then(|id| refunds.get(id))
                        .cloned();
                    match found {
                        Some(record) => self.refund_result(&line, &record),
                        None => self.record(
                            Category::MissingInLedger,
                            Some(&line),
                            "refund",
                            &line.payment_id,
                            line.refund_id.as_deref(),
                            line.currency,
                            None,
                            format!(
                                "the provider refunded {} {} that the ledger does not have",
                                format_minor(line.amount, line.currency),
                                line.currency.code()
                            ),
                        ),
                    }
                }
            }
        }
        let unseen_payments: Vec<LedgerPayment> = self
            .payments
            .unseen()
            .filter(|(_, p)| p.status == PaymentStatus::Succeeded)
            .filter(|(_, p)| p.paid_at_ms.is_some_and(|ms| self.in_day(ms)))
            .map(|(id, p)| LedgerPayment {
                id: id.into(),
                ..p.clone()
            })
            .collect();
        for payment in unseen_payments {
            self.record(
                Category::MissingInProvider,
                None,
                "payment",
                &payment.id,
                None,
                payment.currency,
                Some((payment.amount, payment.status.as_str(), payment.paid_at_ms)),
                "the ledger holds it as paid on this day; the statement does not list it"
                    .to_owned(),
            );
        }
        let unseen_refunds: Vec<LedgerRefund> = self
            .refunds
            .unseen()
            .filter(|(_, r)| r.status == RefundStatus::Succeeded && self.in_day(r.settled_at_ms))
            .map(|(id, r)| LedgerRefund {
                id: id.into(),
                ..r.clone()
            })
            .collect();
        for refund in unseen_refunds {
            self.record(
                Category::MissingInProvider,
                None,
                "refund",
                &refund.payment_id,
                Some(&refund.id),
                refund.currency,
                Some((
                    refund.amount,
                    refund.status.as_str(),
                    Some(refund.settled_at_ms),
                )),
                "the ledger holds it as refunded on this day; the statement does not list it"
                    .to_owned(),
            );
        }
        let mut breaks = std::mem::take(&mut self.breaks);
        breaks.sort_by(|a, b| {
            (a.category, &a.payment_id, &a.refund_id, a.statement_line).cmp(&(
                b.category,
                &b.payment_id,
                &b.refund_id,
                b.statement_line,
            ))
        });
        Outcome {
            tallies: self.tallies.into_values().collect(),
            breaks,
            ledger: self.ledger,
            fees: self.fees,
        }
    }
}
