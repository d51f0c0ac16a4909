//! The daily run: with `[reconciliation] daily_at = "10:30"`, `serve` reconciles yesterday's
//! statement (Beijing days) of every account that fetches statements, once the time of day has
//! come. A pass every few minutes runs what is due and not yet done; a bill that is not ready
//! (`STATEMENT_CREATING`) or a provider that fails is simply tried again on the next pass, so a
//! restart or a late bill never skips a day. Results go to the log and to
//! `moongate_reconciliation_runs_total` / `moongate_reconciliation_open_breaks`.

use std::sync::Arc;
use std::time::Duration;

use moongate_contract::Operation;
use time::OffsetDateTime;
use tracing::{info, warn};

use super::run::{self, RunRequest, Source};
use crate::gateway::Gateway;
use crate::metrics::{AccountLabels, OutcomeLabels};
use crate::store::DailyClaim;

/// How long an instance holds a daily run it claimed; a run that fails gives its claim back
/// at once, so only a crashed instance's day waits this long for another.
const CLAIM_LEASE: Duration = Duration::from_secs(900);

/// How often the loop looks for due runs.
const PASS_INTERVAL: Duration = Duration::from_secs(300);

/// What one pass did for one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DailyOutcome {
    /// Merchant.
    pub merchant_id: String,
    /// Account.
    pub account_id: String,
    /// The run id, or why there is none yet.
    pub result: Result<String, String>,
}

/// One pass at `now`: every account whose run for yesterday is due and missing is reconciled.
/// Returns what was attempted (nothing when `daily_at` is unset or not reached yet).
pub async fn daily_once(gateway: &Gateway, now: OffsetDateTime) -> Vec<DailyOutcome> {
    let config = gateway.config();
    let Some((hour, minute)) = config.reconciliation.daily_at else {
        return Vec::new();
    };
    let beijing = now.to_offset(moongate_contract::statement::BEIJING);
    if (beijing.hour(), beijing.minute()) < (hour, minute) {
        return Vec::new();
    }
    let day = run::yesterday_beijing(now);
    let day_text = run::format_day(day);
    let mut outcomes = Vec::new();
    for merchant in config.merchants.values() {
        for account in &merchant.accounts {
            if !account
                .adapter
                .capabilities()
                .operations
                .contains(&Operation::Statement)
            {
                continue;
            }
            match gateway
                .store
                .latest_recon_run(&merchant.id, &account.id, &day_text)
                .await
            {
                Ok(Some(_)) => continue,
                Ok(None) => {}
                Err(error) => {
                    warn!(%error, "daily reconciliation: cannot read the ledger");
                    return outcomes;
                }
            }
            // Several instances share the ledger: only the one holding the claim runs it.
            let claim = DailyClaim {
                merchant_id: merchant.id.clone(),
                account_id: account.id.clone(),
                day: day_text.clone(),
                holder: gateway.instance_id.clone(),
            };
            match gateway
                .store
                .claim_daily_run(claim.clone(), now, now + CLAIM_LEASE)
                .await
            {
                Ok(true) => {}
                Ok(false) => continue,
                Err(error) => {
                    warn!(%error, "daily reconciliation: cannot claim the run");
                    return outcomes;
                }
            }
            // One of the instance's few run slots (the API's runs take them too).
            let _slot = gateway.recon_slots.acquire().await;
            let request = RunRequest {
                merchant_id: merchant.id.clone(),
                account_id: account.id.clone(),
                day,
                source: Source::Download,
            };
            let result = match run::reconcile(gateway, request, None).await {
                Ok(report) => {
                    info!(
                        merchant = %merchant.id,
                        account = %account.id,
                        day = %day_text,
                        breaks = report.break_count,
                        "daily reconciliation done"
                    );
                    gateway
                        .metrics
                        .reconciliation_open_breaks
                        .get_or_create(&AccountLabels {
                            merchant: merchant.id.clone(),
                            account: account.id.clone(),
                        })
                        .set(i64::try_from(report.open_breaks).unwrap_or(i64::MAX));
                    Ok(report.run_id)
                }
                Err(error) => {
                    if let Err(error) = gateway.store.release_daily_run(claim).await {
                        warn!(%error, "daily reconciliation: cannot release the claim");
                    }
                    warn!(
                        merchant = %merchant.id,
                        account = %account.id,
                        day = %day_text,
                        code = error.code().as_str(),
                        %error,
                        "daily reconciliation not done; retried on the next pass"
                    );
                    Err(error.code().as_str().to_owned())
                }
            };
            gateway
                .metrics
                .reconciliation_runs
                .get_or_create(&OutcomeLabels {
                    source: format!("{}/{}", merchant.id, account.id),
                    outcome: match &result {
                        Ok(_) => "done".to_owned(),
                        Err(code) => code.clone(),
                    },
                })
                .inc();
            outcomes.push(DailyOutcome {
                merchant_id: merchant.id.clone(),
                account_id: account.id.clone(),
                result,
            });
        }
    }
    outcomes
}

/// Runs [`daily_once`] every few minutes, forever (a no-op while `daily_at` is unset; a reload
/// that sets it takes effect on the next pass).
pub async fn daily_loop(gateway: Arc<Gateway>) {
    let mut ticker = tokio::time::interval(PASS_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        daily_once(&gateway, gateway.now()).await;
    }
}
