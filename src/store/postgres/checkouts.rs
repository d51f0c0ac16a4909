//! PostgreSQL: checkouts and their payments.

use super::*;

#[async_trait]
impl CheckoutStore for PgStore {
    async fn begin_checkout(
        &self,
        idem: IdemClaim,
        checkout: Checkout,
    ) -> Result<Begin<Checkout>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if let Some(found) = claim(&mut tx, &idem, &checkout.id).await? {
            return Ok(cast(found));
        }
        let r = CheckoutRow::of(&checkout)?;
        sqlx::query(&format!(
            "INSERT INTO checkouts ({CHECKOUT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11, $12, $13, $14, $15, $16)"
        ))
        .bind(r.id)
        .bind(r.token_hash)
        .bind(r.merchant_id)
        .bind(r.amount)
        .bind(r.currency)
        .bind(r.merchant_reference)
        .bind(r.description)
        .bind(r.return_url)
        .bind(r.cancel_url)
        .bind(r.methods)
        .bind(r.openid)
        .bind(r.metadata)
        .bind(r.expires_at)
        .bind(r.created_at)
        .bind(r.payment_id)
        .bind(r.legacy_token)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Begin::Fresh(checkout))
    }

    async fn checkout(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> Result<Option<Checkout>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CHECKOUT_COLUMNS} FROM checkouts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let found = row.as_ref().map(checkout).transpose()?;
        Ok(found.filter(|c| merchant_id.is_none_or(|m| m == c.merchant_id)))
    }

    async fn checkout_by_token_hash(&self, hash: &str) -> Result<Option<Checkout>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CHECKOUT_COLUMNS} FROM checkouts WHERE token_hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(checkout).transpose()
    }

    async fn forget_legacy_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let cleared = sqlx::query(
            "UPDATE checkouts SET legacy_token = NULL \
             WHERE legacy_token IS NOT NULL AND expires_at <= $1",
        )
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(cleared)
    }

    async fn begin_checkout_payment(
        &self,
        checkout_id: &str,
        expected: Option<&str>,
        payment: Payment,
        max_payments: usize,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The checkout's lock orders competing choices, on every instance.
        let current = sqlx::query("SELECT payment_id FROM checkouts WHERE id = $1 FOR UPDATE")
            .bind(checkout_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let Some(current) = current else {
            return Ok(false);
        };
        let current: Option<String> = get(&current, 0)?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        let opened: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM checkout_payments WHERE checkout_id = $1")
                .bind(checkout_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        if usize::try_from(opened).unwrap_or(usize::MAX) >= max_payments {
            return Ok(false);
        }
        sqlx::query("UPDATE checkouts SET payment_id = $2 WHERE id = $1")
            .bind(checkout_id)
            .bind(&payment.id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO checkout_payments (payment_id, checkout_id, opened_at) VALUES ($1, $2, $3)",
        )
        .bind(&payment.id)
        .bind(checkout_id)
        .bind(ms(payment.created_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
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
        Ok(true)
    }

    async fn begin_payer_identity(
        &self,
        state_hash: &str,
        checkout_id: &str,
        browser_hash: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO payer_identity_states (state_hash, checkout_id, browser_hash, created_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(state_hash)
        .bind(checkout_id)
        .bind(browser_hash)
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn take_payer_identity(
        &self,
        state_hash: &str,
        browser_hash: &str,
        made_after: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        sqlx::query_scalar(
            "DELETE FROM payer_identity_states WHERE state_hash = $1 AND browser_hash = $2 \
             AND created_at > $3 RETURNING checkout_id",
        )
        .bind(state_hash)
        .bind(browser_hash)
        .bind(ms(made_after))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)
    }

    async fn set_checkout_openid(
        &self,
        checkout_id: &str,
        openid: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE checkouts SET openid = $2 WHERE id = $1 AND openid IS NULL")
            .bind(checkout_id)
            .bind(openid)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge_payer_identities(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM payer_identity_states WHERE created_at <= $1")
            .bind(ms(before))
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn checkout_payments(&self, checkout_id: &str) -> Result<Vec<Payment>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id IN \
             (SELECT payment_id FROM checkout_payments WHERE checkout_id = $1) ORDER BY seq"
        ))
        .bind(checkout_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows, payment)
    }
}
