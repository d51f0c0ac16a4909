//! SQLite: reconciliation: the ledger side of a day, statements, runs, breaks, daily claims, repairs.

use super::*;
use crate::store::rows::{
    BREAK_FIELDS, CLAIM_DAILY, LedgerPaymentRow, LedgerRefundRow, PAYMENT_FIELDS, REFUND_FIELDS,
    RELEASE_DAILY, RUN_FIELDS, break_json, corrupt, report_order,
};

#[async_trait]
impl ReconStore for SqliteStore {
    async fn recon_ledger(
        &self,
        merchant_id: &str,
        account_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<(Vec<LedgerPayment>, Vec<LedgerRefund>), StoreError> {
        // Two halves of the window on two read connections at once (both cores); the
        // refunds, a small part, with the first.
        let mid = from + (to - from) / 2;
        let (m1, a1) = (merchant_id.to_owned(), account_id.to_owned());
        let (m2, a2) = (m1.clone(), a1.clone());
        let first = self.read(move |conn| {
            let payments = ledger_payments(conn, &m1, &a1, from, mid)?;
            let refunds = ledger_refunds(conn, &m1, &a1, from, to)?;
            Ok((payments, refunds))
        });
        let second = self.read(move |conn| ledger_payments(conn, &m2, &a2, mid, to));
        let ((mut payments, refunds), rest) = tokio::try_join!(first, second)?;
        payments.extend(rest);
        Ok((payments, refunds))
    }

    async fn recon_lookup(
        &self,
        merchant_id: &str,
        account_id: &str,
        payment_ids: Vec<String>,
        refund_ids: Vec<String>,
    ) -> Result<(Vec<LedgerPayment>, Vec<LedgerRefund>), StoreError> {
        let (merchant_id, account_id) = (merchant_id.to_owned(), account_id.to_owned());
        self.read(move |conn| lookup(conn, &merchant_id, &account_id, &payment_ids, &refund_ids))
            .await
    }

    async fn claim_daily_run(
        &self,
        claim: DailyClaim,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| claim_daily(conn, &claim, now, lease_until))
            .await
    }

    async fn release_daily_run(&self, claim: DailyClaim) -> Result<(), StoreError> {
        self.write(move |conn| release_daily(conn, &claim)).await
    }

    async fn save_statement(&self, record: StatementRecord) -> Result<(), StoreError> {
        self.write(move |conn| save_statement(conn, &record)).await
    }

    async fn save_recon_run(
        &self,
        run: ReconRun,
        breaks: Vec<Break>,
    ) -> Result<Vec<Break>, StoreError> {
        self.write(move |conn| save_run(conn, &run, breaks)).await
    }

    async fn recon_run(
        &self,
        merchant_id: Option<&str>,
        run_id: &str,
    ) -> Result<Option<(ReconRun, Vec<Break>)>, StoreError> {
        let (merchant_id, run_id) = (merchant_id.map(str::to_owned), run_id.to_owned());
        self.read(move |conn| run(conn, merchant_id.as_deref(), &run_id))
            .await
    }

    async fn latest_recon_run(
        &self,
        merchant_id: &str,
        account_id: &str,
        day: &str,
    ) -> Result<Option<ReconRun>, StoreError> {
        let (merchant_id, account_id, day) = (
            merchant_id.to_owned(),
            account_id.to_owned(),
            day.to_owned(),
        );
        self.read(move |conn| latest_run(conn, &merchant_id, &account_id, &day))
            .await
    }

    async fn recon_runs(
        &self,
        merchant_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ReconRun>, StoreError> {
        let merchant_id = merchant_id.map(str::to_owned);
        self.read(move |conn| runs(conn, merchant_id.as_deref(), limit))
            .await
    }

    async fn breaks(
        &self,
        merchant_id: Option<&str>,
        status: Option<BreakStatus>,
        limit: u32,
    ) -> Result<Vec<StoredBreak>, StoreError> {
        let merchant_id = merchant_id.map(str::to_owned);
        self.read(move |conn| breaks(conn, merchant_id.as_deref(), status, limit))
            .await
    }

    async fn break_by_id(
        &self,
        merchant_id: Option<&str>,
        break_id: &str,
    ) -> Result<Option<StoredBreak>, StoreError> {
        let (merchant_id, break_id) = (merchant_id.map(str::to_owned), break_id.to_owned());
        self.read(move |conn| break_by_id(conn, merchant_id.as_deref(), &break_id))
            .await
    }

    async fn set_break_status(
        &self,
        merchant_id: Option<&str>,
        break_id: &str,
        status: BreakStatus,
        note: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Option<StoredBreak>, StoreError> {
        let (merchant_id, break_id) = (merchant_id.map(str::to_owned), break_id.to_owned());
        self.write(move |conn| {
            set_break_status(conn, merchant_id.as_deref(), &break_id, status, note, now)
        })
        .await
    }

    async fn insert_repaired_payment(
        &self,
        payment: Payment,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.write(move |conn| {
            if load_payment(conn, &payment.id)?.is_some() {
                return Ok(false);
            }
            insert_payment(conn, &payment)?;
            conn.exec(
                "UPDATE payments SET paid_at = ?2, next_check_at = NULL WHERE id = ?1",
                params![payment.id, ms(now)],
            )
            .map_err(db)?;
            append_event(
                conn,
                &payment.merchant_id,
                "payment.succeeded",
                &payment.id,
                payment.to_api_json(),
                now,
            )?;
            Ok(true)
        })
        .await
    }
}

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS statements (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    day TEXT NOT NULL,
    source TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    path TEXT,
    bytes INTEGER NOT NULL,
    fetched_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS recon_runs (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    day TEXT NOT NULL,
    statement_id TEXT NOT NULL REFERENCES statements (id),
    finished_at INTEGER NOT NULL,
    report TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS recon_runs_by_merchant ON recon_runs (merchant_id, finished_at);
CREATE TABLE IF NOT EXISTS recon_breaks (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    day TEXT NOT NULL,
    category TEXT NOT NULL,
    kind TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    refund_id TEXT NOT NULL DEFAULT '',
    run_id TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    note TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    UNIQUE (merchant_id, account_id, day, category, kind, payment_id, refund_id)
);
CREATE INDEX IF NOT EXISTS recon_breaks_by_run ON recon_breaks (run_id);
CREATE INDEX IF NOT EXISTS recon_breaks_by_status ON recon_breaks (merchant_id, status, updated_at);
CREATE TABLE IF NOT EXISTS recon_claims (
    merchant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    day TEXT NOT NULL,
    holder TEXT NOT NULL,
    lease_until INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, account_id, day)
);
"#;

pub(super) fn claim_daily(
    conn: &Connection,
    claim: &DailyClaim,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
) -> Result<bool, StoreError> {
    let changed = conn
        .exec(
            &CLAIM_DAILY.replace('$', "?"),
            params![
                claim.merchant_id,
                claim.account_id,
                claim.day,
                claim.holder,
                ms(now),
                ms(lease_until)
            ],
        )
        .map_err(db)?;
    Ok(changed == 1)
}

pub(super) fn release_daily(conn: &Connection, claim: &DailyClaim) -> Result<(), StoreError> {
    conn.exec(
        &RELEASE_DAILY.replace('$', "?"),
        params![claim.merchant_id, claim.account_id, claim.day, claim.holder],
    )
    .map_err(db)?;
    Ok(())
}

fn ledger_payment(row: &Row<'_>) -> Result<LedgerPayment, StoreError> {
    LedgerPaymentRow {
        id: row.get(0).map_err(db)?,
        provider_ref: row.get(1).map_err(db)?,
        amount: row.get(2).map_err(db)?,
        currency: row.get(3).map_err(db)?,
        status: row.get(4).map_err(db)?,
        paid_at_ms: row.get(5).map_err(db)?,
    }
    .decode()
}

fn ledger_refund(row: &Row<'_>) -> Result<LedgerRefund, StoreError> {
    LedgerRefundRow {
        id: row.get(0).map_err(db)?,
        payment_id: row.get(1).map_err(db)?,
        amount: row.get(2).map_err(db)?,
        currency: row.get(3).map_err(db)?,
        status: row.get(4).map_err(db)?,
        settled_at_ms: row.get(5).map_err(db)?,
    }
    .decode()
}

/// The payments paid on this account in `[from, to)`.
fn ledger_payments(
    conn: &Connection,
    merchant_id: &str,
    account_id: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<LedgerPayment>, StoreError> {
    let mut payments = Vec::new();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {PAYMENT_FIELDS} FROM payments \
             WHERE account_id = ?2 AND paid_at >= ?3 AND paid_at < ?4 \
               AND merchant_id = ?1 AND status = 'succeeded'"
        ))
        .map_err(db)?;
    let mut rows = stmt
        .query(params![merchant_id, account_id, ms(from), ms(to)])
        .map_err(db)?;
    while let Some(row) = rows.next().map_err(db)? {
        payments.push(ledger_payment(row)?);
    }
    Ok(payments)
}

/// The refunds of this account's payments that succeeded in `[from, to)`.
fn ledger_refunds(
    conn: &Connection,
    merchant_id: &str,
    account_id: &str,
    from: OffsetDateTime,
    to: OffsetDateTime,
) -> Result<Vec<LedgerRefund>, StoreError> {
    let mut refunds = Vec::new();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {REFUND_FIELDS} FROM refunds r JOIN payments p ON p.id = r.payment_id \
             WHERE r.status = 'succeeded' AND r.updated_at >= ?3 AND r.updated_at < ?4 \
               AND r.merchant_id = ?1 AND p.account_id = ?2"
        ))
        .map_err(db)?;
    let mut rows = stmt
        .query(params![merchant_id, account_id, ms(from), ms(to)])
        .map_err(db)?;
    while let Some(row) = rows.next().map_err(db)? {
        refunds.push(ledger_refund(row)?);
    }
    Ok(refunds)
}

pub(super) fn lookup(
    conn: &Connection,
    merchant_id: &str,
    account_id: &str,
    payment_ids: &[String],
    refund_ids: &[String],
) -> Result<(Vec<LedgerPayment>, Vec<LedgerRefund>), StoreError> {
    let mut payments = Vec::new();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {PAYMENT_FIELDS} FROM payments WHERE id = ?1 AND merchant_id = ?2 AND account_id = ?3"
        ))
        .map_err(db)?;
    for id in payment_ids {
        let mut rows = stmt
            .query(params![id, merchant_id, account_id])
            .map_err(db)?;
        if let Some(row) = rows.next().map_err(db)? {
            payments.push(ledger_payment(row)?);
        }
    }
    let mut refunds = Vec::new();
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {REFUND_FIELDS} FROM refunds r JOIN payments p ON p.id = r.payment_id \
             WHERE r.id = ?1 AND r.merchant_id = ?2 AND p.account_id = ?3"
        ))
        .map_err(db)?;
    for id in refund_ids {
        let mut rows = stmt
            .query(params![id, merchant_id, account_id])
            .map_err(db)?;
        if let Some(row) = rows.next().map_err(db)? {
            refunds.push(ledger_refund(row)?);
        }
    }
    Ok((payments, refunds))
}

pub(super) fn save_statement(conn: &Connection, r: &StatementRecord) -> Result<(), StoreError> {
    conn.exec(
        "INSERT INTO statements (id, merchant_id, account_id, provider, day, source, sha256, path, bytes, fetched_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        params![
            r.id,
            r.merchant_id,
            r.account_id,
            r.provider,
            r.day,
            r.source,
            r.sha256,
            r.path,
            i64::try_from(r.bytes).unwrap_or(i64::MAX),
            r.fetched_at
        ],
    )
    .map_err(db)?;
    Ok(())
}

fn stored_break(row: &Row<'_>) -> Result<StoredBreak, StoreError> {
    let body: String = row.get(5).map_err(db)?;
    let mut record: Break = serde_json::from_str(&body).map_err(|_| corrupt("break body"))?;
    record.id = row.get(4).map_err(db)?;
    let status: String = row.get(6).map_err(db)?;
    record.status = BreakStatus::parse(&status).ok_or_else(|| corrupt("break status"))?;
    record.note = row.get(7).map_err(db)?;
    Ok(StoredBreak {
        merchant_id: row.get(0).map_err(db)?,
        account_id: row.get(1).map_err(db)?,
        day: row.get(2).map_err(db)?,
        run_id: row.get(3).map_err(db)?,
        record,
    })
}

pub(super) fn save_run(
    conn: &Connection,
    run: &ReconRun,
    breaks: Vec<Break>,
) -> Result<Vec<Break>, StoreError> {
    let now = ms(run.finished_at);
    conn.exec(
        "INSERT INTO recon_runs (id, merchant_id, account_id, day, statement_id, finished_at, report) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            run.id,
            run.merchant_id,
            run.account_id,
            run.day,
            run.statement_id,
            now,
            run.report
        ],
    )
    .map_err(db)?;
    let mut stored = Vec::with_capacity(breaks.len());
    {
        let mut find = conn
            .prepare_cached(
                "SELECT id, status, note FROM recon_breaks WHERE merchant_id = ?1 AND account_id = ?2 \
                 AND day = ?3 AND category = ?4 AND kind = ?5 AND payment_id = ?6 AND refund_id = ?7",
            )
            .map_err(db)?;
        let mut update = conn
            .prepare_cached(
                "UPDATE recon_breaks SET run_id = ?2, body = ?3, updated_at = ?4 WHERE id = ?1",
            )
            .map_err(db)?;
        let mut insert = conn
            .prepare_cached(
                "INSERT INTO recon_breaks (id, merchant_id, account_id, day, category, kind, payment_id, refund_id, run_id, body, status, note, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'open', NULL, ?11, ?11)",
            )
            .map_err(db)?;
        for mut record in breaks {
            let refund_id = record.refund_id.clone().unwrap_or_default();
            let existing: Option<(String, String, Option<String>)> = find
                .query_row(
                    params![
                        run.merchant_id,
                        run.account_id,
                        run.day,
                        record.category.as_str(),
                        record.kind,
                        record.payment_id,
                        refund_id
                    ],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()
                .map_err(db)?;
            match existing {
                Some((id, status, note)) => {
                    record.id = id;
                    record.status =
                        BreakStatus::parse(&status).ok_or_else(|| corrupt("break status"))?;
                    record.note = note;
                    update
                        .execute(params![record.id, run.id, break_json(&record)?, now])
                        .map_err(db)?;
                }
                None => {
                    record.id = crate::ledger::new_id("brk");
                    record.status = BreakStatus::Open;
                    record.note = None;
                    insert
                        .execute(params![
                            record.id,
                            run.merchant_id,
                            run.account_id,
                            run.day,
                            record.category.as_str(),
                            record.kind,
                            record.payment_id,
                            refund_id,
                            run.id,
                            break_json(&record)?,
                            now
                        ])
                        .map_err(db)?;
                }
            }
            stored.push(record);
        }
    }
    conn.exec(
        "UPDATE recon_breaks SET status = 'resolved', note = 'no longer found by run ' || ?4, updated_at = ?5 \
         WHERE merchant_id = ?1 AND account_id = ?2 AND day = ?3 AND run_id != ?4 AND status = 'open'",
        params![run.merchant_id, run.account_id, run.day, run.id, now],
    )
    .map_err(db)?;
    Ok(stored)
}

fn run_from_row(row: &Row<'_>) -> Result<ReconRun, StoreError> {
    Ok(ReconRun {
        id: row.get(0).map_err(db)?,
        merchant_id: row.get(1).map_err(db)?,
        account_id: row.get(2).map_err(db)?,
        day: row.get(3).map_err(db)?,
        statement_id: row.get(4).map_err(db)?,
        finished_at: from_ms(row.get(5).map_err(db)?)?,
        report: row.get(6).map_err(db)?,
    })
}

pub(super) fn run(
    conn: &Connection,
    merchant_id: Option<&str>,
    run_id: &str,
) -> Result<Option<(ReconRun, Vec<Break>)>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {RUN_FIELDS} FROM recon_runs WHERE id = ?1 AND (?2 IS NULL OR merchant_id = ?2)"
        ))
        .map_err(db)?;
    let mut rows = stmt.query(params![run_id, merchant_id]).map_err(db)?;
    let Some(row) = rows.next().map_err(db)? else {
        return Ok(None);
    };
    let run = run_from_row(row)?;
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {BREAK_FIELDS} FROM recon_breaks WHERE run_id = ?1 ORDER BY category, payment_id, refund_id"
        ))
        .map_err(db)?;
    let mut rows = stmt.query(params![run_id]).map_err(db)?;
    let mut breaks = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        breaks.push(stored_break(row)?.record);
    }
    report_order(&mut breaks);
    Ok(Some((run, breaks)))
}

pub(super) fn runs(
    conn: &Connection,
    merchant_id: Option<&str>,
    limit: u32,
) -> Result<Vec<ReconRun>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {RUN_FIELDS} FROM recon_runs WHERE (?1 IS NULL OR merchant_id = ?1) ORDER BY finished_at DESC LIMIT ?2"
        ))
        .map_err(db)?;
    let mut rows = stmt.query(params![merchant_id, limit]).map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        out.push(run_from_row(row)?);
    }
    Ok(out)
}

pub(super) fn breaks(
    conn: &Connection,
    merchant_id: Option<&str>,
    status: Option<BreakStatus>,
    limit: u32,
) -> Result<Vec<StoredBreak>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {BREAK_FIELDS} FROM recon_breaks WHERE (?1 IS NULL OR merchant_id = ?1) \
             AND (?2 IS NULL OR status = ?2) ORDER BY updated_at DESC, id LIMIT ?3"
        ))
        .map_err(db)?;
    let mut rows = stmt
        .query(params![merchant_id, status.map(|s| s.as_str()), limit])
        .map_err(db)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(db)? {
        out.push(stored_break(row)?);
    }
    Ok(out)
}

pub(super) fn set_break_status(
    conn: &Connection,
    merchant_id: Option<&str>,
    break_id: &str,
    status: BreakStatus,
    note: Option<String>,
    now: OffsetDateTime,
) -> Result<Option<StoredBreak>, StoreError> {
    let changed = conn
        .exec(
            "UPDATE recon_breaks SET status = ?3, note = ?4, updated_at = ?5 \
             WHERE id = ?1 AND (?2 IS NULL OR merchant_id = ?2)",
            params![break_id, merchant_id, status.as_str(), note, ms(now)],
        )
        .map_err(db)?;
    if changed == 0 {
        return Ok(None);
    }
    let found = conn
        .row(
            &format!("SELECT {BREAK_FIELDS} FROM recon_breaks WHERE id = ?1"),
            params![break_id],
            |row| Ok(stored_break(row)),
        )
        .map_err(db)??;
    Ok(Some(found))
}

pub(super) fn break_by_id(
    conn: &Connection,
    merchant_id: Option<&str>,
    break_id: &str,
) -> Result<Option<StoredBreak>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {BREAK_FIELDS} FROM recon_breaks WHERE id = ?1 AND (?2 IS NULL OR merchant_id = ?2)"
        ))
        .map_err(db)?;
    let mut rows = stmt.query(params![break_id, merchant_id]).map_err(db)?;
    match rows.next().map_err(db)? {
        Some(row) => Ok(Some(stored_break(row)?)),
        None => Ok(None),
    }
}

pub(super) fn latest_run(
    conn: &Connection,
    merchant_id: &str,
    account_id: &str,
    day: &str,
) -> Result<Option<ReconRun>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {RUN_FIELDS} FROM recon_runs WHERE merchant_id = ?1 AND account_id = ?2 AND day = ?3 \
             ORDER BY finished_at DESC LIMIT 1"
        ))
        .map_err(db)?;
    let mut rows = stmt
        .query(params![merchant_id, account_id, day])
        .map_err(db)?;
    match rows.next().map_err(db)? {
        Some(row) => Ok(Some(run_from_row(row)?)),
        None => Ok(None),
    }
}
