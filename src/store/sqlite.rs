//! Embedded SQLite ledger: one file, WAL, `synchronous=FULL` (an acknowledged write survives
//! power loss). One connection behind a mutex, used from `spawn_blocking`: SQLite serialises
//! writers anyway, and every method is a single short transaction.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use moongate_contract::ProviderKind;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use time::OffsetDateTime;

use super::{
    Attempt, Begin, IdemClaim, InboxKey, OutboxItem, PaymentDecision, Store, StoreError,
    StoredEvent, Updated,
};
use crate::cashier::Checkout;
use crate::ledger::{Failure, Payment, Refund, RefundStatus, event_json, new_id};
use crate::reconcile::{Break, BreakStatus, LedgerPayment, LedgerRefund, StatementRecord};
use crate::store::rows::{
    FIRST_CHECK_MS, IDEMPOTENCY_RETENTION_MS, KeyRow, PAYMENT_COLUMNS, PaymentRow, REFUND_COLUMNS,
    RefundRow, apply_change, cast, count, from_ms, json_opt, ms, operation_name, refund_fits,
};
use crate::store::{
    CheckTarget, DailyClaim, Delivery, EventRecord, ReconRun, StoredBreak, checkout_sql, recon_sql,
};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS payments (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    account_id TEXT NOT NULL,
    provider TEXT NOT NULL,
    method TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    merchant_reference TEXT NOT NULL,
    description TEXT NOT NULL,
    return_url TEXT,
    metadata TEXT NOT NULL,
    provider_order_id TEXT NOT NULL,
    provider_ref TEXT,
    status TEXT NOT NULL,
    next_action TEXT,
    failure TEXT,
    amount_refunded INTEGER NOT NULL DEFAULT 0 CHECK (amount_refunded >= 0 AND amount_refunded <= amount),
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    payer TEXT,
    route TEXT,
    channel TEXT,
    next_check_at INTEGER,
    checks INTEGER NOT NULL DEFAULT 0,
    UNIQUE (provider, account_id, provider_order_id)
);
CREATE INDEX IF NOT EXISTS payments_by_merchant ON payments (merchant_id, seq);
CREATE INDEX IF NOT EXISTS payments_by_status ON payments (status, updated_at);

CREATE TABLE IF NOT EXISTS refunds (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    payment_id TEXT NOT NULL REFERENCES payments (id),
    merchant_id TEXT NOT NULL,
    amount INTEGER NOT NULL CHECK (amount > 0),
    currency TEXT NOT NULL,
    reason TEXT,
    status TEXT NOT NULL,
    failure TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    next_check_at INTEGER,
    checks INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS refunds_by_payment ON refunds (payment_id);
CREATE INDEX IF NOT EXISTS refunds_by_status ON refunds (status, updated_at);

CREATE TABLE IF NOT EXISTS attempts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    payment_id TEXT NOT NULL,
    account_id TEXT,
    refund_id TEXT,
    operation TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    elapsed_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_object ON events (object_id, seq);
CREATE TRIGGER IF NOT EXISTS events_no_update BEFORE UPDATE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;
CREATE TRIGGER IF NOT EXISTS events_no_delete BEFORE DELETE ON events
BEGIN SELECT RAISE(ABORT, 'events are append-only'); END;

CREATE TABLE IF NOT EXISTS outbox (
    event_seq INTEGER PRIMARY KEY REFERENCES events (seq),
    merchant_id TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    delivered_at INTEGER,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at) WHERE next_attempt_at IS NOT NULL;

CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq INTEGER NOT NULL REFERENCES events (seq),
    attempted_at INTEGER NOT NULL,
    delivered INTEGER NOT NULL,
    error TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_by_event ON deliveries (event_seq);

CREATE TABLE IF NOT EXISTS idempotency_keys (
    merchant_id TEXT NOT NULL,
    key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    resource_id TEXT,
    status INTEGER,
    response BLOB,
    created_at INTEGER NOT NULL,
    completed_at INTEGER,
    PRIMARY KEY (merchant_id, key)
);

CREATE TABLE IF NOT EXISTS nonces (
    merchant_id TEXT NOT NULL,
    nonce TEXT NOT NULL,
    keep_until INTEGER NOT NULL,
    PRIMARY KEY (merchant_id, nonce)
);

CREATE TABLE IF NOT EXISTS inbox (
    provider TEXT NOT NULL,
    account TEXT NOT NULL,
    dedupe_id TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (provider, account, dedupe_id)
);
"#;

/// The SQLite ledger.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

pub(super) fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the ledger file.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Database(e.to_string()))?;
        }
        let conn = Connection::open(path).map_err(db)?;
        Self::init(conn)
    }

    /// An in-memory ledger (tests, benchmarks).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        Self::init(Connection::open_in_memory().map_err(db)?)
    }

    fn init(conn: Connection) -> Result<SqliteStore, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        // Ledgers created by earlier versions lack the newer columns.
        for (table, column, kind) in [
            ("payments", "payer", "TEXT"),
            ("payments", "route", "TEXT"),
            ("payments", "channel", "TEXT"),
            ("payments", "next_check_at", "INTEGER"),
            ("payments", "checks", "INTEGER NOT NULL DEFAULT 0"),
            ("refunds", "next_check_at", "INTEGER"),
            ("refunds", "checks", "INTEGER NOT NULL DEFAULT 0"),
            ("attempts", "account_id", "TEXT"),
            ("payments", "paid_at", "INTEGER"),
        ] {
            let present: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM pragma_table_info(?1) WHERE name = ?2",
                    [table, column],
                    |row| row.get(0),
                )
                .map_err(db)?;
            if present == 0 {
                conn.execute(
                    &format!("ALTER TABLE {table} ADD COLUMN {column} {kind}"),
                    [],
                )
                .map_err(db)?;
                if column == "paid_at" {
                    // Older ledgers: the last change of a succeeded payment is the best guess.
                    conn.execute(
                        "UPDATE payments SET paid_at = updated_at WHERE status = 'succeeded'",
                        [],
                    )
                    .map_err(db)?;
                }
            }
        }
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS payments_due ON payments (next_check_at) \
               WHERE status IN ('pending', 'unknown', 'requires_action');\n\
             CREATE INDEX IF NOT EXISTS refunds_due ON refunds (next_check_at) \
               WHERE status IN ('pending', 'unknown');\n\
             CREATE INDEX IF NOT EXISTS payments_paid ON payments (account_id, paid_at) \
               WHERE paid_at IS NOT NULL;",
        )
        .map_err(db)?;
        conn.execute_batch(super::recon_sql::SCHEMA).map_err(db)?;
        conn.execute_batch(super::checkout_sql::SCHEMA)
            .map_err(db)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .map_err(|_| StoreError::Database("ledger lock poisoned".into()))?;
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Database(format!("ledger task failed: {e}")))?
    }
}

/// Claims due janitor rows (open, next check passed) in one write transaction, leasing them
/// until `lease_until`; `decode` reads a row of the table's columns followed by its check count.
fn claim_due<T>(
    conn: &mut Connection,
    target: CheckTarget,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
    limit: u32,
    decode: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let (table, columns, open) = match target {
        CheckTarget::Payment => (
            "payments",
            PAYMENT_COLUMNS,
            "'pending', 'unknown', 'requires_action'",
        ),
        CheckTarget::Refund => ("refunds", REFUND_COLUMNS, "'pending', 'unknown'"),
    };
    let tx = write_tx(conn)?;
    let mut out = Vec::new();
    {
        let sql = format!(
            "SELECT {columns}, checks FROM {table} WHERE status IN ({open}) \
             AND COALESCE(next_check_at, 0) <= ?1 ORDER BY next_check_at LIMIT ?2"
        );
        let mut stmt = tx.prepare_cached(&sql).map_err(db)?;
        let mut rows = stmt.query(params![ms(now), limit]).map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            out.push((row.get::<_, String>(0).map_err(db)?, decode(row)?));
        }
    }
    // Leased after reading: a statement never writes the rows it is still stepping over.
    {
        let mut lease = tx
            .prepare_cached(&format!(
                "UPDATE {table} SET next_check_at = ?2 WHERE id = ?1"
            ))
            .map_err(db)?;
        for (id, _) in &out {
            lease.execute(params![id, ms(lease_until)]).map_err(db)?;
        }
    }
    tx.commit().map_err(db)?;
    Ok(out.into_iter().map(|(_, item)| item).collect())
}

fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)
}

fn payment_from_row(row: &Row<'_>) -> Result<Payment, StoreError> {
    PaymentRow {
        id: row.get(0).map_err(db)?,
        merchant_id: row.get(1).map_err(db)?,
        account_id: row.get(2).map_err(db)?,
        provider: row.get(3).map_err(db)?,
        method: row.get(4).map_err(db)?,
        amount: row.get(5).map_err(db)?,
        currency: row.get(6).map_err(db)?,
        merchant_reference: row.get(7).map_err(db)?,
        description: row.get(8).map_err(db)?,
        return_url: row.get(9).map_err(db)?,
        metadata: row.get(10).map_err(db)?,
        provider_order_id: row.get(11).map_err(db)?,
        provider_ref: row.get(12).map_err(db)?,
        status: row.get(13).map_err(db)?,
        next_action: row.get(14).map_err(db)?,
        failure: row.get(15).map_err(db)?,
        amount_refunded: row.get(16).map_err(db)?,
        expires_at: row.get(17).map_err(db)?,
        created_at: row.get(18).map_err(db)?,
        updated_at: row.get(19).map_err(db)?,
        payer: row.get(20).map_err(db)?,
        route: row.get(21).map_err(db)?,
        channel: row.get(22).map_err(db)?,
    }
    .decode()
}

fn refund_from_row(row: &Row<'_>) -> Result<Refund, StoreError> {
    RefundRow {
        id: row.get(0).map_err(db)?,
        payment_id: row.get(1).map_err(db)?,
        merchant_id: row.get(2).map_err(db)?,
        amount: row.get(3).map_err(db)?,
        currency: row.get(4).map_err(db)?,
        reason: row.get(5).map_err(db)?,
        status: row.get(6).map_err(db)?,
        failure: row.get(7).map_err(db)?,
        created_at: row.get(8).map_err(db)?,
        updated_at: row.get(9).map_err(db)?,
    }
    .decode()
}

fn load_payment(tx: &Connection, id: &str) -> Result<Option<Payment>, StoreError> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?1");
    let mut stmt = tx.prepare_cached(&sql).map_err(db)?;
    let mut rows = stmt.query(params![id]).map_err(db)?;
    match rows.next().map_err(db)? {
        Some(row) => Ok(Some(payment_from_row(row)?)),
        None => Ok(None),
    }
}

fn load_refund(tx: &Connection, id: &str) -> Result<Option<Refund>, StoreError> {
    let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = ?1");
    let mut stmt = tx.prepare_cached(&sql).map_err(db)?;
    let mut rows = stmt.query(params![id]).map_err(db)?;
    match rows.next().map_err(db)? {
        Some(row) => Ok(Some(refund_from_row(row)?)),
        None => Ok(None),
    }
}

/// Appends an event and its outbox row (when the merchant has a webhook it is delivered;
/// the worker parks rows of merchants without one).
fn append_event(
    tx: &Transaction<'_>,
    merchant_id: &str,
    kind: &str,
    object_id: &str,
    object: serde_json::Value,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let id = new_id("evt");
    let body = event_json(&id, kind, now, object).to_string();
    tx.execute(
        "INSERT INTO events (id, merchant_id, type, object_id, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, merchant_id, kind, object_id, body, ms(now)],
    )
    .map_err(db)?;
    let seq = tx.last_insert_rowid();
    tx.execute(
        "INSERT INTO outbox (event_seq, merchant_id, next_attempt_at) VALUES (?1, ?2, ?3)",
        params![seq, merchant_id, ms(now)],
    )
    .map_err(db)?;
    Ok(())
}

/// Inserts a payment row (first check due 30 s after creation).
fn insert_payment(tx: &Transaction<'_>, p: &Payment) -> Result<(), StoreError> {
    let r = PaymentRow::of(p)?;
    tx.execute(
        &format!(
            "INSERT INTO payments ({PAYMENT_COLUMNS}, next_check_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?19 + {FIRST_CHECK_MS})"
        ),
        params![
            r.id,
            r.merchant_id,
            r.account_id,
            r.provider,
            r.method,
            r.amount,
            r.currency,
            r.merchant_reference,
            r.description,
            r.return_url,
            r.metadata,
            r.provider_order_id,
            r.provider_ref,
            r.status,
            r.next_action,
            r.failure,
            r.amount_refunded,
            r.expires_at,
            r.created_at,
            r.updated_at,
            r.payer,
            r.route,
            r.channel,
        ],
    )
    .map_err(db)?;
    Ok(())
}

/// Inserts the key row, or reports what an existing one says.
fn claim(
    tx: &Transaction<'_>,
    claim: &IdemClaim,
    resource_id: &str,
) -> Result<Option<Begin<()>>, StoreError> {
    // Expired keys are forgotten lazily, at the moment the same key comes back.
    tx.execute(
        "DELETE FROM idempotency_keys WHERE merchant_id = ?1 AND key = ?2 AND created_at < ?3",
        params![
            claim.merchant_id,
            claim.key,
            ms(claim.now) - IDEMPOTENCY_RETENTION_MS
        ],
    )
    .map_err(db)?;
    let existing = tx
        .query_row(
            "SELECT request_hash, resource_id, status, response, created_at FROM idempotency_keys WHERE merchant_id = ?1 AND key = ?2",
            params![claim.merchant_id, claim.key],
            |row| {
                Ok(KeyRow {
                    request_hash: row.get(0)?,
                    resource_id: row.get(1)?,
                    status: row.get(2)?,
                    response: row.get(3)?,
                    created_at: row.get(4)?,
                })
            },
        )
        .optional()
        .map_err(db)?;
    if let Some(existing) = existing {
        return existing.verdict(claim).map(Some);
    }
    tx.execute(
        "INSERT INTO idempotency_keys (merchant_id, key, request_hash, resource_id, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![claim.merchant_id, claim.key, claim.request_hash, resource_id, ms(claim.now)],
    )
    .map_err(db)?;
    Ok(None)
}

#[async_trait]
impl Store for SqliteStore {
    async fn remember_nonce(
        &self,
        merchant_id: &str,
        nonce: &str,
        now: OffsetDateTime,
        keep_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (merchant_id, nonce) = (merchant_id.to_owned(), nonce.to_owned());
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            tx.execute("DELETE FROM nonces WHERE keep_until < ?1", params![ms(now)]).map_err(db)?;
            let inserted = tx
                .execute(
                    "INSERT OR IGNORE INTO nonces (merchant_id, nonce, keep_until) VALUES (?1, ?2, ?3)",
                    params![merchant_id, nonce, ms(keep_until)],
                )
                .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(inserted == 1)
        })
        .await
    }

    async fn begin_payment(
        &self,
        idem: IdemClaim,
        payment: Payment,
    ) -> Result<Begin<Payment>, StoreError> {
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            if let Some(found) = claim(&tx, &idem, &payment.id)? {
                return Ok(cast(found));
            }
            let p = &payment;
            insert_payment(&tx, p)?;
            append_event(
                &tx,
                &p.merchant_id,
                "payment.created",
                &p.id,
                p.to_api_json(),
                p.created_at,
            )?;
            tx.commit().map_err(db)?;
            Ok(Begin::Fresh(payment))
        })
        .await
    }

    async fn begin_refund(
        &self,
        idem: IdemClaim,
        refund: Refund,
    ) -> Result<Begin<Refund>, StoreError> {
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            if let Some(found) = claim(&tx, &idem, &refund.id)? {
                return Ok(cast(found));
            }
            let payment = load_payment(&tx, &refund.payment_id)?;
            let held: i64 = tx
                .query_row(
                    "SELECT COALESCE(SUM(amount), 0) FROM refunds WHERE payment_id = ?1 AND status != 'failed'",
                    params![refund.payment_id],
                    |row| row.get(0),
                )
                .map_err(db)?;
            refund_fits(payment.as_ref(), &refund, held)?;
            let r = RefundRow::of(&refund)?;
            tx.execute(
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
            append_event(&tx, &refund.merchant_id, "refund.created", &refund.id, refund.to_api_json(), refund.created_at)?;
            tx.commit().map_err(db)?;
            Ok(Begin::Fresh(refund))
        })
        .await
    }

    async fn claim_key(&self, idem: IdemClaim, resource_id: &str) -> Result<Begin<()>, StoreError> {
        let resource_id = resource_id.to_owned();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let found = claim(&tx, &idem, &resource_id)?;
            tx.commit().map_err(db)?;
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
        self.run(move |conn| {
            conn.execute(
                "UPDATE idempotency_keys SET status = ?3, response = ?4, completed_at = ?5 WHERE merchant_id = ?1 AND key = ?2",
                params![merchant_id, key, status, body, ms(now)],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn release_key(&self, merchant_id: &str, key: &str) -> Result<(), StoreError> {
        let (merchant_id, key) = (merchant_id.to_owned(), key.to_owned());
        self.run(move |conn| {
            conn.execute(
                "DELETE FROM idempotency_keys WHERE merchant_id = ?1 AND key = ?2 AND status IS NULL",
                params![merchant_id, key],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn payment(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> Result<Option<Payment>, StoreError> {
        let (merchant_id, id) = (merchant_id.map(str::to_owned), id.to_owned());
        self.run(move |conn| {
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
        self.run(move |conn| {
            let cursor: i64 = match after {
                None => i64::MAX,
                Some(id) => conn
                    .query_row(
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
        self.run(move |conn| {
            let found = load_refund(conn, &id)?;
            Ok(found.filter(|r| merchant_id.as_deref().is_none_or(|m| m == r.merchant_id)))
        })
        .await
    }

    async fn update_payment(
        &self,
        id: &str,
        inbox: Option<InboxKey>,
        now: OffsetDateTime,
        decide: PaymentDecision,
    ) -> Result<Updated<Payment>, StoreError> {
        let id = id.to_owned();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let Some(mut payment) = load_payment(&tx, &id)? else {
                return Ok(Updated::Missing);
            };
            if let Some(inbox) = &inbox {
                let inserted = tx
                    .execute(
                        "INSERT OR IGNORE INTO inbox (provider, account, dedupe_id, payment_id, received_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![inbox.provider, inbox.account, inbox.dedupe_id, id, ms(now)],
                    )
                    .map_err(db)?;
                if inserted == 0 {
                    return Ok(Updated::Duplicate);
                }
            }
            let Some(change) = decide(&payment) else {
                tx.commit().map_err(db)?;
                return Ok(Updated::Done { record: payment, changed: false });
            };
            let changed = apply_change(&mut payment, change);
            if !changed {
                tx.commit().map_err(db)?;
                return Ok(Updated::Done { record: payment, changed: false });
            }
            payment.updated_at = now;
            tx.execute(
                "UPDATE payments SET status = ?2, next_action = ?3, provider_ref = ?4, failure = ?5, updated_at = ?6, \
                 paid_at = CASE WHEN ?2 = 'succeeded' THEN COALESCE(paid_at, ?6) ELSE paid_at END WHERE id = ?1",
                params![
                    id,
                    payment.status.as_str(),
                    json_opt(&payment.next_action)?,
                    payment.provider_ref,
                    json_opt(&payment.failure)?,
                    ms(now)
                ],
            )
            .map_err(db)?;
            let kind = format!("payment.{}", payment.status.as_str());
            append_event(&tx, &payment.merchant_id, &kind, &payment.id, payment.to_api_json(), now)?;
            tx.commit().map_err(db)?;
            Ok(Updated::Done { record: payment, changed: true })
        })
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
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let Some(mut refund) = load_refund(&tx, &id)? else {
                return Ok(Updated::Missing);
            };
            if !refund.status.can_become(status) {
                tx.commit().map_err(db)?;
                return Ok(Updated::Done { record: refund, changed: false });
            }
            refund.status = status;
            refund.failure = failure;
            refund.updated_at = now;
            tx.execute(
                "UPDATE refunds SET status = ?2, failure = ?3, updated_at = ?4 WHERE id = ?1",
                params![id, status.as_str(), json_opt(&refund.failure)?, ms(now)],
            )
            .map_err(db)?;
            let kind = format!("refund.{}", status.as_str());
            append_event(&tx, &refund.merchant_id, &kind, &refund.id, refund.to_api_json(), now)?;
            if status == RefundStatus::Succeeded {
                tx.execute(
                    "UPDATE payments SET amount_refunded = amount_refunded + ?2, updated_at = ?3 WHERE id = ?1",
                    params![refund.payment_id, refund.amount, ms(now)],
                )
                .map_err(db)?;
                if let Some(payment) = load_payment(&tx, &refund.payment_id)? {
                    append_event(&tx, &payment.merchant_id, "payment.refunded", &payment.id, payment.to_api_json(), now)?;
                }
            }
            tx.commit().map_err(db)?;
            Ok(Updated::Done { record: refund, changed: true })
        })
        .await
    }

    async fn record_attempt(&self, attempt: Attempt) -> Result<(), StoreError> {
        self.run(move |conn| {
            conn.execute(
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
        })
        .await
    }

    async fn payments_in_doubt(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Payment>, StoreError> {
        self.run(move |conn| {
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status IN ('pending', 'unknown', 'requires_action') AND updated_at <= ?1 ORDER BY updated_at LIMIT ?2"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
            let mut rows = stmt.query(params![ms(before), limit]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                out.push(payment_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn payments_due(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(Payment, u32)>, StoreError> {
        self.run(move |conn| {
            claim_due(conn, CheckTarget::Payment, now, lease_until, limit, |row| {
                Ok((payment_from_row(row)?, count(row.get(23).map_err(db)?)))
            })
        })
        .await
    }

    async fn refunds_due(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(Refund, u32)>, StoreError> {
        self.run(move |conn| {
            claim_due(conn, CheckTarget::Refund, now, lease_until, limit, |row| {
                Ok((refund_from_row(row)?, count(row.get(10).map_err(db)?)))
            })
        })
        .await
    }

    async fn schedule_check(
        &self,
        target: CheckTarget,
        id: &str,
        next_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let id = id.to_owned();
        self.run(move |conn| {
            let table = match target {
                CheckTarget::Payment => "payments",
                CheckTarget::Refund => "refunds",
            };
            conn.execute(
                &format!(
                    "UPDATE {table} SET next_check_at = ?2, checks = checks + 1 WHERE id = ?1"
                ),
                params![id, ms(next_at)],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn refunds_in_doubt(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Refund>, StoreError> {
        self.run(move |conn| {
            let sql = format!(
                "SELECT {REFUND_COLUMNS} FROM refunds WHERE status IN ('pending', 'unknown') AND updated_at <= ?1 ORDER BY updated_at LIMIT ?2"
            );
            let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
            let mut rows = stmt.query(params![ms(before), limit]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                out.push(refund_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn due_webhooks(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let mut out = Vec::new();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT o.event_seq, e.id, o.merchant_id, e.body, o.attempts FROM outbox o JOIN events e ON e.seq = o.event_seq \
                         WHERE o.next_attempt_at IS NOT NULL AND o.next_attempt_at <= ?1 ORDER BY o.event_seq LIMIT ?2",
                    )
                    .map_err(db)?;
                let mut rows = stmt.query(params![ms(now), limit]).map_err(db)?;
                while let Some(row) = rows.next().map_err(db)? {
                    out.push(OutboxItem {
                        event_seq: row.get(0).map_err(db)?,
                        event_id: row.get(1).map_err(db)?,
                        merchant_id: row.get(2).map_err(db)?,
                        body: row.get(3).map_err(db)?,
                        attempts: count(row.get(4).map_err(db)?),
                    });
                }
                let mut lease = tx
                    .prepare_cached("UPDATE outbox SET next_attempt_at = ?2 WHERE event_seq = ?1")
                    .map_err(db)?;
                for item in &out {
                    lease.execute(params![item.event_seq, ms(lease_until)]).map_err(db)?;
                }
            }
            tx.commit().map_err(db)?;
            Ok(out)
        })
        .await
    }

    async fn webhook_attempted(
        &self,
        event_seq: i64,
        delivered: bool,
        next_attempt_at: Option<OffsetDateTime>,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        self.run(move |conn| {
            let now = ms(OffsetDateTime::now_utc());
            let tx = write_tx(conn)?;
            tx.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, delivered_at = CASE WHEN ?3 THEN ?4 ELSE NULL END, last_error = ?5 WHERE event_seq = ?1",
                params![event_seq, next_attempt_at.map(ms), delivered, now, error],
            )
            .map_err(db)?;
            tx.execute(
                "INSERT INTO deliveries (event_seq, attempted_at, delivered, error) VALUES (?1, ?2, ?3, ?4)",
                params![event_seq, now, delivered, error],
            )
            .map_err(db)?;
            tx.commit().map_err(db)?;
            Ok(())
        })
        .await
    }

    async fn event(
        &self,
        merchant_id: &str,
        event_id: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        let (merchant_id, event_id) = (merchant_id.to_owned(), event_id.to_owned());
        self.run(move |conn| {
            let found = conn
                .query_row(
                    "SELECT e.seq, e.body, o.attempts, o.next_attempt_at, o.delivered_at FROM events e \
                     LEFT JOIN outbox o ON o.event_seq = e.seq WHERE e.id = ?1 AND e.merchant_id = ?2",
                    params![event_id, merchant_id],
                    |r| {
                        Ok((
                            r.get::<_, i64>(0)?,
                            r.get::<_, String>(1)?,
                            r.get::<_, Option<i64>>(2)?,
                            r.get::<_, Option<i64>>(3)?,
                            r.get::<_, Option<i64>>(4)?,
                        ))
                    },
                )
                .optional()
                .map_err(db)?;
            let Some((seq, body, attempts, next, delivered_at)) = found else {
                return Ok(None);
            };
            let mut stmt = conn
                .prepare_cached(
                    "SELECT attempted_at, delivered, error FROM deliveries WHERE event_seq = ?1 ORDER BY seq",
                )
                .map_err(db)?;
            let mut rows = stmt.query(params![seq]).map_err(db)?;
            let mut deliveries = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                deliveries.push(Delivery {
                    attempted_at: from_ms(row.get(0).map_err(db)?)?,
                    delivered: row.get(1).map_err(db)?,
                    error: row.get(2).map_err(db)?,
                });
            }
            Ok(Some(EventRecord {
                body,
                attempts: attempts.unwrap_or(0),
                next_attempt_at: next.map(from_ms).transpose()?,
                delivered_at: delivered_at.map(from_ms).transpose()?,
                deliveries,
            }))
        })
        .await
    }

    async fn resend_event(
        &self,
        merchant_id: &str,
        event_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let (merchant_id, event_id) = (merchant_id.to_owned(), event_id.to_owned());
        self.run(move |conn| {
            let changed = conn
                .execute(
                    "UPDATE outbox SET next_attempt_at = ?3, attempts = 0 \
                     WHERE event_seq = (SELECT seq FROM events WHERE id = ?1 AND merchant_id = ?2)",
                    params![event_id, merchant_id, ms(now)],
                )
                .map_err(db)?;
            Ok(changed > 0)
        })
        .await
    }

    async fn attempts_for(&self, payment_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let payment_id = payment_id.to_owned();
        self.run(move |conn| {
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
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let changed = tx
                .execute(
                    "UPDATE payments SET account_id = ?3, provider = ?4, updated_at = ?5 \
                     WHERE id = ?1 AND account_id = ?2 AND status = 'pending'",
                    params![payment_id, from, to, provider.as_str(), ms(now)],
                )
                .map_err(db)?;
            if changed == 0 {
                tx.commit().map_err(db)?;
                return Ok(None);
            }
            let payment = tx
                .query_row(
                    &format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?1"),
                    params![payment_id],
                    |row| Ok(payment_from_row(row)),
                )
                .map_err(db)??;
            tx.commit().map_err(db)?;
            Ok(Some(payment))
        })
        .await
    }

    async fn events_for(&self, object_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let object_id = object_id.to_owned();
        self.run(move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT seq, id, type, object_id FROM events WHERE object_id = ?1 ORDER BY seq",
                )
                .map_err(db)?;
            let mut rows = stmt.query(params![object_id]).map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                out.push(StoredEvent {
                    seq: row.get(0).map_err(db)?,
                    id: row.get(1).map_err(db)?,
                    kind: row.get(2).map_err(db)?,
                    object_id: row.get(3).map_err(db)?,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn recon_ledger(
        &self,
        merchant_id: &str,
        account_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<(Vec<LedgerPayment>, Vec<LedgerRefund>), StoreError> {
        let (merchant_id, account_id) = (merchant_id.to_owned(), account_id.to_owned());
        self.run(move |conn| recon_sql::ledger_window(conn, &merchant_id, &account_id, from, to))
            .await
    }

    async fn recon_lookup(
        &self,
        merchant_id: &str,
        account_id: &str,
        payment_ids: Vec<String>,
        refund_ids: Vec<String>,
    ) -> Result<(Vec<LedgerPayment>, Vec<LedgerRefund>), StoreError> {
        let (merchant_id, account_id) = (merchant_id.to_owned(), account_id.to_owned());
        self.run(move |conn| {
            recon_sql::lookup(conn, &merchant_id, &account_id, &payment_ids, &refund_ids)
        })
        .await
    }

    async fn claim_daily_run(
        &self,
        claim: DailyClaim,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| recon_sql::claim_daily(conn, &claim, now, lease_until))
            .await
    }

    async fn release_daily_run(&self, claim: DailyClaim) -> Result<(), StoreError> {
        self.run(move |conn| recon_sql::release_daily(conn, &claim))
            .await
    }

    async fn save_statement(&self, record: StatementRecord) -> Result<(), StoreError> {
        self.run(move |conn| recon_sql::save_statement(conn, &record))
            .await
    }

    async fn save_recon_run(
        &self,
        run: ReconRun,
        breaks: Vec<Break>,
    ) -> Result<Vec<Break>, StoreError> {
        self.run(move |conn| recon_sql::save_run(conn, &run, breaks))
            .await
    }

    async fn recon_run(
        &self,
        merchant_id: Option<&str>,
        run_id: &str,
    ) -> Result<Option<(ReconRun, Vec<Break>)>, StoreError> {
        let (merchant_id, run_id) = (merchant_id.map(str::to_owned), run_id.to_owned());
        self.run(move |conn| recon_sql::run(conn, merchant_id.as_deref(), &run_id))
            .await
    }

    async fn latest_recon_run(
        &self,
        merchant_id: &str,
        account_id: &str,
        day: &str,
    ) -> Result<Option<ReconRun>, StoreError> {
        let (merchant_id, account_id, day) = (
            merchant_id.to_owned(),
            account_id.to_owned(),
            day.to_owned(),
        );
        self.run(move |conn| recon_sql::latest_run(conn, &merchant_id, &account_id, &day))
            .await
    }

    async fn recon_runs(
        &self,
        merchant_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ReconRun>, StoreError> {
        let merchant_id = merchant_id.map(str::to_owned);
        self.run(move |conn| recon_sql::runs(conn, merchant_id.as_deref(), limit))
            .await
    }

    async fn breaks(
        &self,
        merchant_id: Option<&str>,
        status: Option<BreakStatus>,
        limit: u32,
    ) -> Result<Vec<StoredBreak>, StoreError> {
        let merchant_id = merchant_id.map(str::to_owned);
        self.run(move |conn| recon_sql::breaks(conn, merchant_id.as_deref(), status, limit))
            .await
    }

    async fn break_by_id(
        &self,
        merchant_id: Option<&str>,
        break_id: &str,
    ) -> Result<Option<StoredBreak>, StoreError> {
        let (merchant_id, break_id) = (merchant_id.map(str::to_owned), break_id.to_owned());
        self.run(move |conn| recon_sql::break_by_id(conn, merchant_id.as_deref(), &break_id))
            .await
    }

    async fn set_break_status(
        &self,
        merchant_id: Option<&str>,
        break_id: &str,
        status: BreakStatus,
        note: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Option<StoredBreak>, StoreError> {
        let (merchant_id, break_id) = (merchant_id.map(str::to_owned), break_id.to_owned());
        self.run(move |conn| {
            recon_sql::set_break_status(conn, merchant_id.as_deref(), &break_id, status, note, now)
        })
        .await
    }

    async fn insert_repaired_payment(
        &self,
        payment: Payment,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            if load_payment(&tx, &payment.id)?.is_some() {
                return Ok(false);
            }
            insert_payment(&tx, &payment)?;
            tx.execute(
                "UPDATE payments SET paid_at = ?2, next_check_at = NULL WHERE id = ?1",
                params![payment.id, ms(now)],
            )
            .map_err(db)?;
            append_event(
                &tx,
                &payment.merchant_id,
                "payment.succeeded",
                &payment.id,
                payment.to_api_json(),
                now,
            )?;
            tx.commit().map_err(db)?;
            Ok(true)
        })
        .await
    }

    async fn begin_checkout(
        &self,
        idem: IdemClaim,
        checkout: Checkout,
    ) -> Result<Begin<Checkout>, StoreError> {
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            if let Some(found) = claim(&tx, &idem, &checkout.id)? {
                return Ok(cast(found));
            }
            checkout_sql::insert(&tx, &checkout)?;
            tx.commit().map_err(db)?;
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
        self.run(move |conn| {
            let found = checkout_sql::load(conn, "id", &id)?;
            Ok(found.filter(|c| merchant_id.as_deref().is_none_or(|m| m == c.merchant_id)))
        })
        .await
    }

    async fn checkout_by_token(&self, token: &str) -> Result<Option<Checkout>, StoreError> {
        let token = token.to_owned();
        self.run(move |conn| checkout_sql::load(conn, "token", &token))
            .await
    }

    async fn begin_checkout_payment(
        &self,
        checkout_id: &str,
        expected: Option<&str>,
        payment: Payment,
        max_payments: usize,
    ) -> Result<bool, StoreError> {
        let (checkout_id, expected) = (checkout_id.to_owned(), expected.map(str::to_owned));
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let switched = checkout_sql::switch_current(
                &tx,
                &checkout_id,
                expected.as_deref(),
                &payment.id,
                payment.created_at,
                max_payments,
            )?;
            if !switched {
                return Ok(false);
            }
            insert_payment(&tx, &payment)?;
            append_event(
                &tx,
                &payment.merchant_id,
                "payment.created",
                &payment.id,
                payment.to_api_json(),
                payment.created_at,
            )?;
            tx.commit().map_err(db)?;
            Ok(true)
        })
        .await
    }

    async fn checkout_payments(&self, checkout_id: &str) -> Result<Vec<Payment>, StoreError> {
        let checkout_id = checkout_id.to_owned();
        self.run(move |conn| {
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
