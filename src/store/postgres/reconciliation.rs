//! PostgreSQL: reconciliation: the ledger side of a day, statements, runs, breaks, daily claims, repairs.

use super::*;

#[async_trait]
impl ReconStore for PgStore {
    async fn recon_ledger(
        &self,
        merchant_id: &str,
        account_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<(Vec<LedgerPayment>, Vec<LedgerRefund>), StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM payments WHERE account_id = $2 AND paid_at >= $3 AND paid_at < $4 \
             AND merchant_id = $1 AND status = 'succeeded'",
            crate::store::rows::PAYMENT_FIELDS
        ))
        .bind(merchant_id)
        .bind(account_id)
        .bind(ms(from))
        .bind(ms(to))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let payments = all(rows, ledger_payment)?;
        let rows = sqlx::query(&format!(
            "SELECT {} FROM refunds r JOIN payments p ON p.id = r.payment_id \
             WHERE r.status = 'succeeded' AND r.updated_at >= $3 AND r.updated_at < $4 \
             AND r.merchant_id = $1 AND p.account_id = $2",
            crate::store::rows::REFUND_FIELDS
        ))
        .bind(merchant_id)
        .bind(account_id)
        .bind(ms(from))
        .bind(ms(to))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok((payments, all(rows, ledger_refund)?))
    }

    async fn recon_lookup(
        &self,
        merchant_id: &str,
        account_id: &str,
        payment_ids: Vec<String>,
        refund_ids: Vec<String>,
    ) -> Result<(Vec<LedgerPayment>, Vec<LedgerRefund>), StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM payments WHERE id = ANY($1) AND merchant_id = $2 AND account_id = $3",
            crate::store::rows::PAYMENT_FIELDS
        ))
        .bind(&payment_ids)
        .bind(merchant_id)
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let payments = all(rows, ledger_payment)?;
        let rows = sqlx::query(&format!(
            "SELECT {} FROM refunds r JOIN payments p ON p.id = r.payment_id \
             WHERE r.id = ANY($1) AND r.merchant_id = $2 AND p.account_id = $3",
            crate::store::rows::REFUND_FIELDS
        ))
        .bind(&refund_ids)
        .bind(merchant_id)
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok((payments, all(rows, ledger_refund)?))
    }

    async fn claim_daily_run(
        &self,
        claim: DailyClaim,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(crate::store::rows::CLAIM_DAILY)
            .bind(&claim.merchant_id)
            .bind(&claim.account_id)
            .bind(&claim.day)
            .bind(&claim.holder)
            .bind(ms(now))
            .bind(ms(lease_until))
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        Ok(changed == 1)
    }

    async fn release_daily_run(&self, claim: DailyClaim) -> Result<(), StoreError> {
        sqlx::query(crate::store::rows::RELEASE_DAILY)
            .bind(&claim.merchant_id)
            .bind(&claim.account_id)
            .bind(&claim.day)
            .bind(&claim.holder)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn save_statement(&self, r: StatementRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO statements (id, merchant_id, account_id, provider, day, source, sha256, path, bytes, fetched_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&r.id)
        .bind(&r.merchant_id)
        .bind(&r.account_id)
        .bind(&r.provider)
        .bind(&r.day)
        .bind(&r.source)
        .bind(&r.sha256)
        .bind(&r.path)
        .bind(i64::try_from(r.bytes).unwrap_or(i64::MAX))
        .bind(&r.fetched_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn save_recon_run(
        &self,
        run: ReconRun,
        breaks: Vec<Break>,
    ) -> Result<Vec<Break>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Two runs of one statement day (a manual one beside the daily one) take turns.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!(
                "{}/{}/{}",
                run.merchant_id, run.account_id, run.day
            ))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let now = ms(run.finished_at);
        sqlx::query(
            "INSERT INTO recon_runs (id, merchant_id, account_id, day, statement_id, finished_at, report) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&run.id)
        .bind(&run.merchant_id)
        .bind(&run.account_id)
        .bind(&run.day)
        .bind(&run.statement_id)
        .bind(now)
        .bind(&run.report)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let mut stored = Vec::with_capacity(breaks.len());
        for mut record in breaks {
            let refund_id = record.refund_id.clone().unwrap_or_default();
            let existing = sqlx::query(
                "SELECT id, status, note FROM recon_breaks WHERE merchant_id = $1 AND account_id = $2 \
                 AND day = $3 AND category = $4 AND kind = $5 AND payment_id = $6 AND refund_id = $7",
            )
            .bind(&run.merchant_id)
            .bind(&run.account_id)
            .bind(&run.day)
            .bind(record.category.as_str())
            .bind(&record.kind)
            .bind(&record.payment_id)
            .bind(&refund_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            match existing {
                Some(row) => {
                    record.id = get(&row, 0)?;
                    let status: String = get(&row, 1)?;
                    record.status = BreakStatus::parse(&status)
                        .ok_or_else(|| StoreError::Corrupt("break status".into()))?;
                    record.note = get(&row, 2)?;
                    sqlx::query(
                        "UPDATE recon_breaks SET run_id = $2, body = $3, updated_at = $4 WHERE id = $1",
                    )
                    .bind(&record.id)
                    .bind(&run.id)
                    .bind(crate::store::rows::break_json(&record)?)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
                None => {
                    record.id = new_id("brk");
                    record.status = BreakStatus::Open;
                    record.note = None;
                    sqlx::query(
                        "INSERT INTO recon_breaks (id, merchant_id, account_id, day, category, kind, payment_id, refund_id, run_id, body, status, note, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'open', NULL, $11, $11)",
                    )
                    .bind(&record.id)
                    .bind(&run.merchant_id)
                    .bind(&run.account_id)
                    .bind(&run.day)
                    .bind(record.category.as_str())
                    .bind(&record.kind)
                    .bind(&record.payment_id)
                    .bind(&refund_id)
                    .bind(&run.id)
                    .bind(crate::store::rows::break_json(&record)?)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
            }
            stored.push(record);
        }
        sqlx::query(
            "UPDATE recon_breaks SET status = 'resolved', note = 'no longer found by run ' || $4, updated_at = $5 \
             WHERE merchant_id = $1 AND account_id = $2 AND day = $3 AND run_id != $4 AND status = 'open'",
        )
        .bind(&run.merchant_id)
        .bind(&run.account_id)
        .bind(&run.day)
        .bind(&run.id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn recon_run(
        &self,
        merchant_id: Option<&str>,
        run_id: &str,
    ) -> Result<Option<(ReconRun, Vec<Break>)>, StoreError> {
        let found = sqlx::query(&format!(
            "SELECT {RUN_FIELDS} FROM recon_runs WHERE id = $1 AND ($2::TEXT IS NULL OR merchant_id = $2)"
        ))
        .bind(run_id)
        .bind(merchant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = found else {
            return Ok(None);
        };
        let run = recon_run(&row)?;
        let rows = sqlx::query(&format!(
            "SELECT {BREAK_FIELDS} FROM recon_breaks WHERE run_id = $1"
        ))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut breaks: Vec<Break> = all(rows, |row| Ok(stored_break(row)?.record))?;
        crate::store::rows::report_order(&mut breaks);
        Ok(Some((run, breaks)))
    }

    async fn latest_recon_run(
        &self,
        merchant_id: &str,
        account_id: &str,
        day: &str,
    ) -> Result<Option<ReconRun>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_FIELDS} FROM recon_runs WHERE merchant_id = $1 AND account_id = $2 AND day = $3 \
             ORDER BY finished_at DESC LIMIT 1"
        ))
        .bind(merchant_id)
        .bind(account_id)
        .bind(day)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(recon_run).transpose()
    }

    async fn recon_runs(
        &self,
        merchant_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ReconRun>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_FIELDS} FROM recon_runs WHERE ($1::TEXT IS NULL OR merchant_id = $1) \
             ORDER BY finished_at DESC LIMIT $2"
        ))
        .bind(merchant_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows, recon_run)
    }

    async fn breaks(
        &self,
        merchant_id: Option<&str>,
        status: Option<BreakStatus>,
        limit: u32,
    ) -> Result<Vec<StoredBreak>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {BREAK_FIELDS} FROM recon_breaks WHERE ($1::TEXT IS NULL OR merchant_id = $1) \
             AND ($2::TEXT IS NULL OR status = $2) ORDER BY updated_at DESC, id LIMIT $3"
        ))
        .bind(merchant_id)
        .bind(status.map(|s| s.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows, stored_break)
    }

    async fn break_by_id(
        &self,
        merchant_id: Option<&str>,
        break_id: &str,
    ) -> Result<Option<StoredBreak>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {BREAK_FIELDS} FROM recon_breaks WHERE id = $1 AND ($2::TEXT IS NULL OR merchant_id = $2)"
        ))
        .bind(break_id)
        .bind(merchant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(stored_break).transpose()
    }

    async fn set_break_status(
        &self,
        merchant_id: Option<&str>,
        break_id: &str,
        status: BreakStatus,
        note: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Option<StoredBreak>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE recon_breaks SET status = $3, note = $4, updated_at = $5 \
             WHERE id = $1 AND ($2::TEXT IS NULL OR merchant_id = $2) RETURNING {BREAK_FIELDS}"
        ))
        .bind(break_id)
        .bind(merchant_id)
        .bind(status.as_str())
        .bind(note)
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(stored_break).transpose()
    }

    async fn insert_repaired_payment(
        &self,
        payment: Payment,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Two repairs of one break take turns; the second finds the payment.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&payment.id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if load_payment(&mut tx, &payment.id, false).await?.is_some() {
            return Ok(false);
        }
        insert_payment(&mut tx, &payment).await?;
        sqlx::query("UPDATE payments SET paid_at = $2, next_check_at = NULL WHERE id = $1")
            .bind(&payment.id)
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        append_event(
            &mut tx,
            &payment.merchant_id,
            "payment.succeeded",
            &payment.id,
            payment.to_api_json(),
            now,
        )
        .await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }
}
