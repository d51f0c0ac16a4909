//! SQLite: idempotency keys and request nonces.

use super::*;

#[async_trait]
impl KeyStore for SqliteStore {
    async fn remember_nonce(
        &self,
        merchant_id: &str,
        nonce: &str,
        now: OffsetDateTime,
        keep_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (merchant_id, nonce) = (merchant_id.to_owned(), nonce.to_owned());
        self.write_ahead(move |conn| insert_nonce(conn, &merchant_id, &nonce, keep_until, now))
            .await
    }

    async fn purge_nonces(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.purge_oldest("nonces", "keep_until", ms(now)).await
    }

    async fn purge_keys(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.purge_oldest(
            "idempotency_keys",
            "created_at",
            ms(now) - IDEMPOTENCY_RETENTION_MS,
        )
        .await
    }

    async fn probe_write(&self, probe: &str, now: OffsetDateTime) -> Result<(), StoreError> {
        let probe = probe.to_owned();
        self.write(move |conn| {
            conn.exec(
                "INSERT INTO nonces (merchant_id, nonce, keep_until) VALUES ('', ?1, ?2) \
                 ON CONFLICT (merchant_id, nonce) DO UPDATE SET keep_until = excluded.keep_until",
                params![probe, ms(now)],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn claim_key(&self, idem: IdemClaim, resource_id: &str) -> Result<Begin<()>, StoreError> {
        let resource_id = resource_id.to_owned();
        self.write(move |conn| {
            let found = claim(conn, &idem, &resource_id)?;
            Ok(found.unwrap_or(Begin::Fresh(())))
        })
        .await
    }

    async fn complete_key(
        &self,
        merchant_id: &str,
        key: &str,
        status: u16,
        body: Vec<u8>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (merchant_id, key) = (merchant_id.to_owned(), key.to_owned());
        self.write(move |conn| complete(conn, &merchant_id, &key, status, body, now))
            .await
    }

    async fn release_key(&self, merchant_id: &str, key: &str) -> Result<(), StoreError> {
        let (merchant_id, key) = (merchant_id.to_owned(), key.to_owned());
        self.write(move |conn| {
            conn.exec(
                "DELETE FROM idempotency_keys WHERE merchant_id = ?1 AND key = ?2 AND status IS NULL",
                params![merchant_id, key],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }
}

/// Stores a request's answer under its idempotency key.
pub(super) fn complete(
    conn: &Connection,
    merchant_id: &str,
    key: &str,
    status: u16,
    body: Vec<u8>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    conn.exec(
        "UPDATE idempotency_keys SET status = ?3, response = ?4, completed_at = ?5 \
         WHERE merchant_id = ?1 AND key = ?2",
        params![merchant_id, key, status, body, ms(now)],
    )
    .map_err(db)?;
    Ok(())
}

/// Rows looked at per purge slice.
const PURGE_WINDOW: u32 = 2_000;

/// Slices a purge pass takes at most (the rest waits for the next pass).
const PURGE_SLICES: u32 = 64;

impl SqliteStore {
    /// Deletes the rows of `table` whose `column` is below `before`, oldest first, without an
    /// index: rows are appended in time order, so the lowest rowids are the oldest, and each
    /// slice looks at the next [`PURGE_WINDOW`] of them only. A slice is one short job of the
    /// writer, never a scan of the table holding every request's commit.
    async fn purge_oldest(
        &self,
        table: &'static str,
        column: &'static str,
        before: i64,
    ) -> Result<u64, StoreError> {
        let mut deleted = 0_u64;
        for _ in 0..PURGE_SLICES {
            let slice = self
                .write(move |conn| {
                    let gone = conn
                        .exec(
                            &format!(
                                "DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM \
                                 (SELECT rowid, {column} AS t FROM {table} ORDER BY rowid \
                                  LIMIT {PURGE_WINDOW}) WHERE t < ?1)"
                            ),
                            params![before],
                        )
                        .map_err(db)?;
                    Ok(gone as u64)
                })
                .await?;
            deleted += slice;
            if slice == 0 {
                break;
            }
        }
        Ok(deleted)
    }
}

/// Remembers a request nonce; false when it was seen before and has not lapsed (a lapsed row of
/// the same nonce is taken over).
pub(super) fn insert_nonce(
    conn: &Connection,
    merchant_id: &str,
    nonce: &str,
    keep_until: OffsetDateTime,
    now: OffsetDateTime,
) -> Result<bool, StoreError> {
    let inserted = conn
        .exec(
            "INSERT INTO nonces (merchant_id, nonce, keep_until) VALUES (?1, ?2, ?3) \
             ON CONFLICT (merchant_id, nonce) DO UPDATE SET keep_until = excluded.keep_until \
             WHERE nonces.keep_until < ?4",
            params![merchant_id, nonce, ms(keep_until), ms(now)],
        )
        .map_err(db)?;
    Ok(inserted == 1)
}
