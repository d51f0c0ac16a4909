//! PostgreSQL: idempotency keys and request nonces.

use super::*;

#[async_trait]
impl KeyStore for PgStore {
    async fn remember_nonce(
        &self,
        merchant_id: &str,
        nonce: &str,
        now: OffsetDateTime,
        keep_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        insert_nonce(&self.ahead, merchant_id, nonce, keep_until, now).await
    }

    async fn purge_nonces(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.purge_below("nonces", "keep_until", ms(now)).await
    }

    async fn purge_keys(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.purge_below(
            "idempotency_keys",
            "created_at",
            ms(now) - IDEMPOTENCY_RETENTION_MS,
        )
        .await
    }

    async fn probe_write(&self, probe: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO nonces (merchant_id, nonce, keep_until) VALUES ('', $1, $2) \
             ON CONFLICT (merchant_id, nonce) DO UPDATE SET keep_until = excluded.keep_until",
        )
        .bind(probe)
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn claim_key(&self, idem: IdemClaim, resource_id: &str) -> Result<Begin<()>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let found = claim(&mut tx, &idem, resource_id).await?;
        tx.commit().await.map_err(db)?;
        Ok(found.unwrap_or(Begin::Fresh(())))
    }

    async fn complete_key(
        &self,
        merchant_id: &str,
        key: &str,
        status: u16,
        body: Vec<u8>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        complete(&mut conn, merchant_id, key, status, body, now).await
    }

    async fn release_key(&self, merchant_id: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 AND status IS NULL",
        )
        .bind(merchant_id)
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }
}

/// Stores a request's answer under its idempotency key.
pub(super) async fn complete(
    conn: &mut sqlx::PgConnection,
    merchant_id: &str,
    key: &str,
    status: u16,
    body: Vec<u8>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = $3, response = $4, completed_at = $5 \
         WHERE merchant_id = $1 AND key = $2",
    )
    .bind(merchant_id)
    .bind(key)
    .bind(i32::from(status))
    .bind(body)
    .bind(ms(now))
    .execute(conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// Rows deleted per purge slice.
const PURGE_SLICE: u64 = 1_000;

impl PgStore {
    /// Deletes the rows of `table` whose `column` (indexed) is below `before`, in slices, so no
    /// statement holds many row locks; instances skip each other's rows.
    async fn purge_below(
        &self,
        table: &'static str,
        column: &'static str,
        before: i64,
    ) -> Result<u64, StoreError> {
        let sql = format!(
            "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} WHERE {column} < $1 \
             LIMIT {PURGE_SLICE} FOR UPDATE SKIP LOCKED)"
        );
        let mut deleted = 0;
        loop {
            let slice = sqlx::query(&sql)
                .bind(before)
                .execute(&self.pool)
                .await
                .map_err(db)?
                .rows_affected();
            deleted += slice;
            if slice < PURGE_SLICE {
                return Ok(deleted);
            }
        }
    }
}

/// Remembers a request nonce; false when it was seen before and has not lapsed (a lapsed row of
/// the same nonce is taken over).
pub(super) async fn insert_nonce<'e>(
    executor: impl sqlx::PgExecutor<'e>,
    merchant_id: &str,
    nonce: &str,
    keep_until: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let inserted = sqlx::query(
        "INSERT INTO nonces (merchant_id, nonce, keep_until) VALUES ($1, $2, $3) \
         ON CONFLICT (merchant_id, nonce) DO UPDATE SET keep_until = excluded.keep_until \
         WHERE nonces.keep_until < $4",
    )
    .bind(merchant_id)
    .bind(nonce)
    .bind(ms(keep_until))
    .bind(ms(now))
    .execute(executor)
    .await
    .map_err(db)?
    .rows_affected();
    Ok(inserted == 1)
}
