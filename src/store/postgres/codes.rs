//! PostgreSQL: static payment codes.

use super::*;
use crate::ledger::code::Code;
use crate::store::CodeStore;
use crate::store::rows::{CODE_COLUMNS as COLUMNS, CodeRow};

fn decode(row: &PgRow) -> Result<Code, StoreError> {
    CodeRow {
        id: row.try_get(0).map_err(db)?,
        token_hash: row.try_get(1).map_err(db)?,
        merchant_id: row.try_get(2).map_err(db)?,
        name: row.try_get(3).map_err(db)?,
        tags: row.try_get(4).map_err(db)?,
        amount: row.try_get(5).map_err(db)?,
        currency: row.try_get(6).map_err(db)?,
        methods: row.try_get(7).map_err(db)?,
        expires_at: row.try_get(8).map_err(db)?,
        disabled_at: row.try_get(9).map_err(db)?,
        created_at: row.try_get(10).map_err(db)?,
    }
    .decode()
}

#[async_trait]
impl CodeStore for PgStore {
    async fn begin_code(&self, idem: IdemClaim, code: Code) -> Result<Begin<Code>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if let Some(found) = claim(&mut tx, &idem, &code.id).await? {
            return Ok(cast(found));
        }
        let r = CodeRow::of(&code)?;
        sqlx::query(&format!(
            "INSERT INTO codes ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
        ))
        .bind(r.id)
        .bind(r.token_hash)
        .bind(r.merchant_id)
        .bind(r.name)
        .bind(r.tags)
        .bind(r.amount)
        .bind(r.currency)
        .bind(r.methods)
        .bind(r.expires_at)
        .bind(r.disabled_at)
        .bind(r.created_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Begin::Fresh(code))
    }

    async fn code(&self, merchant_id: &str, id: &str) -> Result<Option<Code>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM codes WHERE id = $1 AND merchant_id = $2"
        ))
        .bind(id)
        .bind(merchant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(decode).transpose()
    }

    async fn code_by_token_hash(&self, hash: &str) -> Result<Option<Code>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM codes WHERE token_hash = $1"
        ))
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(decode).transpose()
    }

    async fn codes(
        &self,
        merchant_id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Code>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM codes WHERE merchant_id = $1 AND ($2::TEXT IS NULL OR seq < \
             (SELECT seq FROM codes WHERE id = $2 AND merchant_id = $1)) \
             ORDER BY seq DESC LIMIT $3"
        ))
        .bind(merchant_id)
        .bind(before)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(decode).collect()
    }

    async fn disable_code(
        &self,
        merchant_id: &str,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Code>, StoreError> {
        sqlx::query(
            "UPDATE codes SET disabled_at = $3 WHERE id = $1 AND merchant_id = $2 \
             AND disabled_at IS NULL",
        )
        .bind(id)
        .bind(merchant_id)
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        self.code(merchant_id, id).await
    }
}
