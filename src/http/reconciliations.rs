//! `/v1/reconciliations` and `/v1/reconciliation_breaks`: runs, reports and break handling.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::config::Merchant;
use crate::error::{ApiError, ErrorCode};
use crate::gateway::Gateway;
use crate::http::extract::Signed;
use crate::http::{Shared, json_response, no_parameters, parse_body, to_bytes, typed};
use crate::service::idempotency;
use crate::service::idempotency::{Answer, Outcome, key_in_use};
use crate::service::reconciliation::{self, report_json};
use crate::store::{Begin, IdemClaim};

// --- Reconciliation -----------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReconciliationBody {
    /// Provider account.
    account: String,
    /// Statement day `yyyy-MM-dd` (Beijing); default yesterday.
    #[serde(default)]
    date: Option<String>,
}

pub(crate) fn run_summary(run: &crate::store::ReconRun) -> serde_json::Value {
    let mut summary: serde_json::Value =
        serde_json::from_str(&run.report).unwrap_or(serde_json::Value::Null);
    if let Some(map) = summary.as_object_mut() {
        map.remove("breaks");
        map.insert("object".to_owned(), "reconciliation".into());
    }
    summary
}

/// Runs a reconciliation now: downloads the account's statement for the day, matches it and
/// answers with the report. The run is stored; repeat the call (new key) to run it again.
pub(crate) async fn create_reconciliation(
    State(gw): State<Shared>,
    mut signed: Signed,
) -> Result<Response, ApiError> {
    let claim = signed.claim()?;
    let key = claim.key.clone();
    let Signed {
        merchant,
        body,
        now,
        ..
    } = signed;
    let request: ReconciliationBody = parse_body(&body)?;
    let day = match &request.date {
        Some(text) => crate::reconcile::run::parse_day(text).ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::ParameterInvalid,
                "date",
                "date must be yyyy-MM-dd",
            )
        })?,
        None => crate::reconcile::run::yesterday_beijing(now),
    };
    // A day's statement exists from the next day on (Beijing; today's is asked for, and a
    // provider that refuses it answers statement_not_ready), and providers keep them for a
    // few years at most: anything else is a wrong date, not a provider failure.
    let yesterday = crate::reconcile::run::yesterday_beijing(now);
    if day > yesterday + time::Duration::days(1) {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "date",
            "that day has not come yet (Beijing time); a day's statement is ready the next day",
        ));
    }
    if yesterday - day > time::Duration::days(3 * 366) {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "date",
            "the providers keep statements for a few years at most: use a day within the last three years",
        ));
    }
    if !merchant.accounts.iter().any(|a| a.id == request.account) {
        return Err(ApiError::invalid(
            ErrorCode::AccountNotFound,
            "account",
            "no such account for this merchant",
        ));
    }
    // A run is heavy (a ledger day and a download): a low rate of its own, on top of the
    // merchant's request limit, the one run per account and day, and the global slots.
    if let Err(limited) = merchant.reconciliation_limit.check() {
        return Err(ApiError::reconciliations_limited(
            &merchant.reconciliation_limit,
            limited.retry_after,
        ));
    }
    let resource = format!(
        "recon:{}:{}",
        request.account,
        crate::reconcile::run::format_day(day)
    );
    let begin = gw.store.claim_key(claim, &resource).await?;
    idempotency::run(
        &gw,
        &merchant.id,
        &key,
        begin,
        async |_| Err(key_in_use()),
        async |()| reconciliation::run_now(&gw, &merchant.id, &request.account, day).await,
    )
    .await
    .map(IntoResponse::into_response)
}

pub(crate) async fn list_reconciliations(
    State(gw): State<Shared>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, .. } = signed;
    let runs = gw.store.recon_runs(Some(&merchant.id), 100).await?;
    let data: Vec<serde_json::Value> = runs.iter().map(run_summary).collect();
    Ok(json_response(
        StatusCode::OK,
        to_bytes(&serde_json::json!({"object": "list", "data": data})),
        false,
    ))
}

pub(crate) async fn merchant_report(
    gw: &Gateway,
    merchant: &Merchant,
    id: &str,
) -> Result<crate::reconcile::report::Report, ApiError> {
    crate::reconcile::run::load_report(gw, Some(&merchant.id), id)
        .await?
        .ok_or_else(|| ApiError::missing("reconciliation", id))
}

pub(crate) async fn get_reconciliation(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let report = merchant_report(&gw, &signed.merchant, &id).await?;
    Ok(json_response(StatusCode::OK, report_json(&report), false))
}

pub(crate) async fn get_reconciliation_csv(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let report = merchant_report(&gw, &signed.merchant, &id).await?;
    Ok(typed(
        crate::reconcile::report::breaks_csv(&report),
        "text/csv; charset=utf-8",
    ))
}

pub(crate) async fn get_reconciliation_html(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let report = merchant_report(&gw, &signed.merchant, &id).await?;
    Ok(typed(
        crate::reconcile::report::html(&report),
        "text/html; charset=utf-8",
    ))
}

pub(crate) fn break_json(stored: &crate::store::StoredBreak) -> serde_json::Value {
    let mut value = serde_json::to_value(&stored.record).unwrap_or(serde_json::Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.insert("object".to_owned(), "reconciliation_break".into());
        map.insert("account".to_owned(), stored.account_id.clone().into());
        map.insert("statement_day".to_owned(), stored.day.clone().into());
        map.insert("reconciliation".to_owned(), stored.run_id.clone().into());
    }
    value
}

#[derive(Debug, Deserialize)]
pub(crate) struct BreakQuery {
    status: Option<String>,
}

pub(crate) async fn list_breaks(
    State(gw): State<Shared>,
    axum::extract::Query(query): axum::extract::Query<BreakQuery>,
    signed: Signed,
) -> Result<Response, ApiError> {
    let Signed { merchant, .. } = signed;
    let status = match query.status.as_deref() {
        Some(text) => Some(crate::reconcile::BreakStatus::parse(text).ok_or_else(|| {
            ApiError::invalid(
                ErrorCode::ParameterInvalid,
                "status",
                "status must be open, resolved or ignored",
            )
        })?),
        None => None,
    };
    let breaks = gw.store.breaks(Some(&merchant.id), status, 1000).await?;
    let data: Vec<serde_json::Value> = breaks.iter().map(break_json).collect();
    Ok(json_response(
        StatusCode::OK,
        to_bytes(&serde_json::json!({"object": "list", "data": data})),
        false,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BreakUpdate {
    status: String,
    #[serde(default)]
    note: Option<String>,
}

/// Claims the key of a break action (the break must be the merchant's).
pub(crate) async fn claim_break_action(
    gw: &Gateway,
    merchant: &Merchant,
    claim: IdemClaim,
    id: &str,
) -> Result<Begin<()>, ApiError> {
    if gw
        .store
        .break_by_id(Some(&merchant.id), id)
        .await?
        .is_none()
    {
        return Err(ApiError::missing("break", id));
    }
    Ok(gw.store.claim_key(claim, id).await?)
}

pub(crate) async fn update_break(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    mut signed: Signed,
) -> Result<Response, ApiError> {
    let claim = signed.claim()?;
    let key = claim.key.clone();
    let Signed {
        merchant,
        body,
        now,
        ..
    } = signed;
    let update: BreakUpdate = parse_body(&body)?;
    let status = crate::reconcile::BreakStatus::parse(&update.status).ok_or_else(|| {
        ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "status",
            "status must be open, resolved or ignored",
        )
    })?;
    if update
        .note
        .as_ref()
        .is_some_and(|n| n.chars().count() > 2000)
    {
        return Err(ApiError::invalid(
            ErrorCode::ParameterInvalid,
            "note",
            "note is at most 2000 characters",
        ));
    }
    let begin = claim_break_action(&gw, &merchant, claim, &id).await?;
    idempotency::run(
        &gw,
        &merchant.id,
        &key,
        begin,
        async |_| Err(key_in_use()),
        async |()| {
            let stored = gw
                .store
                .set_break_status(Some(&merchant.id), &id, status, update.note, now)
                .await?
                .ok_or_else(|| ApiError::missing("break", &id))?;
            Ok(Outcome::Done(Answer::json(
                StatusCode::OK,
                &break_json(&stored),
            )))
        },
    )
    .await
    .map(IntoResponse::into_response)
}

/// Repairs a `missing_in_ledger` payment break from the provider's record.
pub(crate) async fn repair_break(
    State(gw): State<Shared>,
    Path(id): Path<String>,
    mut signed: Signed,
) -> Result<Response, ApiError> {
    let claim = signed.claim()?;
    let key = claim.key.clone();
    let Signed { merchant, body, .. } = signed;
    no_parameters(&body)?;
    let begin = claim_break_action(&gw, &merchant, claim, &id).await?;
    idempotency::run(
        &gw,
        &merchant.id,
        &key,
        begin,
        async |_| Err(key_in_use()),
        async |()| {
            Ok(
                match crate::reconcile::repair::repair_break(&gw, Some(&merchant.id), &id).await {
                    Ok((payment, stored)) => Outcome::Done(Answer::json(
                        StatusCode::OK,
                        &serde_json::json!({
                            "object": "reconciliation_repair",
                            "payment": payment.to_api_json(),
                            "break": break_json(&stored),
                        }),
                    )),
                    Err(error) => Outcome::Refused(error.into()),
                },
            )
        },
    )
    .await
    .map(IntoResponse::into_response)
}
