//! PostgreSQL: payments, refunds and the provider attempt log.

use super::*;

#[async_trait]
impl PaymentStore for PgStore {
    async fn begin_payment(
        &self,
        idem: IdemClaim,
        payment: Payment,
    ) -> Result<Begin<Payment>, StoreError> {
        // A fresh key (the usual case) in one statement, one round trip, its own transaction.
        let row = begin_fresh(&self.pool, &idem, &payment).await?;
        let (nonce_fresh, key_fresh): (bool, bool) = (get(&row, 0)?, get(&row, 1)?);
        if !nonce_fresh {
            return Err(StoreError::NonceReused);
        }
        if key_fresh {
            return Ok(Begin::Fresh(payment));
        }
        // The key was taken (its nonce is now remembered, as on SQLite): what it says, in a
        // transaction of its own (a key released meanwhile is claimed there, with the payment).
        let idem = IdemClaim {
            nonce: None,
            ..idem
        };
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
        let sql = format!("UPDATE payments SET {CHANGE_SET} WHERE id = $1");
        bind_change(sqlx::query(&sql), id, PaymentRow::of(&payment)?, now)
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

    async fn update_known(
        &self,
        known: &Payment,
        also: Also,
        now: OffsetDateTime,
        change: PaymentChange,
        attempts: Vec<Attempt>,
    ) -> Result<Updated<Payment>, StoreError> {
        let mut after = known.clone();
        // A notification's inbox row, or a change that changes nothing, takes the locked path
        // (after the attempts' lines, written on their own).
        if !matches!(also, Also::Inbox(_)) && apply_change(&mut after, change.clone()) {
            after.updated_at = now;
            // The attempts' lines are written by this statement whether or not the row moved.
            if write_known(&self.pool, known, &after, &also, now, &attempts).await? {
                return Ok(Updated::Done {
                    record: after,
                    changed: true,
                });
            }
        } else {
            for attempt in attempts {
                self.record_attempt(attempt).await?;
            }
        }
        self.update_payment(&known.id, also, now, Box::new(move |_| Some(change)))
            .await
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

/// A payment's first write in one statement (one round trip, its own transaction), each part
/// conditional on the one before: the request's nonce (unless it is a replay), the idempotency
/// key (unless it is held: nothing more is written, and the caller reads what it says), the
/// payment, its `payment.created` event and that event's outbox row. Answers two flags: the
/// nonce was fresh (or there was none), the key was fresh.
async fn begin_fresh(
    pool: &PgPool,
    idem: &IdemClaim,
    payment: &Payment,
) -> Result<PgRow, StoreError> {
    let event_id = new_id("evt");
    let body = event_json(
        &event_id,
        "payment.created",
        payment.created_at,
        payment.to_api_json(),
    )
    .to_string();
    let now = ms(idem.now);
    let (nonce, keep_until) = match &idem.nonce {
        Some(n) => (Some(n.nonce.as_str()), ms(n.keep_until)),
        None => (None, 0),
    };
    // $1–$23 the payment's columns, then the claim's.
    let sql = format!(
        "WITH n AS (\
           INSERT INTO nonces (merchant_id, nonce, keep_until) SELECT $24, $25, $26 \
           WHERE $25::TEXT IS NOT NULL \
           ON CONFLICT (merchant_id, nonce) DO UPDATE SET keep_until = excluded.keep_until \
           WHERE nonces.keep_until < $27 RETURNING 1), \
         k AS (\
           INSERT INTO idempotency_keys (merchant_id, key, request_hash, resource_id, created_at) \
           SELECT $24, $28, $29, $1, $27 WHERE $25::TEXT IS NULL OR EXISTS (SELECT 1 FROM n) \
           ON CONFLICT (merchant_id, key) DO UPDATE SET \
           request_hash = excluded.request_hash, resource_id = excluded.resource_id, \
           status = NULL, response = NULL, created_at = excluded.created_at, completed_at = NULL \
           WHERE idempotency_keys.created_at < $30 RETURNING 1), \
         p AS (\
           INSERT INTO payments ({PAYMENT_COLUMNS}, next_check_at) \
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
           $18, $19, $20, $21, $22, $23, $19 + {FIRST_CHECK_MS} \
           WHERE EXISTS (SELECT 1 FROM k) RETURNING id), \
         e AS (\
           INSERT INTO events (id, merchant_id, type, object_id, body, created_at) \
           SELECT $31, $2, 'payment.created', p.id, $32, $19 FROM p RETURNING seq), \
         o AS (\
           INSERT INTO outbox (event_seq, merchant_id, next_attempt_at) SELECT seq, $2, $19 FROM e) \
         SELECT $25::TEXT IS NULL OR EXISTS (SELECT 1 FROM n), EXISTS (SELECT 1 FROM k)"
    );
    bind_payment(sqlx::query(&sql), PaymentRow::of(payment)?)
        .bind(&idem.merchant_id)
        .bind(nonce)
        .bind(keep_until)
        .bind(now)
        .bind(&idem.key)
        .bind(&idem.request_hash)
        .bind(now - IDEMPOTENCY_RETENTION_MS)
        .bind(&event_id)
        .bind(&body)
        .fetch_one(pool)
        .await
        .map_err(db)
}

/// A decided change of `known` into `after` in one statement (one round trip, its own
/// transaction), provided the row still holds every column the decision read as `known` has
/// it (any other writer's change since moved at least one of them): the change, its event and
/// outbox row, and the request's answer under its key when [`Also::Answer`]; and, either way,
/// the `attempts`' log lines. False when the row had moved on, and nothing but those lines
/// was written.
///
/// The snapshot is compared as one row: compared column by column, `provider` and
/// `account_id` would let a generic plan pick the `(provider, account_id, provider_order_id)`
/// index, whose prefix is every payment of the account, over the id's.
async fn write_known(
    pool: &PgPool,
    known: &Payment,
    after: &Payment,
    also: &Also,
    now: OffsetDateTime,
    attempts: &[Attempt],
) -> Result<bool, StoreError> {
    let (was, row) = (PaymentRow::of(known)?, PaymentRow::of(after)?);
    let kind = format!("payment.{}", after.status.as_str());
    let event_id = new_id("evt");
    let body = event_json(&event_id, &kind, now, after.to_api_json()).to_string();
    let (key_merchant, key, status, answer) = match also {
        Also::Answer(a) => (
            Some(a.merchant_id.as_str()),
            Some(a.key.as_str()),
            Some(i32::from(a.status)),
            Some(answer_body(after)),
        ),
        _ => (None, None, None, None),
    };
    let sql = format!(
        "WITH u AS (\
           UPDATE payments SET {CHANGE_SET} \
           WHERE id = $1 AND (status, next_action, provider_ref, failure, payer, updated_at, \
           account_id, provider, amount_refunded, return_url) \
           IS NOT DISTINCT FROM ($8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
           RETURNING merchant_id), \
         e AS (\
           INSERT INTO events (id, merchant_id, type, object_id, body, created_at) \
           SELECT $18, merchant_id, $19, $1, $20, $6 FROM u RETURNING seq, merchant_id), \
         o AS (\
           INSERT INTO outbox (event_seq, merchant_id, next_attempt_at) \
           SELECT seq, merchant_id, $6 FROM e), \
         k AS (\
           UPDATE idempotency_keys SET status = $23, response = $24, completed_at = $6 \
           WHERE merchant_id = $21 AND key = $22 AND EXISTS (SELECT 1 FROM u)), \
         a AS (\
           INSERT INTO attempts (payment_id, refund_id, operation, started_at, elapsed_ms, \
           outcome, account_id) SELECT * FROM UNNEST($25::TEXT[], $26::TEXT[], $27::TEXT[], \
           $28::BIGINT[], $29::BIGINT[], $30::TEXT[], $31::TEXT[])) \
         SELECT EXISTS (SELECT 1 FROM u)"
    );
    let row = bind_change(sqlx::query(&sql), &after.id, row, now)
        .bind(was.status)
        .bind(was.next_action)
        .bind(was.provider_ref)
        .bind(was.failure)
        .bind(was.payer)
        .bind(was.updated_at)
        .bind(was.account_id)
        .bind(was.provider)
        .bind(was.amount_refunded)
        .bind(was.return_url)
        .bind(&event_id)
        .bind(&kind)
        .bind(&body)
        .bind(key_merchant)
        .bind(key)
        .bind(status)
        .bind(answer)
        .bind(
            attempts
                .iter()
                .map(|a| a.payment_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|a| a.refund_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(attempts.iter().map(|a| a.operation).collect::<Vec<_>>())
        .bind(
            attempts
                .iter()
                .map(|a| ms(a.started_at))
                .collect::<Vec<_>>(),
        )
        .bind(attempts.iter().map(|a| a.elapsed_ms).collect::<Vec<_>>())
        .bind(
            attempts
                .iter()
                .map(|a| a.outcome.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            attempts
                .iter()
                .map(|a| a.account_id.as_str())
                .collect::<Vec<_>>(),
        )
        .fetch_one(pool)
        .await
        .map_err(db)?;
    get(&row, 0)
}
