//! SQLite: payments, refunds and the provider attempt log.

use super::*;

#[async_trait]
impl PaymentStore for SqliteStore {
    async fn begin_payment(
        &self,
        idem: IdemClaim,
        payment: Payment,
    ) -> Result<Begin<Payment>, StoreError> {
        self.write(move |conn| {
            if let Some(found) = claim(conn, &idem, &payment.id)? {
                return Ok(cast(found));
            }
            let p = &payment;
            insert_payment(conn, p)?;
            append_event(
                conn,
                &p.merchant_id,
                "payment.created",
                &p.id,
                p.to_api_json(),
                p.created_at,
            )?;
            Ok(Begin::Fresh(payment))
        })
        .await
    }

    async fn refunds_held(&self, payment_id: &str) -> Result<i64, StoreError> {
        let payment_id = payment_id.to_owned();
        self.read(move |conn| {
            conn.row(
                "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE payment_id = ?1 AND status != 'failed'",
                params![payment_id],
                |row| row.get(0),
            )
            .map_err(db)
        })
        .await
    }

    async fn begin_refund(
        &self,
        idem: IdemClaim,
        refund: Refund,
    ) -> Result<Begin<Refund>, StoreError> {
        self.write(move |conn| {
            if let Some(found) = claim(conn, &idem, &refund.id)? {
                return Ok(cast(found));
            }
            let payment = load_payment(conn, &refund.payment_id)?;
            let held: i64 = conn
                .row(
                    "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE payment_id = ?1 AND status != 'failed'",
                    params![refund.payment_id],
                    |row| row.get(0),
                )
                .map_err(db)?;
            refund_fits(payment.as_ref(), &refund, held)?;
            let r = RefundRow::of(&refund)?;
            conn.exec(
                &format!("INSERT INTO refunds ({REFUND_COLUMNS}, next_check_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?9 + {FIRST_CHECK_MS})"),
                params![
                    r.id,
                    r.payment_id,
                    r.merchant_id,
                    r.amount,
                    r.currency,
                    r.reason,
                    r.status,
                    r.failure,
                    r.created_at,
                    r.updated_at
                ],
            )
            .map_err(db)?;
            append_event(conn, &refund.merchant_id, "refund.created", &refund.id, refund.to_api_json(), refund.created_at)?;
            Ok(Begin::Fresh(refund))
        })
        .await
    }

    async fn payment(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> Result<Option<Payment>, StoreError> {
        let (merchant_id, id) = (merchant_id.map(str::to_owned), id.to_owned());
        self.read(move |conn| {
            let found = load_payment(conn, &id)?;
            Ok(found.filter(|p| merchant_id.as_deref().is_none_or(|m| m == p.merchant_id)))
        })
        .await
    }

    async fn list_payments(
        &self,
        merchant_id: &str,
        starting_after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Payment>, bool), StoreError> {
        let (merchant_id, after) = (merchant_id.to_owned(), starting_after.map(str::to_owned));
        self.read(move |conn| {
            let cursor: i64 = match after {
                None => i64::MAX,
                Some(id) => conn
                    .row(
                        "SELECT seq FROM payments WHERE id = ?1 AND merchant_id = ?2",
                        params![id, merchant_id],
                        |row| row.get(0),
                    )
                    .optional()
                    .map_err(db)?
                    .ok_or_else(|| StoreError::Corrupt("cursor".into()))?,
            };
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE merchant_id = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
            let mut rows = stmt.query(params![merchant_id, cursor, i64::from(limit) + 1]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                out.push(payment_from_row(row)?);
            }
            let more = out.len() > usize::try_from(limit).unwrap_or(usize::MAX);
            out.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            Ok((out, more))
        })
        .await
    }

    async fn refund(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> Result<Option<Refund>, StoreError> {
        let (merchant_id, id) = (merchant_id.map(str::to_owned), id.to_owned());
        self.read(move |conn| {
            let found = load_refund(conn, &id)?;
            Ok(found.filter(|r| merchant_id.as_deref().is_none_or(|m| m == r.merchant_id)))
        })
        .await
    }

    async fn update_known(
        &self,
        known: &Payment,
        also: Also,
        now: OffsetDateTime,
        change: PaymentChange,
        attempts: Vec<Attempt>,
    ) -> Result<Updated<Payment>, StoreError> {
        // The writer reads the row in the same job (no round trip to save), after the
        // attempts' lines.
        let id = known.id.clone();
        self.write(move |conn| {
            for attempt in &attempts {
                insert_attempt(conn, attempt)?;
            }
            update_in(conn, &id, &also, now, Box::new(move |_| Some(change)))
        })
        .await
    }

    async fn update_payment(
        &self,
        id: &str,
        also: Also,
        now: OffsetDateTime,
        decide: PaymentDecision,
    ) -> Result<Updated<Payment>, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| update_in(conn, &id, &also, now, decide))
            .await
    }

    async fn update_refund(
        &self,
        id: &str,
        status: RefundStatus,
        failure: Option<Failure>,
        now: OffsetDateTime,
    ) -> Result<Updated<Refund>, StoreError> {
        let id = id.to_owned();
        self.write(move |conn| {
            let Some(mut refund) = load_refund(conn, &id)? else {
                return Ok(Updated::Missing);
            };
            if !refund.status.can_become(status) {
                return Ok(Updated::Done { record: refund, changed: false });
            }
            refund.status = status;
            refund.failure = failure;
            refund.updated_at = now;
            conn.exec(
                "UPDATE refunds SET status = ?2, failure = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, status.as_str(), json_opt(&refund.failure)?, ms(now)],
            )
            .map_err(db)?;
            let kind = format!("refund.{}", status.as_str());
            append_event(conn, &refund.merchant_id, &kind, &refund.id, refund.to_api_json(), now)?;
            if status == RefundStatus::Succeeded {
                conn.exec(
                    "UPDATE payments SET amount_refunded = amount_refunded + ?2, updated_at = ?3 WHERE id = ?1",
                    params![refund.payment_id, refund.amount, ms(now)],
                )
                .map_err(db)?;
                if let Some(payment) = load_payment(conn, &refund.payment_id)? {
                    append_event(conn, &payment.merchant_id, "payment.refunded", &payment.id, payment.to_api_json(), now)?;
                }
            }
            Ok(Updated::Done { record: refund, changed: true })
        })
        .await
    }

    /// Queued ahead, not awaited: the attempt log is what happened at the provider, and the
    /// change it led to (awaited by the caller) commits with it or after it.
    async fn record_attempt(&self, attempt: Attempt) -> Result<(), StoreError> {
        self.inner.writer.queue("provider attempt", move |conn| {
            insert_attempt(conn, &attempt)
        })
    }

    async fn attempts_for(&self, payment_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let payment_id = payment_id.to_owned();
        // Attempts are written ahead and may wait for the next commit: read them on the
        // writer, which sees its open batch (and commits it).
        self.write(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT payment_id, COALESCE(account_id, ''), refund_id, operation, started_at, elapsed_ms, outcome \
                     FROM attempts WHERE payment_id = ?1 ORDER BY seq",
                )
                .map_err(db)?;
            let mut rows = stmt.query(params![payment_id]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                let operation: String = row.get(3).map_err(db)?;
                out.push(Attempt {
                    payment_id: row.get(0).map_err(db)?,
                    account_id: row.get(1).map_err(db)?,
                    refund_id: row.get(2).map_err(db)?,
                    operation: operation_name(&operation),
                    started_at: from_ms(row.get(4).map_err(db)?)?,
                    elapsed_ms: row.get(5).map_err(db)?,
                    outcome: row.get(6).map_err(db)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn switch_account(
        &self,
        payment_id: &str,
        from: &str,
        to: &str,
        provider: ProviderKind,
        now: OffsetDateTime,
    ) -> Result<Option<Payment>, StoreError> {
        let (payment_id, from, to) = (payment_id.to_owned(), from.to_owned(), to.to_owned());
        self.write(move |conn| {
            let changed = conn
                .exec(
                    "UPDATE payments SET account_id = ?3, provider = ?4, updated_at = ?5 \
                     WHERE id = ?1 AND account_id = ?2 AND status = 'pending'",
                    params![payment_id, from, to, provider.as_str(), ms(now)],
                )
                .map_err(db)?;
            if changed == 0 {
                return Ok(None);
            }
            let payment = conn
                .row(
                    &format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?1"),
                    params![payment_id],
                    |row| Ok(payment_from_row(row)),
                )
                .map_err(db)??;
            Ok(Some(payment))
        })
        .await
    }
}

/// [`PaymentStore::update_payment`]'s job: `decide` on the payment as the writer reads it.
fn update_in(
    conn: &Connection,
    id: &str,
    also: &Also,
    now: OffsetDateTime,
    decide: PaymentDecision,
) -> Result<Updated<Payment>, StoreError> {
    let Some(mut payment) = load_payment(conn, id)? else {
        return Ok(Updated::Missing);
    };
    let done = |payment: Payment, changed| {
        if let Also::Answer(a) = also {
            super::keys::complete(
                conn,
                &a.merchant_id,
                &a.key,
                a.status,
                answer_body(&payment),
                now,
            )?;
        }
        Ok(Updated::Done {
            record: payment,
            changed,
        })
    };
    if let Also::Inbox(inbox) = also {
        let inserted = conn
            .exec(
                "INSERT OR IGNORE INTO inbox (provider, account, dedupe_id, payment_id, received_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![inbox.provider, inbox.account, inbox.dedupe_id, id, ms(now)],
            )
            .map_err(db)?;
        if inserted == 0 {
            return Ok(Updated::Duplicate);
        }
    }
    let Some(change) = decide(&payment) else {
        return done(payment, false);
    };
    let changed = apply_change(&mut payment, change);
    if !changed {
        return done(payment, false);
    }
    payment.updated_at = now;
    conn.exec(
        "UPDATE payments SET status = ?2, next_action = ?3, provider_ref = ?4, failure = ?5, updated_at = ?6, \
         paid_at = CASE WHEN ?2 = 'succeeded' THEN COALESCE(paid_at, ?6) ELSE paid_at END, payer = ?7 WHERE id = ?1",
        params![
            id,
            payment.status.as_str(),
            json_opt(&payment.next_action)?,
            payment.provider_ref,
            json_opt(&payment.failure)?,
            ms(now),
            to_json(&payment.payer)?
        ],
    )
    .map_err(db)?;
    let kind = format!("payment.{}", payment.status.as_str());
    append_event(
        conn,
        &payment.merchant_id,
        &kind,
        &payment.id,
        payment.to_api_json(),
        now,
    )?;
    done(payment, true)
}

/// One provider attempt's log line.
fn insert_attempt(conn: &Connection, attempt: &Attempt) -> Result<(), StoreError> {
    conn.exec(
        "INSERT INTO attempts (payment_id, refund_id, operation, started_at, elapsed_ms, outcome, account_id) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            attempt.payment_id,
            attempt.refund_id,
            attempt.operation,
            ms(attempt.started_at),
            attempt.elapsed_ms,
            attempt.outcome,
            attempt.account_id
        ],
    )
    .map_err(db)?;
    Ok(())
}
