//! The WeChat Pay trade bill (对账单, china-wallets.md B.7), parsed by header names.
//!
//! Format: UTF-8 with a BOM, CRLF lines; a header line; one line per record with every cell
//! prefixed by a backtick (cells are separated by ``,` ``); then a summary header and one
//! summary line. Amounts are yuan (two decimals; the fee has five) and become integers here:
//! fen, and 1/100,000 yuan for fees. Older bills name columns differently (`总金额`), so
//! columns are found by name. The summary is checked against the records: a file that does
//! not add up is refused whole.

use moongate_contract::statement::parse_beijing_datetime;
use moongate_contract::{Currency, LineKind, LineReader, Money, StatementLimits, StatementLine};

/// One record of the bill.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BillRow {
    /// `交易时间`, Beijing time as written (`yyyy-MM-dd HH:mm:ss`).
    pub trade_time: String,
    /// `商户号`.
    pub mchid: String,
    /// `特约商户号` (or the older `子商户号`) as written (`0` for a direct merchant's records);
    /// `None` when the bill has no such column.
    pub sub_mchid: Option<String>,
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
    /// `订单金额` (what the order was for, before coupons), fen; the settlement total when the
    /// bill has no such column.
    pub order_total: i64,
    /// `退款金额`, fen (0 when none).
    pub refund: i64,
    /// `申请退款金额` (what was asked, before coupons), fen; `退款金额` when absent.
    pub refund_requested: i64,
    /// `微信退款单号`, when a refund line.
    pub refund_id: Option<String>,
    /// `商户退款单号` (Moongate's refund id), when a refund line.
    pub out_refund_no: Option<String>,
    /// `退款状态`, when a refund line.
    pub refund_state: Option<String>,
    /// `手续费`, in 1/100,000 yuan, signed as written.
    pub fee_e5: i64,
}

/// One record as read, borrowing its text from the line (what the statement reader turns into
/// a [`StatementLine`] without copying the cells it does not keep).
#[derive(Clone, Copy, Debug)]
pub struct RowRef<'a> {
    trade_time: &'a str,
    mchid: &'a str,
    sub_mchid: Option<&'a str>,
    transaction_id: &'a str,
    out_trade_no: &'a str,
    trade_type: &'a str,
    trade_state: &'a str,
    currency: Currency,
    settlement_total: i64,
    order_total: i64,
    refund: i64,
    refund_requested: i64,
    refund_id: Option<&'a str>,
    out_refund_no: Option<&'a str>,
    refund_state: Option<&'a str>,
    fee_e5: i64,
}

impl<'a> RowRef<'a> {
    /// `特约商户号` as written, `None` when the bill has no such column.
    pub fn sub_mchid(&self) -> Option<&'a str> {
        self.sub_mchid
    }

    /// The owned record.
    pub fn to_row(&self) -> BillRow {
        BillRow {
            trade_time: self.trade_time.to_owned(),
            mchid: self.mchid.to_owned(),
            sub_mchid: self.sub_mchid.map(str::to_owned),
            transaction_id: self.transaction_id.to_owned(),
            out_trade_no: self.out_trade_no.to_owned(),
            trade_type: self.trade_type.to_owned(),
            trade_state: self.trade_state.to_owned(),
            currency: self.currency,
            settlement_total: self.settlement_total,
            order_total: self.order_total,
            refund: self.refund,
            refund_requested: self.refund_requested,
            refund_id: self.refund_id.map(str::to_owned),
            out_refund_no: self.out_refund_no.map(str::to_owned),
            refund_state: self.refund_state.map(str::to_owned),
            fee_e5: self.fee_e5,
        }
    }
}

impl BillRow {
    /// The record borrowed again.
    pub fn as_row_ref(&self) -> RowRef<'_> {
        RowRef {
            trade_time: &self.trade_time,
            mchid: &self.mchid,
            sub_mchid: self.sub_mchid.as_deref(),
            transaction_id: &self.transaction_id,
            out_trade_no: &self.out_trade_no,
            trade_type: &self.trade_type,
            trade_state: &self.trade_state,
            currency: self.currency,
            settlement_total: self.settlement_total,
            order_total: self.order_total,
            refund: self.refund,
            refund_requested: self.refund_requested,
            refund_id: self.refund_id.as_deref(),
            out_refund_no: self.out_refund_no.as_deref(),
            refund_state: self.refund_state.as_deref(),
            fee_e5: self.fee_e5,
        }
    }
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

/// An emptied list of cells, for the next line (its allocation is kept: collecting a `Vec`'s
/// own `into_iter` reuses it).
fn recycle<'b>(mut cells: Vec<&str>) -> Vec<&'b str> {
    cells.clear();
    cells.into_iter().map(|_| "").collect()
}

/// The cells of a backtick-prefixed line (`` `a,`b,`c ``), split at each `` ,` `` as
/// `str::split` would, into `out`.
fn cells<'a>(line: &'a str, out: &mut Vec<&'a str>) -> Option<()> {
    out.clear();
    let rest = line.strip_prefix('`')?;
    let bytes = rest.as_bytes();
    let (mut start, mut from) = (0, 0);
    while let Some(found) = memchr::memchr(b'`', bytes.get(from..)?) {
        let at = from + found;
        // A backtick right after a comma ends the cell before that comma; `at > start` keeps
        // the backtick of the previous separator from counting twice.
        if at > start && bytes.get(at - 1) == Some(&b',') {
            out.push(rest.get(start..at - 1)?);
            start = at + 1;
        }
        from = at + 1;
    }
    out.push(rest.get(start..)?);
    Some(())
}

/// `0.03` → 3 (fen): exactly two decimals expected, fewer accepted.
fn fen(text: &str) -> Option<i64> {
    Money::parse_decimal(text, Currency::CNY)
        .ok()
        .map(|m| m.minor)
}

/// `0.01000` → 1000 (1/100,000 yuan); up to five decimals, a leading `-` kept.
fn e5(text: &str) -> Option<i64> {
    moongate_contract::statement::parse_scaled(text, 5)
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

/// Parses a whole bill held in memory (the uncompressed file; check its SHA-1 first).
pub fn parse_trade_bill(bytes: &[u8]) -> Result<TradeBill, BillError> {
    let mut rows = Vec::new();
    let summary = read_trade_bill(bytes, &StatementLimits::DEFAULT, |row, _| {
        rows.push(row);
        Ok(())
    })?;
    Ok(TradeBill { rows, summary })
}

/// Where the reader is in the file.
enum Part {
    Header,
    Records,
    SummaryLine,
    Done,
}

/// The record columns, found by name in the header.
struct RecordColumns {
    count: usize,
    time: usize,
    mchid: usize,
    sub_mchid: Option<usize>,
    transaction: usize,
    order: usize,
    kind: usize,
    state: usize,
    currency: usize,
    total: usize,
    fee: usize,
    refund: Option<usize>,
    refund_no: Option<usize>,
    refund_state: Option<usize>,
    order_total: Option<usize>,
    refund_requested: Option<usize>,
    refund_id: Option<usize>,
}

impl RecordColumns {
    fn from_header(header: &str) -> Result<RecordColumns, BillError> {
        let columns = Columns {
            names: header.split(',').collect(),
        };
        let at = |names: &[&str]| columns.require(names, 1);
        Ok(RecordColumns {
            count: columns.names.len(),
            time: at(&["交易时间"])?,
            mchid: at(&["商户号"])?,
            sub_mchid: columns.find(&["特约商户号", "子商户号"]),
            transaction: at(&["微信订单号"])?,
            order: at(&["商户订单号"])?,
            kind: at(&["交易类型"])?,
            state: at(&["交易状态"])?,
            currency: at(&["货币种类"])?,
            total: at(&["应结订单金额", "总金额"])?,
            fee: at(&["手续费"])?,
            refund: columns.find(&["退款金额"]),
            refund_no: columns.find(&["商户退款单号"]),
            refund_state: columns.find(&["退款状态"]),
            order_total: columns.find(&["订单金额"]),
            refund_requested: columns.find(&["申请退款金额"]),
            refund_id: columns.find(&["微信退款单号"]),
        })
    }

    fn row<'a>(
        &self,
        line: &'a str,
        number: usize,
        cells: &mut Vec<&'a str>,
    ) -> Result<RowRef<'a>, BillError> {
        self::cells(line, cells).ok_or_else(|| error(number, "cells must start with '`'"))?;
        if cells.len() < self.count {
            return Err(error(number, "fewer cells than the header has columns"));
        }
        let cell = |i: usize| cells.get(i).copied().unwrap_or_default();
        let optional = |i: Option<usize>| i.map(cell).filter(|v| !v.is_empty() && *v != "0");
        let money = |i: usize, what: &str| {
            fen(cell(i)).ok_or_else(|| error(number, format!("{what} is not an amount")))
        };
        let settlement_total = money(self.total, "the settlement total")?;
        let refund = match self.refund {
            Some(i) => money(i, "the refund")?,
            None => 0,
        };
        Ok(RowRef {
            order_total: match self.order_total {
                Some(i) => money(i, "the order total")?,
                None => settlement_total,
            },
            refund_requested: match self.refund_requested {
                Some(i) => money(i, "the requested refund")?,
                None => refund,
            },
            refund_id: optional(self.refund_id),
            trade_time: cell(self.time),
            mchid: cell(self.mchid),
            sub_mchid: self.sub_mchid.map(cell),
            transaction_id: cell(self.transaction),
            out_trade_no: cell(self.order),
            trade_type: cell(self.kind),
            trade_state: cell(self.state),
            currency: Currency::parse(cell(self.currency))
                .map_err(|_| error(number, "unknown currency"))?,
            settlement_total,
            refund,
            out_refund_no: optional(self.refund_no),
            refund_state: optional(self.refund_state),
            fee_e5: e5(cell(self.fee)).ok_or_else(|| error(number, "the fee is not an amount"))?,
        })
    }
}

fn read_summary(header: &str, line: &str, number: usize) -> Result<BillSummary, BillError> {
    let summary_header: Vec<&str> = header.split(',').collect();
    let mut summary_cells = Vec::new();
    cells(line, &mut summary_cells).ok_or_else(|| error(number, "cells must start with '`'"))?;
    let named = |names: &[&str]| {
        summary_header
            .iter()
            .position(|n| names.contains(n))
            .and_then(|i| summary_cells.get(i).copied())
            .ok_or_else(|| error(number, format!("{} missing", names.join(" / "))))
    };
    Ok(BillSummary {
        records: named(&["总交易单数"])?
            .parse()
            .map_err(|_| error(number, "the record count is not a number"))?,
        settlement_total: fen(named(&["应结订单总金额", "总交易额"])?)
            .ok_or_else(|| error(number, "the settlement total is not an amount"))?,
        refund_total: fen(named(&["退款总金额", "总退款金额"])?)
            .ok_or_else(|| error(number, "the refund total is not an amount"))?,
        fee_total_e5: e5(named(&["手续费总金额"])?)
            .ok_or_else(|| error(number, "the fee total is not an amount"))?,
    })
}

/// Streams a bill: each record goes to `sink` with its 1-based line number as it is read;
/// the summary is checked against the records at the end. On error the caller must drop what
/// the sink collected.
pub fn read_trade_bill<R, F>(
    reader: R,
    limits: &StatementLimits,
    mut sink: F,
) -> Result<BillSummary, BillError>
where
    R: std::io::BufRead,
    F: FnMut(BillRow, usize) -> Result<(), BillError>,
{
    read_rows(reader, limits, |row, number| sink(row.to_row(), number))
}

/// [`read_trade_bill`] with each record borrowed from its line.
pub fn read_rows<R, F>(
    reader: R,
    limits: &StatementLimits,
    mut sink: F,
) -> Result<BillSummary, BillError>
where
    R: std::io::BufRead,
    F: FnMut(RowRef<'_>, usize) -> Result<(), BillError>,
{
    // One cell list for every line: emptied and handed on between lines (see `recycle`).
    let mut spare: Vec<&str> = Vec::with_capacity(32);
    let mut lines = LineReader::new(reader, *limits);
    let mut number = 0_usize;
    let mut part = Part::Header;
    let mut columns = None;
    let mut summary_header = String::new();
    let mut summary = None;
    let (mut records, mut total, mut refunds, mut fees) = (0_u64, 0_i64, 0_i64, 0_i64);
    loop {
        let (at, bytes) = match lines.next_line() {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e) => return Err(error(e.line as usize, e.message)),
        };
        number = at as usize;
        let line = std::str::from_utf8(bytes).map_err(|_| error(number, "not UTF-8"))?;
        let line = if number == 1 {
            line.strip_prefix('\u{feff}').unwrap_or(line)
        } else {
            line
        };
        if line.is_empty() {
            continue;
        }
        match part {
            Part::Header => {
                columns = Some(RecordColumns::from_header(line)?);
                part = Part::Records;
            }
            Part::Records if !line.starts_with('`') && line.contains("总交易单数") => {
                summary_header = line.to_owned();
                part = Part::SummaryLine;
            }
            Part::Records => {
                let columns = columns
                    .as_ref()
                    .ok_or_else(|| error(number, "record before the header"))?;
                let mut cells = recycle(std::mem::take(&mut spare));
                let row = columns.row(line, number, &mut cells)?;
                records += 1;
                let add = |sum: i64, value: i64| {
                    sum.checked_add(value)
                        .ok_or_else(|| error(number, "amounts overflow"))
                };
                total = add(total, row.settlement_total)?;
                refunds = add(refunds, row.refund)?;
                fees = add(fees, row.fee_e5)?;
                sink(row, number)?;
                spare = recycle(cells);
            }
            Part::SummaryLine => {
                summary = Some(read_summary(&summary_header, line, number)?);
                part = Part::Done;
            }
            Part::Done => return Err(error(number, "content after the summary")),
        }
    }
    if columns.is_none() {
        return Err(error(1, "empty file"));
    }
    let summary = summary.ok_or_else(|| error(0, "summary missing (truncated file)"))?;
    let adds_up = summary.records == records
        && summary.settlement_total == total
        && summary.refund_total == refunds
        && summary.fee_total_e5 == fees;
    if !adds_up {
        return Err(error(
            number,
            "the summary does not match the records (truncated or altered file)",
        ));
    }
    Ok(summary)
}

/// A record in Moongate's statement vocabulary.
pub fn statement_line(row: &RowRef<'_>, number: u64) -> StatementLine {
    let refund = row.trade_state == "REFUND";
    StatementLine {
        line: number,
        kind: if refund {
            LineKind::Refund
        } else {
            LineKind::Payment
        },
        settled: refund || row.trade_state == "SUCCESS",
        completed_at: parse_beijing_datetime(row.trade_time),
        amount: if refund {
            row.refund_requested
        } else {
            row.order_total
        },
        currency: row.currency,
        fee_milli: if refund {
            -row.fee_e5.abs()
        } else {
            row.fee_e5
        },
        refund_id: refund
            .then(|| row.out_refund_no.map(str::to_owned))
            .flatten(),
        provider_refund_id: refund.then(|| row.refund_id.map(str::to_owned)).flatten(),
        provider_txn_id: row.transaction_id.to_owned(),
        payment_id: row.out_trade_no.to_owned(),
        provider_status: row.trade_state.to_owned(),
        trade_type: row.trade_type.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BILL: &str = include_str!("../../../fixtures/wechatpay/bill.ALL.csv");

    fn read_with(bytes: &[u8], limits: &StatementLimits) -> Result<usize, BillError> {
        let mut rows = 0;
        read_trade_bill(bytes, limits, |_, _| {
            rows += 1;
            Ok(())
        })?;
        Ok(rows)
    }

    #[test]
    fn hostile_bills_are_refused_within_the_limits() {
        assert!(read_with(BILL.as_bytes(), &StatementLimits::DEFAULT).is_ok());
        // An endless record: refused 64 KiB into it, not after reading it whole.
        let mut endless = BILL.lines().take(2).collect::<Vec<_>>().join("\r\n");
        endless.push_str("\r\n");
        endless.push_str(&"`9".repeat(8 << 20));
        let error = read_with(endless.as_bytes(), &StatementLimits::DEFAULT).unwrap_err();
        assert_eq!(error.line, 3);
        assert!(error.message.contains("line longer than 65536"), "{error}");
        // More lines than allowed.
        let few = StatementLimits {
            max_lines: 2,
            ..StatementLimits::DEFAULT
        };
        let error = read_with(BILL.as_bytes(), &few).unwrap_err();
        assert_eq!(error.line, 3);
        assert!(error.message.contains("more than 2 lines"), "{error}");
        // More bytes than allowed.
        let small = StatementLimits {
            max_bytes: 200,
            ..StatementLimits::DEFAULT
        };
        let error = read_with(BILL.as_bytes(), &small).unwrap_err();
        assert!(error.message.contains("more than 200 bytes"), "{error}");
    }

    #[test]
    fn cells_split_as_str_split_does() {
        let mut out = Vec::new();
        for line in [
            "`a,`b,`c",
            "`a,,`b",
            "`x,`,`y",
            "``a",
            "`",
            "`a`b,c`,`d",
            "`,`,`",
            "`42,`SUCCESS,`0.01,`",
            "`中文,`商户,`",
        ] {
            cells(line, &mut out).unwrap();
            let expected: Vec<&str> = line.strip_prefix('`').unwrap().split(",`").collect();
            assert_eq!(out, expected, "{line}");
        }
        assert!(cells("a,`b", &mut out).is_none());
    }

    #[test]
    fn amounts_become_integers() {
        assert_eq!(fen("0.03"), Some(3));
        assert_eq!(fen("12"), Some(1200));
        assert_eq!(fen("x"), None);
        assert_eq!(e5("0.01000"), Some(1000));
        assert_eq!(e5("1.5"), Some(150_000));
        assert_eq!(e5("0.000001"), None);
        assert_eq!(e5("-1"), Some(-100_000));
        assert_eq!(e5("1-"), None);
    }
}
