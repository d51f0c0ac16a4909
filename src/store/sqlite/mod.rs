//! Embedded SQLite ledger: one file, WAL, `synchronous=FULL` (an acknowledged write survives
//! power loss). Writes go to one writer thread that commits those of concurrent requests
//! together (group commit, [`writer`]); reads use two connections of their own. Every method
//! is one job: one savepoint inside the batch's transaction, durable before it answers.

mod authorisations;
mod checkouts;
mod clock;
mod codes;
mod events;
mod janitor;
mod keys;
mod payments;
mod reconciliation;
mod writer;

pub use writer::WriteStats;

use crate::store::rows::{open_payment_statuses, open_refund_statuses};
use crate::store::{CheckoutStore, EventStore, JanitorStore, KeyStore, PaymentStore, ReconStore};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use moongate_contract::ProviderKind;
use rusqlite::{Connection, OptionalExtension, Row, params};
use time::OffsetDateTime;

use super::{
    Also, Attempt, Begin, IdemClaim, OutboxItem, PaymentDecision, StoreError, StoredEvent, Updated,
    answer_body,
};
use crate::ledger::checkout::Checkout;
use crate::ledger::reconciliation::{
    Break, BreakStatus, LedgerPayment, LedgerRefund, StatementRecord,
};
use crate::ledger::{Failure, Payment, PaymentChange, Refund, RefundStatus, event_json, new_id};
use crate::store::rows::{
    FIRST_CHECK_MS, IDEMPOTENCY_RETENTION_MS, KeyRow, PAYMENT_COLUMNS, PaymentRow, REFUND_COLUMNS,
    RefundRow, apply_change, cast, count, from_ms, json_opt, ms, operation_name, refund_fits,
    to_json,
};
use crate::store::{CheckTarget, DailyClaim, Delivery, EventRecord, ReconRun, StoredBreak};

// `seq` is a plain `INTEGER PRIMARY KEY`, not `AUTOINCREMENT`: no ledger row is ever deleted,
// so SQLite's max(rowid) + 1 is as monotonic, and an insert does not also write its table's
// `sqlite_sequence` row (one B-tree page less in every commit). Ledgers made before keep their
// AUTOINCREMENT tables, which behave the same.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS payments (
    seq INTEGER PRIMARY KEY,
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

CREATE TABLE IF NOT EXISTS refunds (
    seq INTEGER PRIMARY KEY,
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

CREATE TABLE IF NOT EXISTS attempts (
    seq INTEGER PRIMARY KEY,
    payment_id TEXT NOT NULL,
    account_id TEXT,
    refund_id TEXT,
    operation TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    elapsed_ms INTEGER NOT NULL,
    outcome TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    merchant_id TEXT NOT NULL,
    type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_object ON events (object_id, seq);
CREATE INDEX IF NOT EXISTS events_by_merchant ON events (merchant_id, seq);
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
CREATE INDEX IF NOT EXISTS outbox_due_by_merchant ON outbox (merchant_id, next_attempt_at)
    WHERE next_attempt_at IS NOT NULL;
DROP INDEX IF EXISTS outbox_due;

CREATE TABLE IF NOT EXISTS deliveries (
    seq INTEGER PRIMARY KEY,
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
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    writer: writer::Writer,
    /// Read connections (a file ledger; an in-memory one reads through the writer).
    readers: Option<writer::Readers>,
}

/// Every statement through the connection's statement cache: parsed once, not per call.
pub(super) trait Cached {
    /// `execute`, cached.
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize>;
    /// `query_row`, cached.
    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>;
}

impl Cached for Connection {
    fn exec<P: rusqlite::Params>(&self, sql: &str, params: P) -> rusqlite::Result<usize> {
        self.prepare_cached(sql)?.execute(params)
    }

    fn row<T, P, F>(&self, sql: &str, params: P, f: F) -> rusqlite::Result<T>
    where
        P: rusqlite::Params,
        F: FnOnce(&Row<'_>) -> rusqlite::Result<T>,
    {
        self.prepare_cached(sql)?.query_row(params, f)
    }
}

/// Read connections of a file ledger.
const READERS: usize = 2;

/// Prepared statements kept per connection (every statement the ledger runs is cached).
const STATEMENT_CACHE: usize = 128;

pub(super) fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

impl SqliteStore {
    /// Opens (creating if needed) the ledger file.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            crate::private_fs::create_dir_all(parent)
                .map_err(|e| StoreError::Database(e.to_string()))?;
        }
        // Owner-only (the ledger holds payer records); SQLite gives its
        // -wal and -shm files the same permissions.
        crate::private_fs::touch(path).map_err(|e| StoreError::Database(e.to_string()))?;
        let conn = Self::init(Connection::open(path).map_err(db)?)?;
        let mut readers = Vec::with_capacity(READERS);
        for _ in 0..READERS {
            let reader = Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                    | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .map_err(db)?;
            reader
                .busy_timeout(std::time::Duration::from_secs(5))
                .map_err(db)?;
            Self::tune(&reader)?;
            reader.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
            readers.push(reader);
        }
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: writer::Writer::start(conn)?,
                readers: Some(writer::Readers::new(readers)),
            }),
        })
    }

    /// An in-memory ledger (tests, benchmarks).
    pub fn in_memory() -> Result<SqliteStore, StoreError> {
        let conn = Self::init(Connection::open_in_memory().map_err(db)?)?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                writer: writer::Writer::start(conn)?,
                readers: None,
            }),
        })
    }

    /// Makes every commit fail, as on a full disk, until called with `false`: every write is
    /// answered with an error and none is kept (tests show none is answered as done).
    pub fn fail_commits(&self, failing: bool) {
        self.inner.writer.fail_commits(failing);
    }

    /// How many writes shared how many commits so far.
    pub fn write_stats(&self) -> WriteStats {
        self.inner.writer.stats()
    }

    /// Every connection: temporary structures (each write's savepoint journal, sorts) in memory
    /// rather than in a file created and deleted each time, and a 16 MiB page cache (the hot
    /// pages of the indexes every write touches stay read).
    fn tune(conn: &Connection) -> Result<(), StoreError> {
        conn.pragma_update(None, "temp_store", "MEMORY")
            .map_err(db)?;
        conn.pragma_update(None, "cache_size", -16_384_i64)
            .map_err(db)?;
        Ok(())
    }

    /// The schema, pragmas and one-time steps, on the write connection.
    fn init(conn: Connection) -> Result<Connection, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        // Checkpoints every 4,000 WAL pages (16 MiB) instead of 1,000: each copies a hot page
        // once however often it was written since, so fewer of them copy less.
        conn.pragma_update(None, "wal_autocheckpoint", 4_000_i64)
            .map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        Self::tune(&conn)?;
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
        conn.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS payments_due ON payments (next_check_at) \
               WHERE status IN ({});\n\
             CREATE INDEX IF NOT EXISTS refunds_due ON refunds (next_check_at) \
               WHERE status IN ({});\n\
             CREATE INDEX IF NOT EXISTS payments_paid ON payments (account_id, paid_at) \
               WHERE paid_at IS NOT NULL;",
            open_payment_statuses(),
            open_refund_statuses()
        ))
        .map_err(db)?;
        // Open payments and refunds are found through the partial `*_due` indexes (only open
        // rows): an index of every row's status, moved on each status change, is not kept.
        conn.execute_batch(
            "DROP INDEX IF EXISTS payments_by_status; DROP INDEX IF EXISTS refunds_by_status;",
        )
        .map_err(db)?;
        conn.execute_batch(reconciliation::SCHEMA).map_err(db)?;
        conn.execute_batch(checkouts::SCHEMA).map_err(db)?;
        conn.execute_batch(clock::SCHEMA).map_err(db)?;
        conn.execute_batch(authorisations::SCHEMA).map_err(db)?;
        conn.execute_batch(codes::SCHEMA).map_err(db)?;
        // One-time steps, counted in `user_version`. 1: settled payments keep no scanned
        // payment code (earlier versions kept it).
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(db)?;
        if version < 1 {
            conn.execute(
                &format!(
                    "UPDATE payments SET payer = json_remove(payer, '$.payment_code') \
                     WHERE payer LIKE '%\"payment_code\"%' AND status NOT IN ({})",
                    open_payment_statuses()
                ),
                [],
            )
            .map_err(db)?;
            conn.pragma_update(None, "user_version", 1).map_err(db)?;
        }
        // 2: the ledger keeps a hash of each cashier token, not the token.
        if version < 2 {
            let tx = conn.unchecked_transaction().map_err(db)?;
            checkouts::hash_legacy_tokens(&tx, OffsetDateTime::now_utc())?;
            tx.pragma_update(None, "user_version", 2).map_err(db)?;
            tx.commit().map_err(db)?;
        }
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    /// A write: one job of the writer's next batch, answered once that batch is durable.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.inner.writer.write(f).await
    }

    /// A write answered before its commit ([`writer::Writer::write_ahead`]).
    async fn write_ahead<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.inner.writer.write_ahead(f).await
    }

    /// A read: on a read connection (the last commit, never waiting for the writer).
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        match &self.inner.readers {
            Some(readers) => readers.read(f).await,
            None => self.inner.writer.write(f).await,
        }
    }
}

/// Claims due janitor rows (open, next check passed) in one write transaction, leasing them
/// until `lease_until`; `decode` reads a row of the table's columns followed by its check count.
fn claim_due<T>(
    conn: &Connection,
    target: CheckTarget,
    now: OffsetDateTime,
    lease_until: OffsetDateTime,
    limit: u32,
    decode: impl Fn(&Row<'_>) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let (table, columns, open) = match target {
        CheckTarget::Payment => ("payments", PAYMENT_COLUMNS, open_payment_statuses()),
        CheckTarget::Refund => ("refunds", REFUND_COLUMNS, open_refund_statuses()),
    };
    let mut out = Vec::new();
    {
        let sql = format!(
            "SELECT {columns}, checks FROM {table} WHERE status IN ({open}) \
             AND COALESCE(next_check_at, 0) <= ?1 ORDER BY next_check_at LIMIT ?2"
        );
        let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
        let mut rows = stmt.query(params![ms(now), limit]).map_err(db)?;
        while let Some(row) = rows.next().map_err(db)? {
            out.push((row.get::<_, String>(0).map_err(db)?, decode(row)?));
        }
    }
    // Leased after reading: a statement never writes the rows it is still stepping over.
    {
        let mut lease = conn
            .prepare_cached(&format!(
                "UPDATE {table} SET next_check_at = ?2 WHERE id = ?1"
            ))
            .map_err(db)?;
        for (id, _) in &out {
            lease.execute(params![id, ms(lease_until)]).map_err(db)?;
        }
    }
    Ok(out.into_iter().map(|(_, item)| item).collect())
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

fn load_payment(conn: &Connection, id: &str) -> Result<Option<Payment>, StoreError> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
    let mut rows = stmt.query(params![id]).map_err(db)?;
    match rows.next().map_err(db)? {
        Some(row) => Ok(Some(payment_from_row(row)?)),
        None => Ok(None),
    }
}

fn load_refund(conn: &Connection, id: &str) -> Result<Option<Refund>, StoreError> {
    let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = ?1");
    let mut stmt = conn.prepare_cached(&sql).map_err(db)?;
    let mut rows = stmt.query(params![id]).map_err(db)?;
    match rows.next().map_err(db)? {
        Some(row) => Ok(Some(refund_from_row(row)?)),
        None => Ok(None),
    }
}

/// Appends an event and its outbox row (when the merchant has a webhook it is delivered;
/// the worker parks rows of merchants without one).
fn append_event(
    conn: &Connection,
    merchant_id: &str,
    kind: &str,
    object_id: &str,
    object: serde_json::Value,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let id = new_id("evt");
    let body = event_json(&id, kind, now, object).to_string();
    conn.exec(
        "INSERT INTO events (id, merchant_id, type, object_id, body, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![id, merchant_id, kind, object_id, body, ms(now)],
    )
    .map_err(db)?;
    let seq = conn.last_insert_rowid();
    conn.exec(
        "INSERT INTO outbox (event_seq, merchant_id, next_attempt_at) VALUES (?1, ?2, ?3)",
        params![seq, merchant_id, ms(now)],
    )
    .map_err(db)?;
    Ok(())
}

/// Inserts a payment row (first check due 30 s after creation).
fn insert_payment(conn: &Connection, p: &Payment) -> Result<(), StoreError> {
    let r = PaymentRow::of(p)?;
    conn.exec(
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

/// Remembers the claim's nonce (a replay is refused before anything is written), then inserts
/// the key row, or reports what an existing one says.
fn claim(
    conn: &Connection,
    claim: &IdemClaim,
    resource_id: &str,
) -> Result<Option<Begin<()>>, StoreError> {
    if let Some(nonce) = &claim.nonce
        && !keys::insert_nonce(
            conn,
            &claim.merchant_id,
            &nonce.nonce,
            nonce.keep_until,
            claim.now,
        )?
    {
        return Err(StoreError::NonceReused);
    }
    // A new key is inserted; a key back after its retention is taken over in the same
    // statement (the janitor purges the others); only a live key is read.
    let now = ms(claim.now);
    let inserted = conn
        .exec(
            "INSERT INTO idempotency_keys (merchant_id, key, request_hash, resource_id, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (merchant_id, key) DO UPDATE SET \
             request_hash = excluded.request_hash, resource_id = excluded.resource_id, \
             status = NULL, response = NULL, created_at = excluded.created_at, completed_at = NULL \
             WHERE idempotency_keys.created_at < ?6",
            params![
                claim.merchant_id,
                claim.key,
                claim.request_hash,
                resource_id,
                now,
                now - IDEMPOTENCY_RETENTION_MS
            ],
        )
        .map_err(db)?;
    if inserted == 1 {
        return Ok(None);
    }
    let existing = conn
        .row(
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
        .map_err(db)?;
    existing.verdict(claim).map(Some)
}

#[cfg(test)]
mod tests {
    /// The bundled SQLite is built with `.cargo/config.toml`'s `LIBSQLITE3_FLAGS` (fdatasync,
    /// no allocation statistics): were the file not read, the ledger would silently run on the
    /// slower build. `HAVE_FDATASYNC` leaves no mark of its own; the two flags travel together.
    #[test]
    fn the_bundled_sqlite_has_the_projects_build_flags() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let mut statement = conn.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
    }
}
