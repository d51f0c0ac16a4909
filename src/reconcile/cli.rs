//! `moongate reconcile`, `moongate breaks` and `moongate repair`: the finance team's commands.
//! They open the ledger and the config like `serve` does (SQLite and PostgreSQL both allow them
//! beside a running gateway) and call the same code as the API.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

use super::report::{self, Report};
use super::run::{self, Progress, RunRequest, Source};
use super::{BreakStatus, Category};
use crate::config;
use crate::gateway::Gateway;
use crate::outbound::Outbound;

/// A gateway (no listener) over a config file.
pub async fn open(config_path: &Path) -> anyhow::Result<Gateway> {
    let config = config::load_and_build(config_path)?;
    let store = crate::store::open(&config.ledger).await?;
    let providers = Outbound::new(
        Duration::from_millis(config.providers.connect_timeout_ms),
        Duration::from_millis(config.providers.call_timeout_ms),
    )
    .map_err(anyhow::Error::msg)?;
    let webhooks = Outbound::new(Duration::from_secs(3), Duration::from_secs(10))
        .map_err(anyhow::Error::msg)?;
    let cashier = config.cashier_key.load().context("cashier key")?;
    let gateway = Gateway::new(
        config,
        store,
        providers,
        webhooks,
        cashier,
        crate::clock::Clock::system(),
    );
    gateway.sync_clock().await?;
    Ok(gateway)
}

/// A progress bar on stderr (only when stderr is a terminal, or when forced).
pub fn progress_bar(force: bool) -> Option<Progress> {
    if !(force || std::io::stderr().is_terminal()) {
        return None;
    }
    Some(Arc::new(|done: u64, total: u64| {
        let width = 30_u64;
        let filled = done
            .saturating_mul(width)
            .checked_div(total)
            .unwrap_or(width)
            .min(width);
        let percent = done.saturating_mul(100).checked_div(total).unwrap_or(100);
        let bar: String = (0..width)
            .map(|i| if i < filled { '#' } else { '-' })
            .collect();
        eprint!(
            "\r  reading statement [{bar}] {percent:>3}% {}/{} MB",
            done / 1_000_000,
            total / 1_000_000
        );
        if done >= total {
            eprintln!();
        }
    }))
}

/// Writes the three report files; returns their paths.
pub fn write_reports(report: &Report, out_dir: &Path) -> anyhow::Result<[PathBuf; 3]> {
    crate::private_fs::create_dir_all(out_dir)
        .with_context(|| format!("creating {}", out_dir.display()))?;
    let stem = format!(
        "recon-{}-{}-{}",
        report.merchant_id, report.account_id, report.day
    );
    let json = out_dir.join(format!("{stem}.json"));
    let csv = out_dir.join(format!("{stem}.breaks.csv"));
    let html = out_dir.join(format!("{stem}.html"));
    crate::private_fs::write(&json, serde_json::to_vec_pretty(report)?)
        .with_context(|| format!("writing {}", json.display()))?;
    crate::private_fs::write(&csv, report::breaks_csv(report))
        .with_context(|| format!("writing {}", csv.display()))?;
    crate::private_fs::write(&html, report::html(report))
        .with_context(|| format!("writing {}", html.display()))?;
    Ok([json, csv, html])
}

/// The one-screen summary printed after a run.
pub fn summary_text(report: &Report) -> String {
    let currency = moongate_contract::Currency::parse(&report.currency)
        .unwrap_or(moongate_contract::Currency::CNY);
    let mut out = format!(
        "{}/{} ({}) statement day {} ({}): {} statement line(s), run {}\n",
        report.merchant_id,
        report.account_id,
        report.provider,
        report.day,
        report.timezone,
        report.statement_totals.lines,
        report.run_id
    );
    for tally in &report.summary {
        if tally.count == 0 {
            continue;
        }
        let name = tally.category.map(Category::as_str).unwrap_or("?");
        out.push_str(&format!(
            "  {name:<20} {:>8}  ledger {:>14}  statement {:>14} {}\n",
            tally.count,
            report::format_minor(tally.ledger_amount, currency),
            report::format_minor(tally.provider_amount, currency),
            tally.currency
        ));
    }
    out.push_str(&format!(
        "  fees: {} line(s), {} {}{}\n  net: statement {} / ledger {} / difference {} {}\n  breaks: {} ({} open)\n",
        report.fees.lines,
        report::format_milli(report.fees.total_milli, currency),
        report.currency,
        report
            .fees
            .expected_milli
            .map(|e| format!(" (the agreed rate gives {})", report::format_milli(e, currency)))
            .unwrap_or_default(),
        report::format_minor(report.control.statement_net, currency),
        report::format_minor(report.control.ledger_net, currency),
        report::format_minor(report.control.difference, currency),
        report.currency,
        report.break_count,
        report.open_breaks
    ));
    out
}

/// `moongate reconcile`.
#[allow(clippy::too_many_arguments)]
pub async fn reconcile(
    config_path: &Path,
    merchant: String,
    account: String,
    date: Option<String>,
    statement: Option<PathBuf>,
    out_dir: &Path,
    force_progress: bool,
) -> anyhow::Result<Report> {
    let gateway = open(config_path).await?;
    let day = match date {
        Some(text) => {
            run::parse_day(&text).with_context(|| format!("--date {text:?} is not yyyy-MM-dd"))?
        }
        None => run::yesterday_beijing(gateway.now()),
    };
    let request = RunRequest {
        merchant_id: merchant,
        account_id: account,
        day,
        source: statement.map_or(Source::Download, Source::File),
    };
    let report = run::reconcile(&gateway, request, progress_bar(force_progress)).await?;
    let writing = std::time::Instant::now();
    let files = write_reports(&report, out_dir)?;
    let reports_ms = writing.elapsed().as_millis();
    print!("{}", summary_text(&report));
    for file in files {
        println!("  wrote {}", file.display());
    }
    if let Some(peak) = report.resources.peak_rss_bytes {
        println!(
            "  took {} ms, peak memory {} MB",
            report.resources.elapsed_ms,
            peak / 1_048_576
        );
    }
    println!(
        "  phases: {}, reports {}.{} s",
        report.resources.phases_ms.summary(),
        reports_ms / 1000,
        (reports_ms % 1000) / 100
    );
    Ok(report)
}

/// `moongate breaks list`.
pub async fn list_breaks(
    config_path: &Path,
    merchant: Option<String>,
    status: Option<String>,
) -> anyhow::Result<()> {
    let gateway = open(config_path).await?;
    let status = status
        .map(|s| BreakStatus::parse(&s).with_context(|| format!("unknown status {s:?}")))
        .transpose()?;
    let breaks = gateway
        .store
        .breaks(merchant.as_deref(), status, 10_000)
        .await?;
    for b in &breaks {
        let r = &b.record;
        println!(
            "{}  {}/{} {}  {:<19} {:<7} {}{}  ledger {} statement {}  [{}] {}",
            r.id,
            b.merchant_id,
            b.account_id,
            b.day,
            r.category.as_str(),
            r.kind,
            r.payment_id,
            r.refund_id
                .as_deref()
                .map(|id| format!("/{id}"))
                .unwrap_or_default(),
            r.ledger_amount.map_or("-".to_owned(), |a| a.to_string()),
            r.provider_amount.map_or("-".to_owned(), |a| a.to_string()),
            r.status.as_str(),
            r.note.as_deref().unwrap_or(&r.detail)
        );
    }
    println!("{} break(s)", breaks.len());
    Ok(())
}

/// `moongate breaks resolve|ignore|reopen`.
pub async fn set_break(
    config_path: &Path,
    id: &str,
    status: BreakStatus,
    note: Option<String>,
) -> anyhow::Result<()> {
    let gateway = open(config_path).await?;
    let updated = gateway
        .store
        .set_break_status(None, id, status, note, gateway.now())
        .await?
        .with_context(|| format!("no break {id}"))?;
    println!(
        "{} is now {}{}",
        updated.record.id,
        updated.record.status.as_str(),
        updated
            .record
            .note
            .as_deref()
            .map(|n| format!(": {n}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// `moongate repair`.
pub async fn repair(config_path: &Path, break_id: &str) -> anyhow::Result<()> {
    let gateway = open(config_path).await?;
    let (payment, resolved) = super::repair::repair_break(&gateway, None, break_id).await?;
    println!(
        "inserted payment {} ({} {}, provider transaction {}); {} is now {}",
        payment.id,
        report::format_minor(payment.amount, payment.currency),
        payment.currency.code(),
        payment.provider_ref.as_deref().unwrap_or("-"),
        resolved.record.id,
        resolved.record.status.as_str()
    );
    println!("a payment.succeeded event is queued for the merchant's webhook");
    Ok(())
}
