//! The admin listener's handlers (`server.admin_listen`: a loopback address unless the config
//! allows more; with `server.admin_token`, every request but `/healthz` carries it).

use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};

use crate::error::{ApiError, ErrorCode};
use crate::http::{Shared, typed};

/// Checks every open payment and refund at its provider now, whatever its schedule (after an
/// incident, or in tests); answers how many were open.
pub(crate) async fn sweep(State(gw): State<Shared>) -> Response {
    // A sweep makes up to a thousand provider calls: one at a time, or repeated sweeps would
    // spend the accounts' outbound limits and trip circuits.
    let Ok(_running) = gw.sweep_lock.try_lock() else {
        return ApiError::new(
            axum::http::StatusCode::CONFLICT,
            crate::error::ErrorType::InvalidRequestError,
            ErrorCode::SweepInProgress,
            "a sweep is running; retry once it is done",
        )
        .into_response();
    };
    match gw.recheck_once(std::time::Duration::ZERO).await {
        Ok(checked) => axum::Json(serde_json::json!({ "checked": checked })).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

/// Requires the configured admin token (constant-time compare) on every admin route but
/// `/healthz`; without one configured, the loopback-only listener is open.
pub(crate) async fn require_token(
    State(gw): State<Shared>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let config = gw.config();
    let Some(token) = &config.admin_token else {
        return next.run(request).await;
    };
    if request.uri().path() == "/healthz" {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    let expected = token.expose();
    let same = given.len() == expected.len()
        && bool::from(subtle::ConstantTimeEq::ct_eq(
            given.as_bytes(),
            expected.as_bytes(),
        ));
    if same {
        next.run(request).await
    } else {
        ApiError::auth(
            ErrorCode::AdminTokenRequired,
            "the admin endpoints need the admin token",
        )
        .into_response()
    }
}

/// Every account's circuit state, and every partner's (a sub-merchant's calls pass both).
pub(crate) async fn circuits(State(gw): State<Shared>) -> Response {
    let now = std::time::Instant::now();
    let config = gw.config();
    let accounts: Vec<serde_json::Value> = config
        .merchants
        .values()
        .flat_map(|m| {
            m.accounts.iter().map(move |a| {
                serde_json::json!({
                    "merchant": m.id,
                    "account": a.id,
                    "provider": a.kind.as_str(),
                    "circuit": a.circuit.state(now).as_str(),
                    "partner": a.partner.as_ref().map(|p| p.id.as_str()),
                })
            })
        })
        .collect();
    let partners: Vec<serde_json::Value> = config
        .partners
        .values()
        .map(|p| {
            serde_json::json!({
                "partner": p.id,
                "provider": p.kind.as_str(),
                "circuit": p.circuit.state(now).as_str(),
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "accounts": accounts, "partners": partners })).into_response()
}

/// Admin listener (private): the latest runs, each linking to its HTML report.
pub(crate) async fn admin_reconciliations(State(gw): State<Shared>) -> Result<Response, ApiError> {
    let runs = gw.store.recon_runs(None, 200).await?;
    let mut page = format!(
        "<!doctype html><html lang=\"zh-CN\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><link rel=\"icon\" href=\"data:,\"><title>对账 Reconciliations</title><style>{}</style></head><body><main><h1>对账 · Reconciliations</h1><p class=\"sub\">the latest {} runs, newest first</p><table id=\"runs\"><tr><th>statement day</th><th>merchant / account</th><th>finished (UTC)</th><th>run</th></tr>",
        crate::reconcile::report::STYLE,
        runs.len()
    );
    for run in &runs {
        page.push_str(&format!(
            "<tr><td><a href=\"/reconciliations/{id}\">{day}</a></td><td>{merchant} / {account}</td><td>{finished}</td><td><code>{id}</code></td></tr>",
            id = crate::html::escape(&run.id),
            day = crate::html::escape(&run.day),
            merchant = crate::html::escape(&run.merchant_id),
            account = crate::html::escape(&run.account_id),
            finished = crate::html::escape(&crate::ledger::rfc3339(run.finished_at)),
        ));
    }
    page.push_str("</table></main></body></html>");
    Ok(typed(page, "text/html; charset=utf-8"))
}

/// Admin listener (private): one run's HTML report, for a browser.
pub(crate) async fn admin_reconciliation_html(
    State(gw): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let report = crate::reconcile::run::load_report(&gw, None, &id)
        .await?
        .ok_or_else(|| ApiError::missing("reconciliation", &id))?;
    Ok(typed(
        crate::reconcile::report::html(&report),
        "text/html; charset=utf-8",
    ))
}
