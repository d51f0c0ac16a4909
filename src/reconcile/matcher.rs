//! The pure matcher: one statement day of one account.
//!
//! The ledger side is loaded up front (succeeded payments and refunds recorded within the
//! statement day ± the drift window), keyed by Moongate's ids, which are the providers'
//! `out_trade_no` / refund request numbers. Statement lines then stream through [`Matcher::line`]
//! one at a time and only results that are not plain matches are kept. Lines whose id is not in
//! the window are deferred; the caller looks those ids up in the whole ledger and hands them to
//! [`Matcher::finish`], which also turns unseen ledger records of the day into
//! `missing_in_provider`. Amounts are integer minor units throughout.

use std::collections::BTreeMap;

/// The matcher's id maps: foldhash, seeded at random per process, so a bill crafted to collide
/// keys cannot be prepared in advance, and several times faster than SipHash on short ids.
type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use moongate_contract::{Currency, LineKind, StatementDay, StatementError, StatementLine};
use serde::{Deserialize, Serialize};
use time::{Date, OffsetDateTime};

use super::report::{format_milli, format_minor};
use super::{Break, BreakStatus, Category, LedgerPayment, LedgerRefund};
use crate::ledger::{PaymentStatus, RefundStatus};

/// What is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchSettings {
    /// The statement day.
    pub day: Date,
    /// How the provider cuts days (declared by its adapter crate).
    pub day_rule: StatementDay,
    /// Drift window either side of the day, seconds.
    pub drift_secs: i64,
    /// The account's agreed fee rate (parts per million), when configured.
    pub fee_rate_ppm: Option<i64>,
    /// Most statement lines held while the statement streams (breaks found and lines waiting
    /// for a ledger lookup); past it the statement is refused (see [`MAX_HELD_LINES`]).
    pub max_held: usize,
}

/// Statement lines the matcher holds at most. Matched lines cost nothing; a line that is a
/// break, or whose id is not in the day's ledger window, is kept (a few hundred bytes each)
/// until the run ends. A statement with more such lines than this is not this account's bill
/// (or one forged to exhaust memory), or the ledger is missing most of a day: either way a
/// person must look, and the run is refused rather than holding an unbounded list.
pub const MAX_HELD_LINES: usize = 250_000;

impl MatchSettings {
    /// `[start, end)` of the day in ms since the epoch.
    pub fn day_bounds_ms(&self) -> (i64, i64) {
        let (start, end) = self.day_rule.window(self.day);
        (unix_ms(start), unix_ms(end))
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
    /// Net of the ledger amounts, minor units (refunds count negative).
    pub ledger_amount: i64,
    /// Net of the statement amounts, minor units (refunds count negative).
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
        let mut index = HashMap::with_capacity_and_hasher(records.len(), Default::default());
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

/// The statement day as `[start, end)` in ms since the epoch.
#[derive(Clone, Copy, Debug)]
struct Day {
    start_ms: i64,
    end_ms: i64,
}

impl Day {
    fn contains(self, ms: i64) -> bool {
        ms >= self.start_ms && ms < self.end_ms
    }
}

/// What the matcher has found so far. Kept apart from the ledger index so a record can be
/// classified while borrowed from the index (no copy per statement line).
#[derive(Default)]
struct Results {
    tallies: BTreeMap<(Category, Currency), CategoryTally>,
    breaks: Vec<Break>,
    fees: FeeTally,
}

/// Streams one statement against the ledger.
pub struct Matcher {
    settings: MatchSettings,
    day: Day,
    payments: Indexed<LedgerPayment>,
    refunds: Indexed<LedgerRefund>,
    deferred: Vec<StatementLine>,
    deferred_payments: HashMap<Box<str>, u32>,
    deferred_refunds: HashMap<Box<str>, u32>,
    results: Results,
    ledger: LedgerTotals,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("day", &self.settings.day)
            .field("payments", &self.payments.len())
            .field("refunds", &self.refunds.len())
            .field("breaks", &self.results.breaks.len())
            .finish_non_exhaustive()
    }
}

fn kind_name(kind: LineKind) -> &'static str {
    match kind {
        LineKind::Payment => "payment",
        LineKind::Refund => "refund",
    }
}

/// The refund a result is about: only refund lines have one.
fn refund_of(line: &StatementLine) -> Option<&str> {
    match line.kind {
        LineKind::Payment => None,
        LineKind::Refund => line.refund_id.as_deref(),
    }
}

/// "ledger 20.00, statement 20.01 (difference 0.01) CNY".
fn amount_difference(prefix: &str, ledger: i64, line: &StatementLine) -> String {
    format!(
        "{prefix}ledger {}, statement {} (difference {}) {}",
        format_minor(ledger, line.currency),
        format_minor(line.amount, line.currency),
        format_minor(line.amount - ledger, line.currency),
        line.currency.code()
    )
}

fn currency_difference(ledger: Currency, line: &StatementLine) -> String {
    format!(
        "ledger {}, statement {}",
        ledger.code(),
        line.currency.code()
    )
}

/// The category of a statement payment line against its ledger payment.
fn payment_verdict(
    day: Day,
    line: &StatementLine,
    record: &LedgerPayment,
    looked_up: bool,
) -> (Category, String) {
    if record.currency != line.currency {
        (
            Category::CurrencyMismatch,
            currency_difference(record.currency, line),
        )
    } else if record.amount != line.amount {
        (
            Category::AmountMismatch,
            amount_difference("", record.amount, line),
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
    } else if !record.paid_at_ms.is_some_and(|ms| day.contains(ms)) {
        (
            Category::Timing,
            if looked_up {
                "recorded as paid outside the drift window".to_owned()
            } else {
                "recorded as paid on the neighbouring day, within the drift window".to_owned()
            },
        )
    } else {
        (Category::Matched, String::new())
    }
}

/// The category of a statement refund line against its ledger refund.
fn refund_verdict(day: Day, line: &StatementLine, record: &LedgerRefund) -> (Category, String) {
    if *record.payment_id != *line.payment_id {
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
            currency_difference(record.currency, line),
        )
    } else if record.amount != line.amount {
        (
            Category::AmountMismatch,
            amount_difference("refund: ", record.amount, line),
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
    } else if !day.contains(record.settled_at_ms) {
        (
            Category::Timing,
            "refund recorded on another day than the provider's".to_owned(),
        )
    } else {
        (Category::Refund, String::new())
    }
}

impl Results {
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
        // A category's totals are net: money in for payments, out (negative) for refunds, so
        // a category holding both adds up to what it does to the day.
        let sign = if kind == "refund" { -1 } else { 1 };
        self.tally(
            category,
            currency,
            sign * ledger.map_or(0, |(amount, _, _)| amount),
            sign * line.map_or(0, |l| l.amount),
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

    /// A line recorded against a ledger record's side of the story.
    fn line_result(
        &mut self,
        (category, detail): (Category, String),
        line: &StatementLine,
        ledger: (i64, &str, Option<i64>),
    ) {
        self.record(
            category,
            Some(line),
            kind_name(line.kind),
            &line.payment_id,
            refund_of(line),
            line.currency,
            Some(ledger),
            detail,
        );
    }

    fn payment_result(
        &mut self,
        day: Day,
        line: &StatementLine,
        record: &LedgerPayment,
        looked_up: bool,
    ) {
        let verdict = payment_verdict(day, line, record, looked_up);
        self.line_result(
            verdict,
            line,
            (record.amount, record.status.as_str(), record.paid_at_ms),
        );
    }

    fn refund_result(&mut self, day: Day, line: &StatementLine, record: &LedgerRefund) {
        let verdict = refund_verdict(day, line, record);
        self.line_result(
            verdict,
            line,
            (
                record.amount,
                record.status.as_str(),
                Some(record.settled_at_ms),
            ),
        );
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

    fn missing_in_ledger(&mut self, line: &StatementLine) {
        let verb = match line.kind {
            LineKind::Payment => "collected",
            LineKind::Refund => "refunded",
        };
        let what = match line.kind {
            LineKind::Payment => "for an order the ledger does not have",
            LineKind::Refund => "that the ledger does not have",
        };
        let detail = format!(
            "the provider {verb} {} {} {what}",
            format_minor(line.amount, line.currency),
            line.currency.code()
        );
        self.record(
            Category::MissingInLedger,
            Some(line),
            kind_name(line.kind),
            &line.payment_id,
            refund_of(line),
            line.currency,
            None,
            detail,
        );
    }

    /// Fee lines: summed, and checked against the agreed rate when there is one. Expected fee:
    /// amount × rate, in thousandths of a minor unit (given back on refunds); one minor unit of
    /// tolerance covers the providers' rounding to the fen.
    fn fee(&mut self, line: &StatementLine, rate_ppm: Option<i64>) {
        if line.fee_milli != 0 {
            self.fees.lines += 1;
            self.fees.total_milli = self.fees.total_milli.saturating_add(line.fee_milli);
        }
        let Some(ppm) = rate_ppm else {
            return;
        };
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
}

impl Matcher {
    /// A matcher over the ledger window (see [`MatchSettings::window`]).
    pub fn new(
        settings: MatchSettings,
        payments: Vec<LedgerPayment>,
        refunds: Vec<LedgerRefund>,
    ) -> Matcher {
        let (start_ms, end_ms) = settings.day_bounds_ms();
        let day = Day { start_ms, end_ms };
        let mut ledger = LedgerTotals::default();
        for payment in &payments {
            if payment.status == PaymentStatus::Succeeded
                && payment.paid_at_ms.is_some_and(|ms| day.contains(ms))
            {
                ledger.payments += 1;
                ledger.payment_total = ledger.payment_total.saturating_add(payment.amount);
            }
        }
        for refund in &refunds {
            if refund.status == RefundStatus::Succeeded && day.contains(refund.settled_at_ms) {
                ledger.refunds += 1;
                ledger.refund_total = ledger.refund_total.saturating_add(refund.amount);
            }
        }
        Matcher {
            settings,
            day,
            payments: Indexed::new(payments, |p: &mut LedgerPayment| std::mem::take(&mut p.id)),
            refunds: Indexed::new(refunds, |r: &mut LedgerRefund| std::mem::take(&mut r.id)),
            deferred: Vec::new(),
            deferred_payments: HashMap::default(),
            deferred_refunds: HashMap::default(),
            results: Results::default(),
            ledger,
        }
    }

    /// Takes one statement line; refuses the statement once more than
    /// [`MatchSettings::max_held`] lines are held.
    pub fn line(&mut self, line: StatementLine) -> Result<(), StatementError> {
        let number = line.line;
        self.classify(line);
        if self.deferred.len() + self.results.breaks.len() > self.settings.max_held {
            return Err(StatementError::at(
                number,
                format!(
                    "more than {} lines do not match the ledger: not this account's bill, or a ledger missing much of the day; nothing stored",
                    self.settings.max_held
                ),
            ));
        }
        Ok(())
    }

    fn classify(&mut self, line: StatementLine) {
        self.results.fee(&line, self.settings.fee_rate_ppm);
        let day = self.day;
        match line.kind {
            LineKind::Payment => match self.payments.take(&line.payment_id) {
                Ok(record) => self.results.payment_result(day, &line, record, false),
                Err(Some(seen)) => self.results.duplicate(&line, Some(seen.amount)),
                Err(None) => self.defer(line),
            },
            LineKind::Refund => {
                match self
                    .refunds
                    .take(line.refund_id.as_deref().unwrap_or_default())
                {
                    Ok(record) => self.results.refund_result(day, &line, record),
                    Err(Some(seen)) => self.results.duplicate(&line, Some(seen.amount)),
                    Err(None) => self.defer(line),
                }
            }
        }
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
            self.results.duplicate(&line, None);
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
        let day = self.day;
        let results = &mut self.results;
        for line in std::mem::take(&mut self.deferred) {
            match line.kind {
                LineKind::Payment => match payments.get(line.payment_id.as_str()) {
                    Some(record) => results.payment_result(day, &line, record, true),
                    None => results.missing_in_ledger(&line),
                },
                LineKind::Refund => {
                    match line.refund_id.as_deref().and_then(|id| refunds.get(id)) {
                        Some(record) => results.refund_result(day, &line, record),
                        None => results.missing_in_ledger(&line),
                    }
                }
            }
        }
        for (id, payment) in self.payments.unseen() {
            if payment.status == PaymentStatus::Succeeded
                && payment.paid_at_ms.is_some_and(|ms| day.contains(ms))
            {
                results.record(
                    Category::MissingInProvider,
                    None,
                    "payment",
                    id,
                    None,
                    payment.currency,
                    Some((payment.amount, payment.status.as_str(), payment.paid_at_ms)),
                    "the ledger holds it as paid on this day; the statement does not list it"
                        .to_owned(),
                );
            }
        }
        for (id, refund) in self.refunds.unseen() {
            if refund.status == RefundStatus::Succeeded && day.contains(refund.settled_at_ms) {
                results.record(
                    Category::MissingInProvider,
                    None,
                    "refund",
                    &refund.payment_id,
                    Some(id),
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
        }
        // A million ledger records are freed on a thread of their own: the answer does not
        // wait for it (and a command exiting right after never does).
        let index = (self.payments, self.refunds);
        let _ = std::thread::Builder::new()
            .name("moongate-recon-free".to_owned())
            .spawn(move || drop(index));
        let Results {
            tallies,
            mut breaks,
            fees,
        } = self.results;
        breaks.sort_by(|a, b| {
            (a.category, &a.payment_id, &a.refund_id, a.statement_line).cmp(&(
                b.category,
                &b.payment_id,
                &b.refund_id,
                b.statement_line,
            ))
        });
        Outcome {
            tallies: tallies.into_values().collect(),
            breaks,
            ledger: self.ledger,
            fees,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn line(number: u64, payment_id: &str, amount: i64, at_ms: i64) -> StatementLine {
        StatementLine {
            line: number,
            kind: LineKind::Payment,
            settled: true,
            provider_txn_id: format!("txn{number}"),
            payment_id: payment_id.to_owned(),
            refund_id: None,
            provider_refund_id: None,
            amount,
            currency: Currency::CNY,
            fee_milli: 0,
            completed_at: Some(from_ms(at_ms)),
            provider_status: "SUCCESS".to_owned(),
            trade_type: "NATIVE".to_owned(),
        }
    }

    #[test]
    fn the_lines_held_are_bounded() {
        let settings = MatchSettings {
            day: time::macros::date!(2026 - 11 - 21),
            day_rule: StatementDay::BeijingCalendar,
            drift_secs: 0,
            fee_rate_ppm: None,
            max_held: 3,
        };
        let noon = settings.day_bounds_ms().0 + 4 * 3_600_000;
        let payments = vec![LedgerPayment {
            id: "pay_known".into(),
            provider_ref: None,
            amount: 100,
            currency: Currency::CNY,
            status: PaymentStatus::Succeeded,
            paid_at_ms: Some(noon),
        }];
        let mut matcher = Matcher::new(settings, payments, Vec::new());
        // Matched lines are not held; unknown ids and breaks are, up to the bound.
        matcher.line(line(1, "pay_known", 100, noon)).unwrap();
        for n in 2..5 {
            let id = format!("pay_unknown{n}");
            matcher.line(line(n, &id, 1, noon)).unwrap();
        }
        // A repeat of the matched line is a break (a duplicate), and one too many.
        let error = matcher.line(line(5, "pay_known", 100, noon)).unwrap_err();
        assert_eq!(error.line, 5);
        assert!(error.message.contains("more than 3 lines"), "{error}");
    }

    #[test]
    fn a_category_with_payments_and_refunds_totals_their_net() {
        let settings = MatchSettings {
            day: time::macros::date!(2026 - 11 - 21),
            day_rule: StatementDay::BeijingCalendar,
            drift_secs: 0,
            fee_rate_ppm: None,
            max_held: 100,
        };
        let noon = settings.day_bounds_ms().0 + 4 * 3_600_000;
        // The ledger's paid payment and its refund, neither on the statement.
        let payments = vec![LedgerPayment {
            id: "pay_1".into(),
            provider_ref: None,
            amount: 1_000,
            currency: Currency::CNY,
            status: PaymentStatus::Succeeded,
            paid_at_ms: Some(noon),
        }];
        let refunds = vec![LedgerRefund {
            id: "re_1".into(),
            payment_id: "pay_1".into(),
            amount: 300,
            currency: Currency::CNY,
            status: RefundStatus::Succeeded,
            settled_at_ms: noon + 60_000,
        }];
        let outcome = Matcher::new(settings, payments, refunds).finish(Vec::new(), Vec::new());
        let missing = outcome
            .tallies
            .iter()
            .find(|t| t.category == Some(Category::MissingInProvider))
            .unwrap();
        assert_eq!(missing.count, 2);
        assert_eq!(missing.ledger_amount, 700, "1,000 in, 300 out");
        assert_eq!(missing.provider_amount, 0);
    }
}
