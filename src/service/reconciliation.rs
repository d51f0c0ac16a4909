//! Reconciliation runs asked for through the API. A run loads the ledger side of a day and
//! holds a statement download, so they are bounded: one at a time per account and day (the
//! same claim the daily schedule takes, so the two never overlap either), and at most
//! [`MAX_CONCURRENT_RUNS`] in the whole instance (the daily schedule waits for a slot; the API
//! answers 503 and the key may be used again).

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use time::Date;

use crate::error::{ApiError, ErrorCode, ErrorType};
use crate::gateway::Gateway;
use crate::reconcile::report::Report;
use crate::reconcile::run::{RunRequest, Source, format_day, reconcile};
use crate::service::idempotency::{Answer, Outcome, to_bytes};
use crate::store::DailyClaim;

/// Runs one instance performs at once, API and daily schedule together.
pub const MAX_CONCURRENT_RUNS: usize = 2;

/// How long an API run's claim on its account and day lasts if its process dies mid-run.
const RUN_LEASE: Duration = Duration::from_secs(900);

/// A run's report as the API shows it.
pub(crate) fn report_json(report: &Report) -> Vec<u8> {
    let mut value = serde_json::to_value(report).unwrap_or(serde_json::Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("object".to_owned(), "reconciliation".into());
        // A break reads the same wherever the API lists it.
        if let Some(serde_json::Value::Array(breaks)) = map.get_mut("breaks") {
            for item in breaks
                .iter_mut()
                .filter_map(serde_json::Value::as_object_mut)
            {
                item.insert("object".to_owned(), "reconciliation_break".into());
                item.insert("account".to_owned(), report.account_id.clone().into());
                item.insert("statement_day".to_owned(), report.day.clone().into());
                item.insert("reconciliation".to_owned(), report.run_id.clone().into());
            }
        }
    }
    to_bytes(&value)
}

/// Runs the day of `account_id` now, unless a run of it is already under way or the
/// instance has no free slot (both answers release the idempotency key).
pub(crate) async fn run_now(
    gw: &Gateway,
    merchant_id: &str,
    account_id: &str,
    day: Date,
) -> Result<Outcome, ApiError> {
    let Ok(_slot) = Arc::clone(&gw.recon_slots).try_acquire_owned() else {
        let mut busy = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorType::ApiError,
            ErrorCode::ReconciliationBusy,
            "the gateway is running as many reconciliations as it runs at once; retry shortly",
        );
        busy.headers.push(("retry-after", "10".to_owned()));
        return Ok(Outcome::Refused(busy));
    };
    let claim = DailyClaim {
        merchant_id: merchant_id.to_owned(),
        account_id: account_id.to_owned(),
        day: format_day(day),
        holder: crate::ledger::new_id("run"),
    };
    let now = gw.now();
    if !gw
        .store
        .claim_daily_run(claim.clone(), now, now + RUN_LEASE)
        .await?
    {
        return Ok(Outcome::Refused(ApiError::new(
            StatusCode::CONFLICT,
            ErrorType::InvalidRequestError,
            ErrorCode::ReconciliationInProgress,
            "this account's day is being reconciled (or the daily run just did it); retry once it is done",
        )));
    }
    let request = RunRequest {
        merchant_id: merchant_id.to_owned(),
        account_id: account_id.to_owned(),
        day,
        source: Source::Download,
    };
    let result = reconcile(gw, request, None).await;
    if let Err(error) = gw.store.release_daily_run(claim).await {
        // The claim lapses with its lease.
        tracing::warn!(%error, "reconciliation: cannot release the run's claim");
    }
    Ok(match result {
        Ok(report) => Outcome::Done(Answer {
            status: StatusCode::CREATED,
            body: report_json(&report),
            replayed: false,
        }),
        // Nothing was stored as a run: the key may be used again (e.g. once the bill is ready).
        Err(error) => Outcome::Refused(error.into()),
    })
}
