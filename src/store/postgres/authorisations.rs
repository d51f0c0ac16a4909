//! PostgreSQL: merchants' authorisations of partners' apps and their start links. Each
//! decision is one conditional statement (on the link's state, the authorisation's version
//! or lease), so instances racing for a state or a refresh cannot both win.

use super::*;
use crate::store::{
    AuthorisationLink, AuthorisationStatus, AuthorisationStore, StoredAuthorisation,
};

const COLUMNS: &str = "merchant_id, account_id, partner_id, identity, user_id, token_sealed, \
     refresh_sealed, expires_at, refresh_expires_at, status, status_code, granted_at, updated_at, \
     version";

const LINK_COLUMNS: &str = "id, merchant_id, account_id, link_hash, created_at, expires_at";

fn authorisation(row: &PgRow) -> Result<StoredAuthorisation, StoreError> {
    let status: String = row.try_get(9).map_err(db)?;
    Ok(StoredAuthorisation {
        merchant_id: row.try_get(0).map_err(db)?,
        account_id: row.try_get(1).map_err(db)?,
        partner_id: row.try_get(2).map_err(db)?,
        identity: row.try_get(3).map_err(db)?,
        user_id: row.try_get(4).map_err(db)?,
        token_sealed: row.try_get(5).map_err(db)?,
        refresh_sealed: row.try_get(6).map_err(db)?,
        expires_at: from_ms(row.try_get(7).map_err(db)?)?,
        refresh_expires_at: row
            .try_get::<Option<i64>, _>(8)
            .map_err(db)?
            .map(from_ms)
            .transpose()?,
        status: AuthorisationStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("authorisation status {status:?}")))?,
        status_code: row.try_get(10).map_err(db)?,
        granted_at: from_ms(row.try_get(11).map_err(db)?)?,
        updated_at: from_ms(row.try_get(12).map_err(db)?)?,
        version: row.try_get(13).map_err(db)?,
    })
}

fn link(row: &PgRow) -> Result<AuthorisationLink, StoreError> {
    Ok(AuthorisationLink {
        id: row.try_get(0).map_err(db)?,
        merchant_id: row.try_get(1).map_err(db)?,
        account_id: row.try_get(2).map_err(db)?,
        link_hash: row.try_get(3).map_err(db)?,
        created_at: from_ms(row.try_get(4).map_err(db)?)?,
        expires_at: from_ms(row.try_get(5).map_err(db)?)?,
    })
}

#[async_trait]
impl AuthorisationStore for PgStore {
    async fn create_authorisation_link(&self, l: AuthorisationLink) -> Result<(), StoreError> {
        sqlx::query(&format!(
            "INSERT INTO authorisation_links ({LINK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(l.id)
        .bind(l.merchant_id)
        .bind(l.account_id)
        .bind(l.link_hash)
        .bind(ms(l.created_at))
        .bind(ms(l.expires_at))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn open_authorisation_link(
        &self,
        link_hash: &str,
        state_hash: &str,
        browser_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<AuthorisationLink>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE authorisation_links SET state_hash = $2, browser_hash = $3, opened_at = $4 \
             WHERE link_hash = $1 AND expires_at > $4 AND used_at IS NULL \
             RETURNING {LINK_COLUMNS}"
        ))
        .bind(link_hash)
        .bind(state_hash)
        .bind(browser_hash)
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(link).transpose()
    }

    async fn take_authorisation_state(
        &self,
        state_hash: &str,
        browser_hash: &str,
        now: OffsetDateTime,
        opened_after: OffsetDateTime,
    ) -> Result<Option<AuthorisationLink>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE authorisation_links SET state_hash = NULL, browser_hash = NULL \
             WHERE state_hash = $1 AND browser_hash = $2 AND expires_at > $3 \
             AND opened_at > $4 AND used_at IS NULL RETURNING {LINK_COLUMNS}"
        ))
        .bind(state_hash)
        .bind(browser_hash)
        .bind(ms(now))
        .bind(ms(opened_after))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(link).transpose()
    }

    async fn save_authorisation(
        &self,
        a: StoredAuthorisation,
        link_id: Option<&str>,
    ) -> Result<i64, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let version: i64 = sqlx::query_scalar(&format!(
            "INSERT INTO authorisations AS a ({COLUMNS}) VALUES \
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'active', NULL, $10, $10, 1) \
             ON CONFLICT (merchant_id, account_id) DO UPDATE SET \
             partner_id = excluded.partner_id, identity = excluded.identity, \
             user_id = excluded.user_id, token_sealed = excluded.token_sealed, \
             refresh_sealed = excluded.refresh_sealed, expires_at = excluded.expires_at, \
             refresh_expires_at = excluded.refresh_expires_at, status = 'active', \
             status_code = NULL, granted_at = excluded.granted_at, \
             updated_at = excluded.updated_at, version = a.version + 1, \
             refresh_lease_until = NULL \
             RETURNING version"
        ))
        .bind(&a.merchant_id)
        .bind(&a.account_id)
        .bind(&a.partner_id)
        .bind(&a.identity)
        .bind(&a.user_id)
        .bind(&a.token_sealed)
        .bind(&a.refresh_sealed)
        .bind(ms(a.expires_at))
        .bind(a.refresh_expires_at.map(ms))
        .bind(ms(a.granted_at))
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        if let Some(link_id) = link_id {
            sqlx::query(
                "UPDATE authorisation_links SET used_at = $2, state_hash = NULL, \
                 browser_hash = NULL WHERE id = $1",
            )
            .bind(link_id)
            .bind(ms(a.granted_at))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(version)
    }

    async fn authorisations(
        &self,
        merchant_id: Option<&str>,
    ) -> Result<Vec<StoredAuthorisation>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM authorisations WHERE $1::TEXT IS NULL OR merchant_id = $1 \
             ORDER BY merchant_id, account_id"
        ))
        .bind(merchant_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(authorisation).collect()
    }

    async fn claim_authorisation_refresh(
        &self,
        merchant_id: &str,
        account_id: &str,
        version: i64,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE authorisations SET refresh_lease_until = $4 \
             WHERE merchant_id = $1 AND account_id = $2 AND version = $3 \
             AND (refresh_lease_until IS NULL OR refresh_lease_until <= $5)",
        )
        .bind(merchant_id)
        .bind(account_id)
        .bind(version)
        .bind(ms(lease_until))
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_authorisation_status(
        &self,
        merchant_id: &str,
        account_id: &str,
        version: i64,
        status: AuthorisationStatus,
        code: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE authorisations SET status = $4, status_code = $5, updated_at = $6, \
             version = version + 1, refresh_lease_until = NULL \
             WHERE merchant_id = $1 AND account_id = $2 AND version = $3",
        )
        .bind(merchant_id)
        .bind(account_id)
        .bind(version)
        .bind(status.as_str())
        .bind(code)
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge_authorisation_links(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM authorisation_links WHERE expires_at <= $1 OR used_at IS NOT NULL",
        )
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }
}
