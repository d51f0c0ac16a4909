//! SQLite: checkouts and their payments.

use super::*;
use crate::store::rows::{CHECKOUT_COLUMNS as COLUMNS, CheckoutRow};

#[async_trait]
impl CheckoutStore for SqliteStore {
    async fn begin_checkout(
        &self,
        idem: IdemClaim,
        checkout: Checkout,
    ) -> Result<Begin<Checkout>, StoreError> {
        self.write(move |conn| {
            if let Some(found) = claim(conn, &idem, &checkout.id)? {
                return Ok(cast(found));
            }
            insert(conn, &checkout)?;
            Ok(Begin::Fresh(checkout))
        })
        .await
    }

    async fn checkout(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> Result<Option<Checkout>, StoreError> {
        let (merchant_id, id) = (merchant_id.map(str::to_owned), id.to_owned());
        self.read(move |conn| {
            let found = load(conn, "id", &id)?;
            Ok(found.filter(|c| merchant_id.as_deref().is_none_or(|m| m == c.merchant_id)))
        })
        .await
    }

    async fn checkout_by_token_hash(&self, hash: &str) -> Result<Option<Checkout>, StoreError> {
        let hash = hash.to_owned();
        self.read(move |conn| load(conn, "token_hash", &hash)).await
    }

    async fn forget_legacy_tokens(&self, now: OffsetDateTime) -> Result<u64, StoreError> {
        self.write(move |conn| forget_legacy(conn, now)).await
    }

    async fn begin_checkout_payment(
        &self,
        checkout_id: &str,
        expected: Option<&str>,
        payment: Payment,
        max_payments: usize,
    ) -> Result<bool, StoreError> {
        let (checkout_id, expected) = (checkout_id.to_owned(), expected.map(str::to_owned));
        self.write(move |conn| {
            let switched = switch_current(
                conn,
                &checkout_id,
                expected.as_deref(),
                &payment.id,
                payment.created_at,
                max_payments,
            )?;
            if !switched {
                return Ok(false);
            }
            insert_payment(conn, &payment)?;
            append_event(
                conn,
                &payment.merchant_id,
                "payment.created",
                &payment.id,
                payment.to_api_json(),
                payment.created_at,
            )?;
            Ok(true)
        })
        .await
    }

    async fn begin_payer_identity(
        &self,
        state_hash: &str,
        checkout_id: &str,
        browser_hash: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let (state_hash, checkout_id, browser_hash) = (
            state_hash.to_owned(),
            checkout_id.to_owned(),
            browser_hash.to_owned(),
        );
        self.write(move |conn| {
            conn.exec(
                "INSERT INTO payer_identity_states (state_hash, checkout_id, browser_hash, created_at) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![state_hash, checkout_id, browser_hash, ms(now)],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn take_payer_identity(
        &self,
        state_hash: &str,
        browser_hash: &str,
        made_after: OffsetDateTime,
    ) -> Result<Option<String>, StoreError> {
        let (state_hash, browser_hash) = (state_hash.to_owned(), browser_hash.to_owned());
        self.write(move |conn| {
            conn.row(
                "DELETE FROM payer_identity_states WHERE state_hash = ?1 AND browser_hash = ?2 \
                 AND created_at > ?3 RETURNING checkout_id",
                params![state_hash, browser_hash, ms(made_after)],
                |row| row.get(0),
            )
            .optional()
            .map_err(db)
        })
        .await
    }

    async fn set_checkout_openid(
        &self,
        checkout_id: &str,
        openid: &str,
    ) -> Result<bool, StoreError> {
        let (checkout_id, openid) = (checkout_id.to_owned(), openid.to_owned());
        self.write(move |conn| {
            let set = conn
                .exec(
                    "UPDATE checkouts SET openid = ?2 WHERE id = ?1 AND openid IS NULL",
                    params![checkout_id, openid],
                )
                .map_err(db)?;
            Ok(set == 1)
        })
        .await
    }

    async fn purge_payer_identities(&self, before: OffsetDateTime) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let gone = conn
                .exec(
                    "DELETE FROM payer_identity_states WHERE created_at <= ?1",
                    params![ms(before)],
                )
                .map_err(db)?;
            Ok(gone as u64)
        })
        .await
    }

    async fn checkout_payments(&self, checkout_id: &str) -> Result<Vec<Payment>, StoreError> {
        let checkout_id = checkout_id.to_owned();
        self.read(move |conn| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id IN \
                 (SELECT payment_id FROM checkout_payments WHERE checkout_id = ?1) ORDER BY seq"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
            let mut rows = stmt.query(params![checkout_id]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                out.push(payment_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }
}

pub(super) const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS checkouts (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    merchant_reference TEXT NOT NULL,
    description TEXT NOT NULL,
    return_url TEXT NOT NULL,
    cancel_url TEXT,
    methods TEXT NOT NULL,
    openid TEXT,
    metadata TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    payment_id TEXT,
    legacy_token TEXT
);
CREATE TABLE IF NOT EXISTS payer_identity_states (
    state_hash TEXT PRIMARY KEY,
    checkout_id TEXT NOT NULL,
    browser_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS checkout_payments (
    payment_id TEXT PRIMARY KEY,
    checkout_id TEXT NOT NULL REFERENCES checkouts (id),
    opened_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS checkout_payments_by_checkout ON checkout_payments (checkout_id);
"#;

pub(super) fn insert(conn: &Connection, c: &Checkout) -> Result<(), StoreError> {
    let r = CheckoutRow::of(c)?;
    conn.exec(
        &format!(
            "INSERT INTO checkouts ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)"
        ),
        params![
            r.id,
            r.token_hash,
            r.merchant_id,
            r.amount,
            r.currency,
            r.merchant_reference,
            r.description,
            r.return_url,
            r.cancel_url,
            r.methods,
            r.openid,
            r.metadata,
            r.expires_at,
            r.created_at,
            r.payment_id,
            r.legacy_token,
        ],
    )
    .map_err(db)?;
    Ok(())
}

fn from_row(row: &Row<'_>) -> Result<Checkout, StoreError> {
    CheckoutRow {
        id: row.get(0).map_err(db)?,
        token_hash: row.get(1).map_err(db)?,
        merchant_id: row.get(2).map_err(db)?,
        amount: row.get(3).map_err(db)?,
        currency: row.get(4).map_err(db)?,
        merchant_reference: row.get(5).map_err(db)?,
        description: row.get(6).map_err(db)?,
        return_url: row.get(7).map_err(db)?,
        cancel_url: row.get(8).map_err(db)?,
        methods: row.get(9).map_err(db)?,
        openid: row.get(10).map_err(db)?,
        metadata: row.get(11).map_err(db)?,
        expires_at: row.get(12).map_err(db)?,
        created_at: row.get(13).map_err(db)?,
        payment_id: row.get(14).map_err(db)?,
        legacy_token: row.get(15).map_err(db)?,
    }
    .decode()
}

fn forget_legacy(conn: &Connection, now: OffsetDateTime) -> Result<u64, StoreError> {
    let cleared = conn
        .exec(
            "UPDATE checkouts SET legacy_token = NULL \
             WHERE legacy_token IS NOT NULL AND expires_at <= ?1",
            params![ms(now)],
        )
        .map_err(db)?;
    Ok(cleared as u64)
}

/// One-time step for ledgers from before derived cashier tokens: the `token` column (clear
/// random tokens) becomes `token_hash`, their SHA-256, so links already handed out still open;
/// checkouts still open keep their token in `legacy_token` until they expire, so their link is
/// still shown; checkout payments drop their stored copy of the link. (Events are append-only:
/// those recorded before keep the `return_url` they were sent with.)
pub(super) fn hash_legacy_tokens(conn: &Connection, now: OffsetDateTime) -> Result<(), StoreError> {
    let columns: Vec<String> = {
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info('checkouts')")
            .map_err(db)?;
        let names = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(db)?;
        names.collect::<Result<_, _>>().map_err(db)?
    };
    if !columns.iter().any(|c| c == "token") {
        return Ok(());
    }
    conn.execute_batch(
        "ALTER TABLE checkouts RENAME COLUMN token TO token_hash;
         ALTER TABLE checkouts ADD COLUMN legacy_token TEXT;
         UPDATE checkouts SET legacy_token = token_hash;",
    )
    .map_err(db)?;
    let rows: Vec<(String, String)> = {
        let mut stmt = conn
            .prepare("SELECT id, token_hash FROM checkouts")
            .map_err(db)?;
        let rows = stmt
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(db)?;
        rows.collect::<Result<_, _>>().map_err(db)?
    };
    for (id, token) in rows {
        conn.execute(
            "UPDATE checkouts SET token_hash = ?2 WHERE id = ?1",
            params![id, crate::cashier::key::token_hash(&token)],
        )
        .map_err(db)?;
    }
    forget_legacy(conn, now)?;
    conn.execute(
        "UPDATE payments SET return_url = NULL WHERE id IN \
         (SELECT payment_id FROM checkout_payments)",
        [],
    )
    .map_err(db)?;
    Ok(())
}

/// Loads by `id` or `token_hash` (both unique).
pub(super) fn load(
    conn: &Connection,
    by: &'static str,
    value: &str,
) -> Result<Option<Checkout>, StoreError> {
    let column = if by == "token_hash" {
        "token_hash"
    } else {
        "id"
    };
    let sql = format!("SELECT {COLUMNS} FROM checkouts WHERE {column} = ?1");
    let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
    let mut rows = stmt.query(params![value]).map_err(db)?;
    match rows.next().map_err(db)? {
        Some(row) => Ok(Some(from_row(row)?)),
        None => Ok(None),
    }
}

/// Makes `new_payment` current if the current payment is still `expected` and the checkout
/// is under its payment limit; records the link. `false`: nothing changed.
pub(super) fn switch_current(
    conn: &Connection,
    checkout_id: &str,
    expected: Option<&str>,
    new_payment: &str,
    opened_at: time::OffsetDateTime,
    max_payments: usize,
) -> Result<bool, StoreError> {
    let opened: i64 = conn
        .row(
            "SELECT COUNT(*) FROM checkout_payments WHERE checkout_id = ?1",
            params![checkout_id],
            |row| row.get(0),
        )
        .map_err(db)?;
    if usize::try_from(opened).unwrap_or(usize::MAX) >= max_payments {
        return Ok(false);
    }
    let changed = conn
        .exec(
            "UPDATE checkouts SET payment_id = ?3 WHERE id = ?1 AND payment_id IS ?2",
            params![checkout_id, expected, new_payment],
        )
        .map_err(db)?;
    if changed != 1 {
        return Ok(false);
    }
    conn.exec(
        "INSERT INTO checkout_payments (payment_id, checkout_id, opened_at) VALUES (?1, ?2, ?3)",
        params![new_payment, checkout_id, ms(opened_at)],
    )
    .map_err(db)?;
    Ok(true)
}
