//! A run's report: JSON (the source of truth), a CSV of breaks, and a self-contained HTML page
//! (inline CSS, no scripts) rendered from the same [`Report`], so the HTML always shows the
//! counts the JSON holds.

use crate::html::escape as esc;
use std::fmt::Write as _;

use moongate_contract::{Currency, Money};
use serde::{Deserialize, Serialize};

use super::matcher::{CategoryTally, FeeTally, LedgerTotals};
use super::{Break, Category, StatementRecord};

/// The statement's own totals, checked against its lines when it was read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementSide {
    /// Lines.
    pub lines: u64,
    /// Payment lines.
    pub payments: u64,
    /// Their sum, minor units.
    pub payment_total: i64,
    /// Refund lines.
    pub refunds: u64,
    /// Their sum, minor units.
    pub refund_total: i64,
}

/// Formance-style control totals: net collected by each side and the difference.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Control {
    /// Statement payments minus refunds, minor units.
    pub statement_net: i64,
    /// Ledger payments minus refunds recorded on the day, minor units.
    pub ledger_net: i64,
    /// `statement_net - ledger_net`; zero when the day balances.
    pub difference: i64,
}

/// How long the run took and how much memory the process used at its peak (when measured).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Wall time of the run, milliseconds.
    pub elapsed_ms: u64,
    /// Peak resident memory of the process, bytes (Linux `VmHWM`), when known.
    pub peak_rss_bytes: Option<u64>,
    /// Where the time went, milliseconds per phase (runs stored before phases were timed
    /// have none).
    #[serde(default)]
    pub phases_ms: Phases,
}

/// The phases of a run, milliseconds each.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phases {
    /// Fetching or importing the statement, with its SHA-256 (and SHA-1 where stated).
    pub obtain: u64,
    /// Loading the ledger side of the day (and the drift window).
    pub ledger: u64,
    /// Reading the statement and matching it line by line.
    pub parse_and_match: u64,
    /// Looking up, in the whole ledger, the ids the day did not hold.
    pub lookup: u64,
    /// Storing the run and its breaks.
    pub store: u64,
}

impl Phases {
    /// `obtain 1.2 s, ledger 0.8 s, …` for a summary line.
    pub fn summary(&self) -> String {
        let s = |ms: u64| format!("{}.{} s", ms / 1000, (ms % 1000) / 100);
        format!(
            "obtain {}, ledger {}, parse+match {}, lookup {}, store {}",
            s(self.obtain),
            s(self.ledger),
            s(self.parse_and_match),
            s(self.lookup),
            s(self.store)
        )
    }
}

/// One reconciliation run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `rec_…`.
    pub run_id: String,
    /// Merchant.
    pub merchant_id: String,
    /// Account.
    pub account_id: String,
    /// Provider kind.
    pub provider: String,
    /// Statement day (Beijing), `yyyy-MM-dd`.
    pub day: String,
    /// Always `UTC+08:00`: the providers cut statement days in China Standard Time.
    pub timezone: String,
    /// Currency of the totals.
    pub currency: String,
    /// When the run finished (RFC 3339).
    pub generated_at: String,
    /// Drift window, seconds.
    pub drift_secs: u64,
    /// The raw statement file.
    pub statement: StatementRecord,
    /// Statement totals.
    pub statement_totals: StatementSide,
    /// Ledger totals for the day.
    pub ledger_totals: LedgerTotals,
    /// Net difference.
    pub control: Control,
    /// Count and sums per category (every category, zero rows included).
    pub summary: Vec<CategoryTally>,
    /// Fees on the statement.
    pub fees: FeeTally,
    /// Breaks found by this run.
    pub break_count: u64,
    /// Of which still open.
    pub open_breaks: u64,
    /// Run cost.
    pub resources: Resources,
    /// The breaks (absent in the stored summary; filled when served).
    #[serde(default)]
    pub breaks: Vec<Break>,
}

impl Report {
    /// The count of a category (all currencies).
    pub fn count(&self, category: Category) -> u64 {
        self.summary
            .iter()
            .filter(|t| t.category == Some(category))
            .map(|t| t.count)
            .sum()
    }

    fn currency(&self) -> Currency {
        Currency::parse(&self.currency).unwrap_or(Currency::CNY)
    }
}

/// `1234` → `12.34` in the currency's exponent (the ledger's own decimal rendering).
pub fn format_minor(amount: i64, currency: Currency) -> String {
    Money::new(amount, currency).to_decimal_string()
}

/// Fees are kept in thousandths of a minor unit: `6` → `0.00006` for CNY.
pub fn format_milli(amount_milli: i64, currency: Currency) -> String {
    let exponent = currency.exponent() + 3;
    let unit = 10_u64.pow(exponent);
    let sign = if amount_milli < 0 { "-" } else { "" };
    let abs = amount_milli.unsigned_abs();
    format!(
        "{sign}{}.{:0width$}",
        abs / unit,
        abs % unit,
        width = exponent as usize
    )
}

/// CSV columns of the break list (one row per break).
pub const CSV_HEADER: &str = "break_id,run_id,merchant_id,account_id,provider,statement_day,category,kind,payment_id,refund_id,provider_txn_id,currency,ledger_amount_minor,provider_amount_minor,ledger_status,provider_status,statement_line,drift_secs,status,detail,resolution_note";

fn csv_cell(out: &mut String, value: &str) {
    // Quote when needed, and neutralise spreadsheet formulas: a cell starting with = + - @, or
    // with a tab or carriage return (spreadsheets strip those and read the formula behind).
    let guarded =
        if value.starts_with(['=', '+', '-', '@', '\t', '\r']) && value.parse::<i64>().is_err() {
            format!("'{value}")
        } else {
            value.to_owned()
        };
    if guarded.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&guarded.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&guarded);
    }
}

/// The break list as CSV (amounts in integer minor units).
pub fn breaks_csv(report: &Report) -> String {
    let mut out = String::with_capacity(256 + report.breaks.len() * 200);
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for b in &report.breaks {
        let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
        let cells = [
            b.id.clone(),
            report.run_id.clone(),
            report.merchant_id.clone(),
            report.account_id.clone(),
            report.provider.clone(),
            report.day.clone(),
            b.category.as_str().to_owned(),
            b.kind.clone(),
            b.payment_id.clone(),
            b.refund_id.clone().unwrap_or_default(),
            b.provider_txn_id.clone().unwrap_or_default(),
            b.currency.clone(),
            opt(b.ledger_amount),
            opt(b.provider_amount),
            b.ledger_status.clone().unwrap_or_default(),
            b.provider_status.clone().unwrap_or_default(),
            b.statement_line.map(|l| l.to_string()).unwrap_or_default(),
            opt(b.drift_secs),
            b.status.as_str().to_owned(),
            b.detail.clone(),
            b.note.clone().unwrap_or_default(),
        ];
        for (index, cell) in cells.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            csv_cell(&mut out, cell);
        }
        out.push_str("\r\n");
    }
    out
}

/// Most breaks listed in the HTML page (the CSV and JSON always hold all of them).
pub const HTML_BREAK_LIMIT: usize = 2000;

/// The reports' style sheet (also the admin listener's list of runs).
pub const STYLE: &str = "
body{font:15px/1.45 -apple-system,'Segoe UI','PingFang SC','Microsoft YaHei',sans-serif;margin:0;background:#f6f5f1;color:#1d1d1b}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 10px}
.sub{color:#666;margin:0 0 18px}
.cards{display:flex;flex-wrap:wrap;gap:12px}
.card{background:#fff;border-radius:10px;padding:14px 18px;box-shadow:0 1px 2px #0001;min-width:150px}
.card b{display:block;font-size:22px} .card span{color:#666;font-size:13px}
.ok b{color:#1d7a3a} .bad b{color:#b3261e}
table{border-collapse:collapse;width:100%;background:#fff;border-radius:10px;box-shadow:0 1px 2px #0001;display:block;overflow-x:auto}
th,td{padding:7px 10px;text-align:left;border-bottom:1px solid #eee;font-size:13.5px;vertical-align:top;overflow-wrap:anywhere}
@media (max-width:640px){main{padding:12px}.card{min-width:0;flex:1 1 40%}th,td{padding:6px}}
th{background:#faf9f6;font-weight:600} td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
tr.zero td{color:#aaa}
.tag{display:inline-block;padding:1px 8px;border-radius:99px;font-size:12px;background:#eee}
.tag.matched,.tag.refund{background:#dff3e4;color:#1d7a3a}
.tag.timing{background:#fff3cd;color:#7a5b00}
.tag.missing_in_provider,.tag.missing_in_ledger,.tag.amount_mismatch,.tag.currency_mismatch,.tag.status_mismatch,.tag.duplicate,.tag.fee_mismatch{background:#fbe2e0;color:#b3261e}
code{font-size:12.5px}
footer{color:#888;font-size:12px;margin-top:24px}
";

/// The self-contained HTML report.
pub fn html(report: &Report) -> String {
    let currency = report.currency();
    let money = |amount: i64| format_minor(amount, currency);
    let mut out = String::with_capacity(16_384 + report.breaks.len().min(HTML_BREAK_LIMIT) * 400);
    let balanced = report.control.difference == 0 && report.open_breaks == 0;
    let _ = write!(
        out,
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><link rel=\"icon\" href=\"data:,\"><title>对账报告 Reconciliation {day} · {account}</title><style>{STYLE}</style></head><body><main>",
        day = esc(&report.day),
        account = esc(&report.account_id),
    );
    let _ = write!(
        out,
        "<h1>对账报告 · Reconciliation report</h1><p class=\"sub\">{merchant} / {account} ({provider}) · statement day <b>{day}</b> ({tz}) · run <code>{run}</code> · generated {at}</p>",
        merchant = esc(&report.merchant_id),
        account = esc(&report.account_id),
        provider = esc(&report.provider),
        day = esc(&report.day),
        tz = esc(&report.timezone),
        run = esc(&report.run_id),
        at = esc(&report.generated_at),
    );
    let _ = write!(
        out,
        "<div class=\"cards\"><div class=\"card {state}\"><b>{verdict}</b><span>{verdict_sub}</span></div><div class=\"card\"><b>{matched}</b><span>payments matched 已对平 · {refunds_matched} refunds</span></div><div class=\"card {break_state}\"><b id=\"breaks\">{breaks}</b><span>breaks 差错 ({open} open)</span></div><div class=\"card\"><b>{statement_net}</b><span>statement net 账单净额 {cur}</span></div><div class=\"card\"><b>{ledger_net}</b><span>ledger net 账本净额 {cur}</span></div><div class=\"card {diff_state}\"><b>{difference}</b><span>difference 差额 {cur}</span></div></div>",
        state = if balanced { "ok" } else { "bad" },
        verdict = if balanced {
            "Balanced 平"
        } else {
            "Needs attention 需处理"
        },
        verdict_sub = if balanced {
            "no open breaks, totals agree"
        } else {
            "see the breaks below"
        },
        matched = report.count(Category::Matched),
        refunds_matched = report.count(Category::Refund),
        break_state = if report.break_count == 0 { "ok" } else { "bad" },
        breaks = report.break_count,
        open = report.open_breaks,
        statement_net = money(report.control.statement_net),
        ledger_net = money(report.control.ledger_net),
        difference = money(report.control.difference),
        diff_state = if report.control.difference == 0 {
            "ok"
        } else {
            "bad"
        },
        cur = esc(&report.currency),
    );
    out.push_str("<h2>Summary by category 分类汇总</h2><table id=\"summary\"><thead><tr><th>Category</th><th>Meaning</th><th class=\"n\">Count</th><th class=\"n\">Ledger amount</th><th class=\"n\">Statement amount</th></tr></thead><tbody>");
    for tally in &report.summary {
        let Some(category) = tally.category else {
            continue;
        };
        let tally_currency = Currency::parse(&tally.currency).unwrap_or(currency);
        let _ = write!(
            out,
            "<tr class=\"{zero}\" data-category=\"{name}\"><td><span class=\"tag {name}\">{name}</span></td><td>{meaning}</td><td class=\"n count\">{count}</td><td class=\"n\">{ledger} {cur}</td><td class=\"n\">{provider} {cur}</td></tr>",
            zero = if tally.count == 0 { "zero" } else { "" },
            name = category.as_str(),
            meaning = esc(category.meaning()),
            count = tally.count,
            ledger = format_minor(tally.ledger_amount, tally_currency),
            provider = format_minor(tally.provider_amount, tally_currency),
            cur = esc(&tally.currency),
        );
    }
    let _ = write!(
        out,
        "<tr data-category=\"fees\"><td><span class=\"tag\">fees</span></td><td>fees on the statement (net of fees returned with refunds){rate}</td><td class=\"n count\">{}</td><td class=\"n\">{expected}</td><td class=\"n\">{} {}</td></tr></tbody></table>",
        report.fees.lines,
        format_milli(report.fees.total_milli, currency),
        esc(&report.currency),
        rate = report
            .fees
            .rate_ppm
            .map(|ppm| format!("; agreed rate {}.{:04} %", ppm / 10_000, ppm % 10_000))
            .unwrap_or_default(),
        expected = report
            .fees
            .expected_milli
            .map(|e| format!(
                "{} {} expected",
                format_milli(e, currency),
                esc(&report.currency)
            ))
            .unwrap_or_default(),
    );
    let s = &report.statement_totals;
    let l = &report.ledger_totals;
    let _ = write!(
        out,
        "<h2>Control totals 总额核对</h2><table id=\"control\"><thead><tr><th></th><th class=\"n\">Payments</th><th class=\"n\">Payment total</th><th class=\"n\">Refunds</th><th class=\"n\">Refund total</th><th class=\"n\">Net</th></tr></thead><tbody><tr><td>Statement 账单</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr><tr><td>Ledger 账本</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr><tr><td><b>Difference 差额</b></td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\"><b>{}</b></td></tr></tbody></table>",
        s.payments,
        money(s.payment_total),
        s.refunds,
        money(s.refund_total),
        money(report.control.statement_net),
        l.payments,
        money(l.payment_total),
        l.refunds,
        money(l.refund_total),
        money(report.control.ledger_net),
        i128::from(s.payments) - i128::from(l.payments),
        money(s.payment_total - l.payment_total),
        i128::from(s.refunds) - i128::from(l.refunds),
        money(s.refund_total - l.refund_total),
        money(report.control.difference),
    );
    let _ = write!(out, "<h2>Breaks 差错明细 ({})</h2>", report.breaks.len());
    if report.breaks.is_empty() {
        out.push_str("<p>No breaks. 无差错。</p>");
    } else {
        out.push_str("<table id=\"break-list\"><thead><tr><th>Category</th><th>Payment / refund</th><th>Provider txn</th><th class=\"n\">Ledger</th><th class=\"n\">Statement</th><th>States</th><th>Detail</th><th>Status</th></tr></thead><tbody>");
        for b in report.breaks.iter().take(HTML_BREAK_LIMIT) {
            let b_currency = Currency::parse(&b.currency).unwrap_or(currency);
            let amount =
                |v: Option<i64>| v.map(|v| format_minor(v, b_currency)).unwrap_or_default();
            let _ = write!(
                out,
                "<tr><td><span class=\"tag {cat}\">{cat}</span></td><td><code>{payment}</code>{refund}</td><td><code>{txn}</code></td><td class=\"n\">{ledger}</td><td class=\"n\">{provider}</td><td>{ls} / {ps}</td><td>{detail}{line}</td><td>{status}{note}</td></tr>",
                cat = b.category.as_str(),
                payment = esc(&b.payment_id),
                refund = b
                    .refund_id
                    .as_deref()
                    .map(|r| format!("<br><code>{}</code>", esc(r)))
                    .unwrap_or_default(),
                txn = esc(b.provider_txn_id.as_deref().unwrap_or("")),
                ledger = amount(b.ledger_amount),
                provider = amount(b.provider_amount),
                ls = esc(b.ledger_status.as_deref().unwrap_or("—")),
                ps = esc(b.provider_status.as_deref().unwrap_or("—")),
                detail = esc(&b.detail),
                line = b
                    .statement_line
                    .map(|l| format!(" <small>(line {l})</small>"))
                    .unwrap_or_default(),
                status = b.status.as_str(),
                note = b
                    .note
                    .as_deref()
                    .map(|n| format!("<br><small>{}</small>", esc(n)))
                    .unwrap_or_default(),
            );
        }
        out.push_str("</tbody></table>");
        if report.breaks.len() > HTML_BREAK_LIMIT {
            let _ = write!(
                out,
                "<p>Showing the first {HTML_BREAK_LIMIT} of {} breaks; the CSV holds all of them.</p>",
                report.breaks.len()
            );
        }
    }
    let _ = write!(
        out,
        "<footer>Statement <code>{id}</code> ({source}, {bytes} bytes, SHA-256 <code>{sha}</code>) · drift window ±{drift} s · amounts in {cur}, integer minor units in the JSON and CSV.</footer></main></body></html>",
        id = esc(&report.statement.id),
        source = esc(&report.statement.source),
        bytes = report.statement.bytes,
        sha = esc(&report.statement.sha256),
        drift = report.drift_secs,
        cur = esc(&report.currency),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_formatted_from_integers() {
        assert_eq!(format_minor(1234, Currency::CNY), "12.34");
        assert_eq!(format_minor(-5, Currency::CNY), "-0.05");
        assert_eq!(format_milli(6, Currency::CNY), "0.00006");
        assert_eq!(format_milli(-1000, Currency::CNY), "-0.01000");
    }

    #[test]
    fn csv_cells_are_quoted_and_formula_safe() {
        let mut out = String::new();
        csv_cell(&mut out, "=HYPERLINK(\"x\")");
        assert_eq!(out, "\"'=HYPERLINK(\"\"x\"\")\"");
        let mut out = String::new();
        csv_cell(&mut out, "-12");
        assert_eq!(out, "-12");
        for hidden in ["\t=1+1", "\r=cmd|' /C calc'!A0"] {
            let mut out = String::new();
            csv_cell(&mut out, hidden);
            assert!(out.trim_start_matches('"').starts_with('\''), "{out:?}");
        }
    }
}
