//! SQLite: static payment codes.

use super::*;
use crate::ledger::code::Code;
use crate::store::CodeStore;
use crate::store::rows::{CODE_COLUMNS as COLUMNS, CodeRow};

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS codes (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    name TEXT NOT NULL,
    tags TEXT NOT NULL,
    amount INTEGER CHECK (amount IS NULL OR amount > 0),
    currency TEXT NOT NULL,
    methods TEXT NOT NULL,
    expires_at INTEGER,
    disabled_at INTEGER,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS codes_by_merchant ON codes (merchant_id, seq);
"#;

fn decode(row: &Row<'_>) -> Result<Code, StoreError> {
    CodeRow {
        id: row.get(0).map_err(db)?,
        token_hash: row.get(1).map_err(db)?,
        merchant_id: row.get(2).map_err(db)?,
        name: row.get(3).map_err(db)?,
        tags: row.get(4).map_err(db)?,
        amount: row.get(5).map_err(db)?,
        currency: row.get(6).map_err(db)?,
        methods: row.get(7).map_err(db)?,
        expires_at: row.get(8).map_err(db)?,
        disabled_at: row.get(9).map_err(db)?,
        created_at: row.get(10).map_err(db)?,
    }
    .decode()
}

fn load(conn: &Connection, column: &str, value: &str) -> Result<Option<Code>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM codes WHERE {column} = ?1");
    let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
    let mut rows = stmt.query(params![value]).map_err(db)?;
    match rows.next().map_err(db)? {
        Some(row) => decode(row).map(Some),
        None => Ok(None),
    }
}

#[async_trait]
impl CodeStore for SqliteStore {
    async fn begin_code(&self, idem: IdemClaim, code: Code) -> Result<Begin<Code>, StoreError> {
        self.write(move |conn| {
            if let Some(found) = claim(conn, &idem, &code.id)? {
                return Ok(cast(found));
            }
            let r = CodeRow::of(&code)?;
            conn.exec(
                &format!(
                    "INSERT INTO codes ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
                ),
                params![
                    r.id,
                    r.token_hash,
                    r.merchant_id,
                    r.name,
                    r.tags,
                    r.amount,
                    r.currency,
                    r.methods,
                    r.expires_at,
                    r.disabled_at,
                    r.created_at
                ],
            )
            .map_err(db)?;
            Ok(Begin::Fresh(code))
        })
        .await
    }

    async fn code(&self, merchant_id: &str, id: &str) -> Result<Option<Code>, StoreError> {
        let (merchant_id, id) = (merchant_id.to_owned(), id.to_owned());
        self.read(move |conn| Ok(load(conn, "id", &id)?.filter(|c| c.merchant_id == merchant_id)))
            .await
    }

    async fn code_by_token_hash(&self, hash: &str) -> Result<Option<Code>, StoreError> {
        let hash = hash.to_owned();
        self.read(move |conn| load(conn, "token_hash", &hash)).await
    }

    async fn codes(
        &self,
        merchant_id: &str,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Code>, StoreError> {
        let (merchant_id, before) = (merchant_id.to_owned(), before.map(str::to_owned));
        self.read(move |conn| {
            let sql = format!(
                "SELECT {COLUMNS} FROM codes WHERE merchant_id = ?1 AND (?2 IS NULL OR seq < \
                 (SELECT seq FROM codes WHERE id = ?2 AND merchant_id = ?1)) \
                 ORDER BY seq DESC LIMIT ?3"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
            let mut rows = stmt
                .query(params![merchant_id, before, i64::from(limit)])
                .map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                out.push(decode(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn disable_code(
        &self,
        merchant_id: &str,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Code>, StoreError> {
        let (merchant_id, id) = (merchant_id.to_owned(), id.to_owned());
        self.write(move |conn| {
            conn.exec(
                "UPDATE codes SET disabled_at = ?3 WHERE id = ?1 AND merchant_id = ?2 \
                 AND disabled_at IS NULL",
                params![id, merchant_id, ms(now)],
            )
            .map_err(db)?;
            Ok(load(conn, "id", &id)?.filter(|c| c.merchant_id == merchant_id))
        })
        .await
    }
}
