//! PostgreSQL: payments, refunds and the provider attempt log.

use super::*;

#[async_trait]
impl PaymentStore for PgStore {
    async fn begin_payment(
        &self,
        idem: IdemClaim,
        payment: Payment,
    ) -> Result<Begin<Payment>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if let Some(found) = claim(&mut tx, &idem, &payment.id).await? {
            return Ok(cast(found));
        }
        insert_payment(&mut tx, &payment).await?;
        append_event(
            &mut tx,
            &payment.merchant_id,
            "payment.created",
            &payment.id,
            payment.to_api_json(),
            payment.created_at,
        )
        .await?;
        tx.commit().await.map_err(db)?;
        Ok(Begin::Fresh(payment))
    }

    async fn refunds_held(&self, payment_id: &str) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount), 0)::BIGINT FROM refunds WHERE payment_id = $1 AND status != 'failed'",
        )
        .bind(payment_id)
        .fetch_one(&self.pool)
        .await
        .map_err(db)
    }

    async fn begin_refund(
        &self,
        idem: IdemClaim,
        refund: Refund,
    ) -> Result<Begin<Refund>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if let Some(found) = claim(&mut tx, &idem, &refund.id).await? {
            return Ok(cast(found));
        }
        // The payment's lock serialises refunds of one payment across instances.
        let payment = load_payment(&mut tx, &refund.payment_id, true).await?;
        let held: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount), 0)::BIGINT FROM refunds WHERE payment_id = $1 AND status != 'failed'",
        )
        .bind(&refund.payment_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        refund_fits(payment.as_ref(), &refund, held)?;
        let r = RefundRow::of(&refund)?;
        sqlx::query(&format!(
            "INSERT INTO refunds ({REFUND_COLUMNS}, next_check_at) VALUES ($1, $2, $3, $4, $5, $6, \
             $7, $8, $9, $10, $9 + {FIRST_CHECK_MS})"
        ))
        .bind(r.id)
        .bind(r.payment_id)
        .bind(r.merchant_id)
        .bind(r.amount)
        .bind(r.currency)
        .bind(r.reason)
        .bind(r.status)
        .bind(r.failure)
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        append_event(
            &mut tx,
            &refund.merchant_id,
            "refund.created",
            &refund.id,
            refund.to_api_json(),
            refund.created_at,
        )
        .await?;
        tx.commit().await.map_err(db)?;
        Ok(Begin::Fresh(refund))
    }

    async fn payment(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> Result<Option<Payment>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let found = load_payment(&mut conn, id, false).await?;
        Ok(found.filter(|p| merchant_id.is_none_or(|m| m == p.merchant_id)))
    }

    async fn list_payments(
        &self,
        merchant_id: &str,
        starting_after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Payment>, bool), StoreError> {
        let cursor: i64 = match starting_after {
            None => i64::MAX,
            Some(id) => {
                sqlx::query_scalar("SELECT seq FROM payments WHERE id = $1 AND merchant_id = $2")
                    .bind(id)
                    .bind(merchant_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?
                    .ok_or_else(|| StoreError::Corrupt("cursor".into()))?
            }
        };
        let rows = sqlx::query(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE merchant_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        ))
        .bind(merchant_id)
        .bind(cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out = all(rows, payment)?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = out.len() > limit;
        out.truncate(limit);
        Ok((out, more))
    }

    async fn refund(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> Result<Option<Refund>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let found = load_refund(&mut conn, id, false).await?;
        Ok(found.filter(|r| merchant_id.is_none_or(|m| m == r.merchant_id)))
    }

    async fn update_payment(
        &self,
        id: &str,
        also: Also,
        now: OffsetDateTime,
        decide: PaymentDecision,
    ) -> Result<Updated<Payment>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The payment's lock orders every writer of it, on every instance.
        let Some(mut payment) = load_payment(&mut tx, id, true).await? else {
            return Ok(Updated::Missing);
        };
        if let Also::Inbox(inbox) = &also {
            let inserted = sqlx::query(
                "INSERT INTO inbox (provider, account, dedupe_id, payment_id, received_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(&inbox.provider)
            .bind(&inbox.account)
            .bind(&inbox.dedupe_id)
            .bind(id)
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            if inserted == 0 {
                return Ok(Updated::Duplicate);
            }
        }
        let Some(change) = decide(&payment) else {
            return done(tx, &also, payment, false, now).await;
        };
        if !apply_change(&mut payment, change) {
            return done(tx, &also, payment, false, now).await;
        }
        payment.updated_at = now;
        let row = PaymentRow::of(&payment)?;
        sqlx::query(
            "UPDATE payments SET status = $2, next_action = $3, provider_ref = $4, failure = $5, \
             updated_at = $6, paid_at = CASE WHEN $2 = 'succeeded' THEN COALESCE(paid_at, $6) \
             ELSE paid_at END, payer = $7 WHERE id = $1",
        )
        .bind(id)
        .bind(row.status)
        .bind(row.next_action)
        .bind(row.provider_ref)
        .bind(row.failure)
        .bind(ms(now))
        .bind(row.payer)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let kind = format!("payment.{}", payment.status.as_str());
        append_event(
            &mut tx,
            &payment.merchant_id,
            &kind,
            &payment.id,
            payment.to_api_json(),
            now,
        )
        .await?;
        done(tx, &also, payment, true, now).await
    }

    async fn update_refund(
        &self,
        id: &str,
        status: RefundStatus,
        failure: Option<Failure>,
        now: OffsetDateTime,
    ) -> Result<Updated<Refund>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let Some(mut refund) = load_refund(&mut tx, id, true).await? else {
            return Ok(Updated::Missing);
        };
        if !refund.status.can_become(status) {
            tx.commit().await.map_err(db)?;
            return Ok(Updated::Done {
                record: refund,
                changed: false,
            });
        }
        refund.status = status;
        refund.failure = failure;
        refund.updated_at = now;
        let row = RefundRow::of(&refund)?;
        sqlx::query("UPDATE refunds SET status = $2, failure = $3, updated_at = $4 WHERE id = $1")
            .bind(id)
            .bind(row.status)
            .bind(row.failure)
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let kind = format!("refund.{}", status.as_str());
        append_event(
            &mut tx,
            &refund.merchant_id,
            &kind,
            &refund.id,
            refund.to_api_json(),
            now,
        )
        .await?;
        if status == RefundStatus::Succeeded {
            sqlx::query(
                "UPDATE payments SET amount_refunded = amount_refunded + $2, updated_at = $3 WHERE id = $1",
            )
            .bind(&refund.payment_id)
            .bind(refund.amount)
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            if let Some(payment) = load_payment(&mut tx, &refund.payment_id, false).await? {
                append_event(
                    &mut tx,
                    &payment.merchant_id,
                    "payment.refunded",
                    &payment.id,
                    payment.to_api_json(),
                    now,
                )
                .await?;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(Updated::Done {
            record: refund,
            changed: true,
        })
    }

    async fn record_attempt(&self, attempt: Attempt) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO attempts (payment_id, refund_id, operation, started_at, elapsed_ms, outcome, account_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&attempt.payment_id)
        .bind(&attempt.refund_id)
        .bind(attempt.operation)
        .bind(ms(attempt.started_at))
        .bind(attempt.elapsed_ms)
        .bind(&attempt.outcome)
        .bind(&attempt.account_id)
        .execute(&self.ahead)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn attempts_for(&self, payment_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let rows = sqlx::query(
            "SELECT payment_id, COALESCE(account_id, ''), refund_id, operation, started_at, elapsed_ms, outcome \
             FROM attempts WHERE payment_id = $1 ORDER BY seq",
        )
        .bind(payment_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows, |row| {
            let operation: String = get(row, 3)?;
            Ok(Attempt {
                payment_id: get(row, 0)?,
                account_id: get(row, 1)?,
                refund_id: get(row, 2)?,
                operation: operation_name(&operation),
                started_at: from_ms(get(row, 4)?)?,
                elapsed_ms: get(row, 5)?,
                outcome: get(row, 6)?,
            })
        })
    }

    async fn switch_account(
        &self,
        payment_id: &str,
        from: &str,
        to: &str,
        provider: ProviderKind,
        now: OffsetDateTime,
    ) -> Result<Option<Payment>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE payments SET account_id = $3, provider = $4, updated_at = $5 \
             WHERE id = $1 AND account_id = $2 AND status = 'pending' RETURNING {PAYMENT_COLUMNS}"
        ))
        .bind(payment_id)
        .bind(from)
        .bind(to)
        .bind(provider.as_str())
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(payment).transpose()
    }
}

/// Ends a payment update: the request's answer under its key when [`Also::Answer`], then the
/// commit.
async fn done(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    also: &Also,
    payment: Payment,
    changed: bool,
    now: OffsetDateTime,
) -> Result<Updated<Payment>, StoreError> {
    if let Also::Answer(a) = also {
        super::keys::complete(
            &mut tx,
            &a.merchant_id,
            &a.key,
            a.status,
            answer_body(&payment),
            now,
        )
        .await?;
    }
    tx.commit().await.map_err(db)?;
    Ok(Updated::Done {
        record: payment,
        changed,
    })
}
