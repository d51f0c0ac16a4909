//! The WeChat Pay trade bill (对账单, china-wallets.md B.7), parsed by header names.
//!
//! Format: UTF-8 with a BOM, CRLF lines; a header line; one line per record with every cell
//! prefixed by a backtick (cells are separated by ``,` ``); then a summary header and one
//! summary line. Amounts are yuan (two decimals; the fee has five) and become integers here:
//! fen, and 1/100,000 yuan for fees. Older bills name columns differently (`总金额`), so
//! columns are found by name. The summary is checked against the records: a file that does
//! not add up is refused whole.

use moongate_contract::{Currency, Money};

/// One record of the bill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillRow {
    /// `交易时间`, Beijing time as written (`yyyy-MM-dd HH:mm:ss`).
    pub trade_time: String,
    /// `商户号`.
    pub mchid: String,
    /// `微信订单号`.
    pub transaction_id: String,
    /// `商户订单号` (Moongate's payment id).
    pub out_trade_no: String,
    /// `交易类型`: `NATIVE`, `JSAPI`, `MWEB`, `MICROPAY`, …
    pub trade_type: String,
    /// `交易状态`: `SUCCESS` for a payment line, `REFUND` for a refund line, …
    pub trade_state: String,
    /// `货币种类`.
    pub currency: Currency,
    /// `应结订单金额` (or the older `总金额`), fen.
    pub settlement_total: i64,
    /// `退款金额`, fen (0 when none).
    pub refund: i64,
    /// `商户退款单号` (Moongate's refund id), when a refund line.
    pub out_refund_no: Option<String>,
    /// `退款状态`, when a refund line.
    pub refund_state: Option<String>,
    /// `手续费`, in 1/100,000 yuan.
    pub fee_e5: i64,
}

/// The summary line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillSummary {
    /// `总交易单数`.
    pub records: u64,
    /// `应结订单总金额` (or `总交易额`), fen.
    pub settlement_total: i64,
    /// `退款总金额` (or `总退款金额`), fen.
    pub refund_total: i64,
    /// `手续费总金额`, in 1/100,000 yuan.
    pub fee_total_e5: i64,
}

/// A parsed bill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TradeBill {
    /// The records, in file order.
    pub rows: Vec<BillRow>,
    /// The summary, checked against the rows.
    pub summary: BillSummary,
}

/// Why a bill was refused: the line (1-based) and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("trade bill line {line}: {message}")]
pub struct BillError {
    /// 1-based line number (0 for the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

fn error(line: usize, message: impl Into<String>) -> BillError {
    BillError {
        line,
        message: message.into(),
    }
}

/// The cells of a backtick-prefixed line.
fn cells(line: &str) -> Option<Vec<&str>> {
    Some(line.strip_prefix('`')?.split(",`").collect())
}

/// `0.03` → 3 (fen): exactly two decimals expected, fewer accepted.
fn fen(text: &str) -> Option<i64> {
    Money::parse_decimal(text, Currency::CNY)
        .ok()
        .map(|m| m.minor)
}

/// `0.01000` → 1000 (1/100,000 yuan); up to five decimals.
fn e5(text: &str) -> Option<i64> {
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if whole.is_empty()
        || fraction.len() > 5
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let whole: i64 = whole.parse().ok()?;
    let padded = format!("{fraction:0<5}");
    let fraction: i64 = padded.parse().ok()?;
    whole.checked_mul(100_000)?.checked_add(fraction)
}

struct Columns<'h> {
    names: Vec<&'h str>,
}

impl<'h> Columns<'h> {
    fn find(&self, names: &[&str]) -> Option<usize> {
        self.names.iter().position(|n| names.contains(n))
    }

    fn require(&self, names: &[&str], line: usize) -> Result<usize, BillError> {
        self.find(names)
            .ok_or_else(|| error(line, format!("column {} missing", names.join(" / "))))
    }
}

/// Parses a whole bill (the uncompressed file; check its SHA-1 first).
pub fn parse_trade_bill(bytes: &[u8]) -> Result<TradeBill, BillError> {
    let text = std::str::from_utf8(bytes).map_err(|_| error(0, "not UTF-8"))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect();
    let header = lines.first().ok_or_else(|| error(1, "empty file"))?;
    let columns = Columns {
        names: header.split(',').collect(),
    };
    let at = |names: &[&str]| columns.require(names, 1);
    let time = at(&["交易时间"])?;
    let mchid = at(&["商户号"])?;
    let transaction = at(&["微信订单号"])?;
    let order = at(&["商户订单号"])?;
    let kind = at(&["交易类型"])?;
    let state = at(&["交易状态"])?;
    let currency = at(&["货币种类"])?;
    let total = at(&["应结订单金额", "总金额"])?;
    let fee = at(&["手续费"])?;
    let refund = columns.find(&["退款金额"]);
    let refund_no = columns.find(&["商户退款单号"]);
    let refund_state = columns.find(&["退款状态"]);
    let summary_at = lines
        .iter()
        .position(|l| !l.starts_with('`') && l.contains("总交易单数"))
        .ok_or_else(|| error(0, "summary header missing"))?;
    let mut rows = Vec::new();
    for (index, line) in lines.iter().enumerate().take(summary_at).skip(1) {
        let number = index + 1;
        let cells = cells(line).ok_or_else(|| error(number, "cells must start with '`'"))?;
        if cells.len() < columns.names.len() {
            return Err(error(number, "fewer cells than the header has columns"));
        }
        let cell = |i: usize| cells.get(i).copied().unwrap_or_default();
        let optional = |i: Option<usize>| {
            i.map(cell)
                .filter(|v| !v.is_empty() && *v != "0")
                .map(str::to_owned)
        };
        let money = |i: usize, what: &str| {
            fen(cell(i)).ok_or_else(|| error(number, format!("{what} is not an amount")))
        };
        rows.push(BillRow {
            trade_time: cell(time).to_owned(),
            mchid: cell(mchid).to_owned(),
            transaction_id: cell(transaction).to_owned(),
            out_trade_no: cell(order).to_owned(),
            trade_type: cell(kind).to_owned(),
            trade_state: cell(state).to_owned(),
            currency: Currency::parse(cell(currency))
                .map_err(|_| error(number, "unknown currency"))?,
            settlement_total: money(total, "the settlement total")?,
            refund: match refund {
                Some(i) => money(i, "the refund")?,
                None => 0,
            },
            out_refund_no: optional(refund_no),
            refund_state: optional(refund_state),
            fee_e5: e5(cell(fee)).ok_or_else(|| error(number, "the fee is not an amount"))?,
        });
    }
    let summary_header: Vec<&str> = lines
        .get(summary_at)
        .map(|l| l.split(',').collect())
        .unwrap_or_default();
    let summary_number = summary_at + 2;
    let summary_line = lines
        .get(summary_at + 1)
        .ok_or_else(|| error(summary_number, "summary line missing"))?;
    let summary_cells =
        cells(summary_line).ok_or_else(|| error(summary_number, "cells must start with '`'"))?;
    let named = |names: &[&str]| {
        summary_header
            .iter()
            .position(|n| names.contains(n))
            .and_then(|i| summary_cells.get(i).copied())
            .ok_or_else(|| error(summary_number, format!("{} missing", names.join(" / "))))
    };
    let summary = BillSummary {
        records: named(&["总交易单数"])?
            .parse()
            .map_err(|_| error(summary_number, "the record count is not a number"))?,
        settlement_total: fen(named(&["应结订单总金额", "总交易额"])?)
            .ok_or_else(|| error(summary_number, "the settlement total is not an amount"))?,
        refund_total: fen(named(&["退款总金额", "总退款金额"])?)
            .ok_or_else(|| error(summary_number, "the refund total is not an amount"))?,
        fee_total_e5: e5(named(&["手续费总金额"])?)
            .ok_or_else(|| error(summary_number, "the fee total is not an amount"))?,
    };
    let sum = |f: fn(&BillRow) -> i64| rows.iter().map(f).try_fold(0_i64, i64::checked_add);
    let adds_up = u64::try_from(rows.len()).ok() == Some(summary.records)
        && sum(|r| r.settlement_total) == Some(summary.settlement_total)
        && sum(|r| r.refund) == Some(summary.refund_total)
        && sum(|r| r.fee_e5) == Some(summary.fee_total_e5);
    if !adds_up {
        return Err(error(
            summary_number,
            "the summary does not match the records (truncated or altered file)",
        ));
    }
    Ok(TradeBill { rows, summary })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_become_integers() {
        assert_eq!(fen("0.03"), Some(3));
        assert_eq!(fen("12"), Some(1200));
        assert_eq!(fen("x"), None);
        assert_eq!(e5("0.01000"), Some(1000));
        assert_eq!(e5("1.5"), Some(150_000));
        assert_eq!(e5("0.000001"), None);
        assert_eq!(e5("-1"), None);
    }
}
