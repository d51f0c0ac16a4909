//! The Alipay trade bill (业务明细, china-wallets.md A.11), read as a stream.
//!
//! The download is a zip holding `{pid}0156_{yyyyMMdd}_业务明细.csv` and a `…(汇总).csv`
//! summary; both are GBK, entry names too (without the zip UTF-8 flag). The detail file is `#`
//! preamble lines (`#账号：[…]`), a `#---…业务明细列表---…` marker, a header, one line per trade
//! or refund with ID-like cells ending in a TAB, a `…业务明细列表结束…` marker, then
//! `#交易合计：N笔，商家实收共X元…` and `#退款合计：M笔，商家实收退款共-Y元…`. Columns are found
//! by name; amounts (yuan, refunds negative) become integer fen; the totals are checked against
//! the lines, so a cut or altered file is refused whole.

use std::borrow::Cow;
use std::io::{BufRead, BufReader};

use moongate_contract::statement::{parse_beijing_datetime, parse_scaled};
use moongate_contract::{
    Currency, LineKind, LineReader, StatementError, StatementLimits, StatementLine, StatementSink,
    StatementSource, StatementTotals,
};

/// Most entries a bill zip may hold (a real one has two; older ones four).
const MAX_ENTRIES: usize = 16;

const START_MARKER: &str = "业务明细列表";
const END_MARKER: &str = "业务明细列表结束";

fn err(line: u64, message: impl Into<String>) -> StatementError {
    StatementError::at(line, message)
}

/// Decodes GBK strictly (a malformed byte is an error, never a replacement character).
pub fn decode_gbk(bytes: &[u8]) -> Option<String> {
    encoding_rs::GBK
        .decode_without_bom_handling_and_without_replacement(bytes)
        .map(|text| text.into_owned())
}

/// Splits one CSV line: cells may be double-quoted (a quoted cell may hold commas); every cell
/// is trimmed of the TAB Alipay appends to ID-like values and of surrounding spaces. A line
/// without quotes (nearly all of them) is split in place, borrowing its cells.
fn split_cells(line: &str) -> Option<Vec<Cow<'_, str>>> {
    if !line.contains('"') {
        return Some(
            line.split(',')
                .map(|cell| Cow::Borrowed(cell.trim_matches(['\t', ' '])))
                .collect(),
        );
    }
    let mut cells = Vec::with_capacity(26);
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    let mut at_start = true;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted => {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    current.push('"');
                } else {
                    quoted = false;
                }
            }
            '"' if at_start => {
                quoted = true;
                at_start = false;
            }
            ',' if !quoted => {
                cells.push(Cow::Owned(current.trim_matches(['\t', ' ']).to_owned()));
                current.clear();
                at_start = true;
            }
            other => {
                current.push(other);
                at_start = false;
            }
        }
    }
    if quoted {
        return None;
    }
    cells.push(Cow::Owned(current.trim_matches(['\t', ' ']).to_owned()));
    Some(cells)
}

struct Columns {
    count: usize,
    trade_no: usize,
    out_trade_no: usize,
    kind: usize,
    finished: usize,
    order_amount: usize,
    received: usize,
    refund_no: usize,
    fee: Option<usize>,
}

impl Columns {
    fn from_header(cells: &[Cow<'_, str>], line: u64) -> Result<Columns, StatementError> {
        let find = |names: &[&str]| cells.iter().position(|c| names.contains(&&**c));
        let need = |names: &[&str]| {
            find(names).ok_or_else(|| err(line, format!("column {} missing", names.join(" / "))))
        };
        Ok(Columns {
            count: cells.len(),
            trade_no: need(&["支付宝交易号"])?,
            out_trade_no: need(&["商户订单号"])?,
            kind: need(&["业务类型"])?,
            finished: need(&["完成时间"])?,
            order_amount: need(&["订单金额（元）", "订单金额(元)"])?,
            received: need(&["商家实收（元）", "商家实收(元)"])?,
            refund_no: need(&["退款批次号/请求号"])?,
            fee: find(&["服务费（元）", "服务费(元)"]),
        })
    }
}

/// The footer totals: count and sum of `商家实收` for trades and for refunds.
#[derive(Debug, Default, PartialEq, Eq)]
struct Footer {
    trades: Option<(u64, i64)>,
    refunds: Option<(u64, i64)>,
}

/// `#交易合计：6笔，商家实收共0.06元，…` → (6, 6).
fn footer_total(text: &str, label: &str, amount_label: &str) -> Option<(u64, i64)> {
    let rest = text.strip_prefix(label)?;
    let (count, rest) = rest.split_once('笔')?;
    let count: u64 = count.trim().parse().ok()?;
    let amount = rest.split_once(amount_label)?.1;
    let amount = amount.split_once('元')?.0;
    Some((count, parse_scaled(amount, 2)?))
}

/// Finds the detail entry of the zip (not the `(汇总)` summary) and returns its index.
fn detail_entry<R: std::io::Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
) -> Result<usize, StatementError> {
    if archive.len() > MAX_ENTRIES {
        return Err(err(
            0,
            format!("the zip holds {} entries; a bill has a few", archive.len()),
        ));
    }
    let mut names = Vec::new();
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| err(0, format!("zip entry {index}: {e}")))?;
        let raw = entry.name_raw();
        let name = std::str::from_utf8(raw)
            .ok()
            .map(str::to_owned)
            .or_else(|| decode_gbk(raw))
            .unwrap_or_default();
        if name.ends_with("业务明细.csv") {
            return Ok(index);
        }
        names.push(name);
    }
    Err(err(
        0,
        format!(
            "no 业务明细.csv entry in the zip (entries: {})",
            names.join(", ")
        ),
    ))
}

/// Reads a downloaded trade bill zip. `expected_account`, when known, is the PID the
/// `#账号：[PID0156]` line must name. The detail entry is held to `limits` (its stated size
/// first, then what it really inflates to, and its compression ratio).
pub fn read_trade_bill_zip(
    source: &mut dyn StatementSource,
    expected_account: Option<&str>,
    limits: &StatementLimits,
    sink: &mut StatementSink<'_>,
) -> Result<StatementTotals, StatementError> {
    let mut archive = zip::ZipArchive::new(source).map_err(|e| {
        err(
            0,
            format!(
                "not a zip archive ({e}); Alipay download links expire after 30 s, so an expired link yields a page instead of a bill"
            ),
        )
    })?;
    let index = detail_entry(&mut archive)?;
    let entry = archive
        .by_index(index)
        .map_err(|e| err(0, format!("zip entry: {e}")))?;
    if entry.size() > limits.max_bytes {
        return Err(err(
            0,
            format!(
                "the bill states {} bytes uncompressed, more than the {} read",
                entry.size(),
                limits.max_bytes
            ),
        ));
    }
    let compressed = entry.compressed_size();
    read_trade_bill_csv(
        BufReader::with_capacity(1 << 16, limits.inflated(entry, compressed)),
        expected_account,
        limits,
        sink,
    )
}

/// Reads the GBK detail CSV itself (the zip's `业务明细.csv` entry).
pub fn read_trade_bill_csv<R: BufRead>(
    reader: R,
    expected_account: Option<&str>,
    limits: &StatementLimits,
    sink: &mut StatementSink<'_>,
) -> Result<StatementTotals, StatementError> {
    #[derive(PartialEq)]
    enum Part {
        Preamble,
        Header,
        Lines,
        Footer,
    }
    let mut part = Part::Preamble;
    let mut lines = LineReader::new(reader, *limits);
    let mut number = 0_u64;
    let mut columns: Option<Columns> = None;
    let mut footer = Footer::default();
    let mut totals = StatementTotals::default();
    let (mut trades, mut trade_received, mut refunds, mut refund_received) =
        (0_u64, 0_i64, 0_u64, 0_i64);
    while let Some((at, bytes)) = lines.next_line()? {
        number = at;
        if bytes.is_empty() {
            continue;
        }
        // Plain ASCII (most data lines' ID cells) needs no decoding work beyond a check.
        let text = match std::str::from_utf8(bytes) {
            Ok(text) if bytes.is_ascii() => Cow::Borrowed(text),
            _ => Cow::Owned(decode_gbk(bytes).ok_or_else(|| err(number, "not GBK text"))?),
        };
        if let Some(comment) = text.strip_prefix('#') {
            match part {
                Part::Preamble
                    if comment.contains(START_MARKER) && !comment.contains(END_MARKER) =>
                {
                    part = Part::Header;
                }
                Part::Preamble => {
                    if let Some(account) = comment
                        .strip_prefix("账号：[")
                        .and_then(|rest| rest.split_once(']'))
                        .map(|(account, _)| account)
                        && let Some(expected) = expected_account
                        && account != expected
                    {
                        return Err(err(
                            number,
                            format!("bill of account {account}, expected {expected}"),
                        ));
                    }
                }
                Part::Lines if comment.contains(END_MARKER) => part = Part::Footer,
                Part::Footer => {
                    if let Some(total) = footer_total(comment, "交易合计：", "商家实收共")
                    {
                        footer.trades = Some(total);
                    } else if let Some(total) =
                        footer_total(comment, "退款合计：", "商家实收退款共")
                    {
                        footer.refunds = Some(total);
                    }
                }
                Part::Header | Part::Lines => {
                    return Err(err(number, "unexpected '#' line inside the list"));
                }
            }
            continue;
        }
        let cells = split_cells(&text).ok_or_else(|| err(number, "unterminated quote"))?;
        match part {
            Part::Preamble => return Err(err(number, "data before the 业务明细列表 marker")),
            Part::Footer => return Err(err(number, "data after the 业务明细列表结束 marker")),
            Part::Header => {
                columns = Some(Columns::from_header(&cells, number)?);
                part = Part::Lines;
            }
            Part::Lines => {
                let columns = columns
                    .as_ref()
                    .ok_or_else(|| err(number, "line before the header"))?;
                if cells.len() != columns.count {
                    return Err(err(
                        number,
                        format!(
                            "{} cells, the header has {} columns",
                            cells.len(),
                            columns.count
                        ),
                    ));
                }
                let cell = |i: usize| cells.get(i).map(|c| &**c).unwrap_or_default();
                let amount = |i: usize, what: &str| {
                    parse_scaled(cell(i), 2)
                        .ok_or_else(|| err(number, format!("{what} is not an amount")))
                };
                let order_amount = amount(columns.order_amount, "订单金额")?;
                let received = amount(columns.received, "商家实收")?;
                let fee_fen = match columns.fee {
                    Some(i) if !cell(i).is_empty() => amount(i, "服务费")?,
                    _ => 0,
                };
                let add = |sum: i64, value: i64| {
                    sum.checked_add(value)
                        .ok_or_else(|| err(number, "amounts overflow"))
                };
                let kind = match cell(columns.kind) {
                    "交易" => {
                        trades += 1;
                        trade_received = add(trade_received, received)?;
                        LineKind::Payment
                    }
                    "退款" => {
                        refunds += 1;
                        refund_received = add(refund_received, received)?;
                        LineKind::Refund
                    }
                    other => {
                        return Err(err(number, format!("unknown 业务类型 {other:?}")));
                    }
                };
                let refund = kind == LineKind::Refund;
                let fee_milli = fee_fen
                    .abs()
                    .checked_mul(1000)
                    .ok_or_else(|| err(number, "amounts overflow"))?;
                let refund_id = Some(cell(columns.refund_no).to_owned()).filter(|s| !s.is_empty());
                if refund && refund_id.is_none() {
                    return Err(err(number, "refund line without 退款批次号/请求号"));
                }
                let line = StatementLine {
                    line: number,
                    kind,
                    settled: true,
                    provider_txn_id: cell(columns.trade_no).to_owned(),
                    payment_id: cell(columns.out_trade_no).to_owned(),
                    refund_id: if refund { refund_id } else { None },
                    provider_refund_id: None,
                    amount: order_amount.abs(),
                    currency: Currency::CNY,
                    fee_milli: if refund { -fee_milli } else { fee_milli },
                    completed_at: parse_beijing_datetime(cell(columns.finished)),
                    provider_status: cell(columns.kind).to_owned(),
                    trade_type: cell(columns.kind).to_owned(),
                };
                totals.add(&line);
                sink(line)?;
            }
        }
    }
    if part != Part::Footer {
        return Err(err(
            number,
            "the 业务明细列表结束 marker is missing (truncated file)",
        ));
    }
    let (Some(trade_footer), Some(refund_footer)) = (footer.trades, footer.refunds) else {
        return Err(err(number, "the 交易合计 / 退款合计 lines are missing"));
    };
    if trade_footer != (trades, trade_received) || refund_footer != (refunds, refund_received) {
        return Err(err(
            number,
            format!(
                "the totals do not match the lines (trades {trades} / {trade_received} fen, refunds {refunds} / {refund_received} fen; the footer says {} / {} and {} / {}): truncated or altered file",
                trade_footer.0, trade_footer.1, refund_footer.0, refund_footer.1
            ),
        ));
    }
    Ok(totals)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_lose_their_tabs_and_keep_quoted_commas() {
        assert_eq!(
            split_cells("2019\t,a\t,\"x, y\",,1.00").unwrap(),
            vec!["2019", "a", "x, y", "", "1.00"]
        );
        assert!(split_cells("\"open").is_none());
    }

    #[test]
    fn footer_totals() {
        assert_eq!(
            footer_total(
                "交易合计：6笔，商家实收共0.06元，商家优惠共0.00元",
                "交易合计：",
                "商家实收共"
            ),
            Some((6, 6))
        );
        assert_eq!(
            footer_total(
                "退款合计：4笔，商家实收退款共-0.04元，商家优惠退款共0.00元",
                "退款合计：",
                "商家实收退款共"
            ),
            Some((4, -4))
        );
        assert_eq!(
            footer_total("交易合计：x笔", "交易合计：", "商家实收共"),
            None
        );
    }
}
