//! SQLite: merchants' authorisations of partners' apps and their start links.

use super::*;
use crate::store::{
    AuthorisationLink, AuthorisationStatus, AuthorisationStore, StoredAuthorisation,
};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS authorisations (
    merchant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    partner_id TEXT NOT NULL,
    identity TEXT NOT NULL,
    user_id TEXT,
    token_sealed TEXT NOT NULL,
    refresh_sealed TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    refresh_expires_at INTEGER,
    status TEXT NOT NULL,
    status_code TEXT,
    granted_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    version INTEGER NOT NULL,
    refresh_lease_until INTEGER,
    PRIMARY KEY (merchant_id, account_id)
);
CREATE TABLE IF NOT EXISTS authorisation_links (
    id TEXT PRIMARY KEY,
    merchant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    link_hash TEXT NOT NULL UNIQUE,
    state_hash TEXT UNIQUE,
    browser_hash TEXT,
    opened_at INTEGER,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);
"#;

const COLUMNS: &str = "merchant_id, account_id, partner_id, identity, user_id, token_sealed, \
     refresh_sealed, expires_at, refresh_expires_at, status, status_code, granted_at, updated_at, \
     version";

const LINK_COLUMNS: &str = "id, merchant_id, account_id, link_hash, created_at, expires_at";

fn authorisation(row: &Row<'_>) -> Result<StoredAuthorisation, StoreError> {
    let status: String = row.get(9).map_err(db)?;
    Ok(StoredAuthorisation {
        merchant_id: row.get(0).map_err(db)?,
        account_id: row.get(1).map_err(db)?,
        partner_id: row.get(2).map_err(db)?,
        identity: row.get(3).map_err(db)?,
        user_id: row.get(4).map_err(db)?,
        token_sealed: row.get(5).map_err(db)?,
        refresh_sealed: row.get(6).map_err(db)?,
        expires_at: from_ms(row.get(7).map_err(db)?)?,
        refresh_expires_at: row
            .get::<_, Option<i64>>(8)
            .map_err(db)?
            .map(from_ms)
            .transpose()?,
        status: AuthorisationStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("authorisation status {status:?}")))?,
        status_code: row.get(10).map_err(db)?,
        granted_at: from_ms(row.get(11).map_err(db)?)?,
        updated_at: from_ms(row.get(12).map_err(db)?)?,
        version: row.get(13).map_err(db)?,
    })
}

fn link(row: &Row<'_>) -> rusqlite::Result<(String, String, String, String, i64, i64)> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

fn link_of(
    found: Option<(String, String, String, String, i64, i64)>,
) -> Result<Option<AuthorisationLink>, StoreError> {
    found
        .map(
            |(id, merchant_id, account_id, link_hash, created_at, expires_at)| {
                Ok(AuthorisationLink {
                    id,
                    merchant_id,
                    account_id,
                    link_hash,
                    created_at: from_ms(created_at)?,
                    expires_at: from_ms(expires_at)?,
                })
            },
        )
        .transpose()
}

#[async_trait]
impl AuthorisationStore for SqliteStore {
    async fn create_authorisation_link(&self, link: AuthorisationLink) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.exec(
                &format!("INSERT INTO authorisation_links ({LINK_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"),
                params![
                    link.id,
                    link.merchant_id,
                    link.account_id,
                    link.link_hash,
                    ms(link.created_at),
                    ms(link.expires_at)
                ],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn open_authorisation_link(
        &self,
        link_hash: &str,
        state_hash: &str,
        browser_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<AuthorisationLink>, StoreError> {
        let (link_hash, state_hash, browser_hash) = (
            link_hash.to_owned(),
            state_hash.to_owned(),
            browser_hash.to_owned(),
        );
        self.write(move |conn| {
            let found = conn
                .row(
                    &format!(
                        "UPDATE authorisation_links SET state_hash = ?2, browser_hash = ?3, opened_at = ?4 \
                         WHERE link_hash = ?1 AND expires_at > ?4 AND used_at IS NULL \
                         RETURNING {LINK_COLUMNS}"
                    ),
                    params![link_hash, state_hash, browser_hash, ms(now)],
                    link,
                )
                .optional()
                .map_err(db)?;
            link_of(found)
        })
        .await
    }

    async fn take_authorisation_state(
        &self,
        state_hash: &str,
        browser_hash: &str,
        now: OffsetDateTime,
        opened_after: OffsetDateTime,
    ) -> Result<Option<AuthorisationLink>, StoreError> {
        let (state_hash, browser_hash) = (state_hash.to_owned(), browser_hash.to_owned());
        self.write(move |conn| {
            let found = conn
                .row(
                    &format!(
                        "UPDATE authorisation_links SET state_hash = NULL, browser_hash = NULL \
                         WHERE state_hash = ?1 AND browser_hash = ?2 AND expires_at > ?3 \
                         AND opened_at > ?4 AND used_at IS NULL RETURNING {LINK_COLUMNS}"
                    ),
                    params![state_hash, browser_hash, ms(now), ms(opened_after)],
                    link,
                )
                .optional()
                .map_err(db)?;
            link_of(found)
        })
        .await
    }

    async fn save_authorisation(
        &self,
        a: StoredAuthorisation,
        link_id: Option<&str>,
    ) -> Result<i64, StoreError> {
        let link_id = link_id.map(str::to_owned);
        self.write(move |conn| {
            let version: i64 = conn
                .row(
                    &format!(
                        "INSERT INTO authorisations ({COLUMNS}) VALUES \
                         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'active', NULL, ?10, ?10, 1) \
                         ON CONFLICT (merchant_id, account_id) DO UPDATE SET \
                         partner_id = excluded.partner_id, identity = excluded.identity, \
                         user_id = excluded.user_id, token_sealed = excluded.token_sealed, \
                         refresh_sealed = excluded.refresh_sealed, \
                         expires_at = excluded.expires_at, \
                         refresh_expires_at = excluded.refresh_expires_at, status = 'active', \
                         status_code = NULL, granted_at = excluded.granted_at, \
                         updated_at = excluded.updated_at, version = version + 1, \
                         refresh_lease_until = NULL \
                         RETURNING version"
                    ),
                    params![
                        a.merchant_id,
                        a.account_id,
                        a.partner_id,
                        a.identity,
                        a.user_id,
                        a.token_sealed,
                        a.refresh_sealed,
                        ms(a.expires_at),
                        a.refresh_expires_at.map(ms),
                        ms(a.granted_at)
                    ],
                    |row| row.get(0),
                )
                .map_err(db)?;
            if let Some(link_id) = link_id {
                conn.exec(
                    "UPDATE authorisation_links SET used_at = ?2, state_hash = NULL, \
                     browser_hash = NULL WHERE id = ?1",
                    params![link_id, ms(a.granted_at)],
                )
                .map_err(db)?;
            }
            Ok(version)
        })
        .await
    }

    async fn authorisations(
        &self,
        merchant_id: Option<&str>,
    ) -> Result<Vec<StoredAuthorisation>, StoreError> {
        let merchant_id = merchant_id.map(str::to_owned);
        self.read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM authorisations WHERE ?1 IS NULL OR merchant_id = ?1 \
                 ORDER BY merchant_id, account_id"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
            let mut rows = stmt.query(params![merchant_id]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                out.push(authorisation(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn claim_authorisation_refresh(
        &self,
        merchant_id: &str,
        account_id: &str,
        version: i64,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (merchant_id, account_id) = (merchant_id.to_owned(), account_id.to_owned());
        self.write(move |conn| {
            let claimed = conn
                .exec(
                    "UPDATE authorisations SET refresh_lease_until = ?4 \
                     WHERE merchant_id = ?1 AND account_id = ?2 AND version = ?3 \
                     AND (refresh_lease_until IS NULL OR refresh_lease_until <= ?5)",
                    params![merchant_id, account_id, version, ms(lease_until), ms(now)],
                )
                .map_err(db)?;
            Ok(claimed == 1)
        })
        .await
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
        let (merchant_id, account_id, code) = (
            merchant_id.to_owned(),
            account_id.to_owned(),
            code.to_owned(),
        );
        self.write(move |conn| {
            let set = conn
                .exec(
                    "UPDATE authorisations SET status = ?4, status_code = ?5, updated_at = ?6, \
                     version = version + 1, refresh_lease_until = NULL \
                     WHERE merchant_id = ?1 AND account_id = ?2 AND version = ?3",
                    params![
                        merchant_id,
                        account_id,
                        version,
                        status.as_str(),
                        code,
                        ms(now)
                    ],
                )
                .map_err(db)?;
            Ok(set == 1)
        })
        .await
    }

    async fn purge_authorisation_links(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let gone = conn
                .exec(
                    "DELETE FROM authorisation_links WHERE expires_at <= ?1 OR used_at IS NOT NULL",
                    params![ms(now)],
                )
                .map_err(db)?;
            Ok(gone as u64)
        })
        .await
    }
}
