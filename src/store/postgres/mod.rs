//! PostgreSQL ledger, for several Moongate instances sharing one truth.
//!
//! The same tables and meaning as the SQLite ledger (see `migrations/`); what differs is how
//! concurrent writers from other processes are kept apart:
//! - every read-decide-write runs under a row lock (`SELECT … FOR UPDATE`) of the row it
//!   decides on: a payment for a notification or a refund, a checkout for a new payment;
//! - idempotency keys, nonces and the notification inbox are claimed by
//!   `INSERT … ON CONFLICT DO NOTHING` on their unique keys, which waits for a competing
//!   transaction and then sees its committed row;
//! - janitor checks and webhook deliveries are claimed with `FOR UPDATE SKIP LOCKED` and leased
//!   (their due time moves to the lease's end) in one statement, so two workers never take the
//!   same row;
//! - the daily reconciliation is claimed by an upsert on `recon_claims`, and a run's breaks are
//!   stored under a transaction-scoped advisory lock of its statement day.
//!
//! Transactions run at READ COMMITTED (PostgreSQL's default), which the above relies on.

mod authorisations;
mod checkouts;
mod clock;
mod codes;
mod events;
mod janitor;
mod keys;
mod payments;
mod reconciliation;

use crate::store::rows::{open_payment_statuses, open_refund_statuses};
use crate::store::{CheckoutStore, EventStore, JanitorStore, KeyStore, PaymentStore, ReconStore};
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use moongate_contract::ProviderKind;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use super::rows::{BREAK_FIELDS, RUN_FIELDS};
use super::rows::{
    CHECKOUT_COLUMNS, CheckoutRow, FIRST_CHECK_MS, IDEMPOTENCY_RETENTION_MS, KeyRow,
    PAYMENT_COLUMNS, PaymentRow, REFUND_COLUMNS, RefundRow, apply_change, cast, count, from_ms, ms,
    operation_name, refund_fits,
};
use super::{
    Also, Attempt, Begin, CheckTarget, DailyClaim, Delivery, EventRecord, IdemClaim, OutboxItem,
    PaymentDecision, ReconRun, StoreError, StoredBreak, StoredEvent, Updated, answer_body,
};
use crate::ledger::checkout::Checkout;
use crate::ledger::reconciliation::{
    Break, BreakStatus, LedgerPayment, LedgerRefund, StatementRecord,
};
use crate::ledger::{Failure, Payment, PaymentChange, Refund, RefundStatus, event_json, new_id};

/// The schema migrations, applied in order, each once, by [`PgStore::migrate`].
pub(super) const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "ledger", include_str!("../migrations/0001_ledger.sql")),
    (
        2,
        "scrub_payment_codes",
        include_str!("../migrations/0002_scrub_payment_codes.sql"),
    ),
    (
        3,
        "events_by_merchant",
        include_str!("../migrations/0003_events_by_merchant.sql"),
    ),
    (
        4,
        "cashier_token_hashes",
        include_str!("../migrations/0004_cashier_token_hashes.sql"),
    ),
    (
        5,
        "idempotency_keys_by_age",
        include_str!("../migrations/0005_idempotency_keys_by_age.sql"),
    ),
    (
        6,
        "drop_status_indexes",
        include_str!("../migrations/0006_drop_status_indexes.sql"),
    ),
    (
        7,
        "outbox_due_by_merchant",
        include_str!("../migrations/0007_outbox_due_by_merchant.sql"),
    ),
    (
        8,
        "authorisations",
        include_str!("../migrations/0008_authorisations.sql"),
    ),
    (
        9,
        "codes_and_payer_identities",
        include_str!("../migrations/0009_codes.sql"),
    ),
];

/// Key of the advisory lock that serialises migrations of instances starting together.
const MIGRATION_LOCK: i64 = 0x6d6f_6f6e_6761_7465;

/// A pooled connection idle longer than this is checked (one round trip) before it is used.
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// A pool of at most `max` connections. A connection back from its last use a moment ago is
/// handed out as it is; one idle for longer than [`IDLE_CHECK`] is pinged first, and closed
/// and replaced when the server no longer answers it. (sqlx's default pings on every
/// acquire: on a busy pool, a round trip beside every statement.)
fn pool_options(max: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > IDLE_CHECK {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// The PostgreSQL ledger: a connection pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// Connections with `synchronous_commit = off`, for the writes that need no durability of
    /// their own (a request's nonce, a provider attempt's log line): their commit does not wait
    /// for the WAL flush, and the request's next commit, which does, flushes them with it (the
    /// WAL is one sequence). Visible to every instance at once, like any commit.
    ahead: PgPool,
}

impl PgStore {
    /// Connects a pool of at most `max_connections` to `url` (`postgres://…`; a
    /// `?options[search_path]=…` picks a schema). Does not migrate.
    pub async fn connect(url: &str, max_connections: u32) -> Result<PgStore, StoreError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::Database("the database URL is not a PostgreSQL URL".into()))?
            .application_name("moongate");
        // One plain connection first, so an unreachable server or a refused login is reported
        // as such (the pool would only say it timed out). Errors never carry the password.
        let probe = sqlx::ConnectOptions::connect(&options)
            .await
            .map_err(|e| StoreError::Database(format!("cannot connect to PostgreSQL: {e}")))?;
        sqlx::Connection::close(probe).await.map_err(db)?;
        let ahead = pool_options((max_connections / 4).clamp(1, 8))
            .connect_with(options.clone().options([("synchronous_commit", "off")]))
            .await
            .map_err(db)?;
        let pool = pool_options(max_connections.max(1))
            .connect_with(options)
            .await
            .map_err(db)?;
        Ok(PgStore { pool, ahead })
    }

    /// Applies the migrations this build has and the database lacks, under an advisory lock
    /// (instances starting together take turns). Returns the names applied now.
    pub async fn migrate(&self) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(MIGRATION_LOCK)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::raw_sql(
            "CREATE TABLE IF NOT EXISTS moongate_migrations (\
             version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let done: Vec<i64> = sqlx::query_scalar("SELECT version FROM moongate_migrations")
            .fetch_all(&mut *tx)
            .await
            .map_err(db)?;
        let mut applied = Vec::new();
        for (version, name, sql) in MIGRATIONS {
            if done.contains(version) {
                continue;
            }
            sqlx::raw_sql(sql).execute(&mut *tx).await.map_err(db)?;
            sqlx::query(
                "INSERT INTO moongate_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            )
            .bind(version)
            .bind(name)
            .bind(ms(OffsetDateTime::now_utc()))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            applied.push(format!("{version:04}_{name}"));
        }
        tx.commit().await.map_err(db)?;
        Ok(applied)
    }

    /// Connects and applies pending migrations, logging each.
    pub async fn open(url: &str, max_connections: u32) -> Result<PgStore, StoreError> {
        let store = PgStore::connect(url, max_connections).await?;
        for applied in store.migrate().await? {
            tracing::info!(migration = %applied, "ledger migrated");
        }
        Ok(store)
    }

    /// Claims due janitor rows (open, next check passed), leasing them until `lease_until`:
    /// their columns, then their check count.
    async fn claim_due(
        &self,
        target: CheckTarget,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<PgRow>, StoreError> {
        let (table, columns, open) = match target {
            CheckTarget::Payment => ("payments", PAYMENT_COLUMNS, open_payment_statuses()),
            CheckTarget::Refund => ("refunds", REFUND_COLUMNS, open_refund_statuses()),
        };
        let sql = format!(
            "WITH due AS (SELECT id FROM {table} WHERE status IN ({open}) \
               AND COALESCE(next_check_at, 0) <= $1 ORDER BY next_check_at NULLS FIRST LIMIT $2 \
               FOR UPDATE SKIP LOCKED) \
             UPDATE {table} t SET next_check_at = $3 FROM due WHERE t.id = due.id \
             RETURNING {}, t.checks::BIGINT",
            qualified("t", columns)
        );
        sqlx::query(&sql)
            .bind(ms(now))
            .bind(i64::from(limit))
            .bind(ms(lease_until))
            .fetch_all(&self.pool)
            .await
            .map_err(db)
    }

    /// The pool (tests and the multi-instance checks read the ledger through it).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

fn get<'r, T>(row: &'r PgRow, index: usize) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(index).map_err(db)
}

fn payment(row: &PgRow) -> Result<Payment, StoreError> {
    PaymentRow {
        id: get(row, 0)?,
        merchant_id: get(row, 1)?,
        account_id: get(row, 2)?,
        provider: get(row, 3)?,
        method: get(row, 4)?,
        amount: get(row, 5)?,
        currency: get(row, 6)?,
        merchant_reference: get(row, 7)?,
        description: get(row, 8)?,
        return_url: get(row, 9)?,
        metadata: get(row, 10)?,
        provider_order_id: get(row, 11)?,
        provider_ref: get(row, 12)?,
        status: get(row, 13)?,
        next_action: get(row, 14)?,
        failure: get(row, 15)?,
        amount_refunded: get(row, 16)?,
        expires_at: get(row, 17)?,
        created_at: get(row, 18)?,
        updated_at: get(row, 19)?,
        payer: get(row, 20)?,
        route: get(row, 21)?,
        channel: get(row, 22)?,
    }
    .decode()
}

fn refund(row: &PgRow) -> Result<Refund, StoreError> {
    RefundRow {
        id: get(row, 0)?,
        payment_id: get(row, 1)?,
        merchant_id: get(row, 2)?,
        amount: get(row, 3)?,
        currency: get(row, 4)?,
        reason: get(row, 5)?,
        status: get(row, 6)?,
        failure: get(row, 7)?,
        created_at: get(row, 8)?,
        updated_at: get(row, 9)?,
    }
    .decode()
}

fn checkout(row: &PgRow) -> Result<Checkout, StoreError> {
    CheckoutRow {
        id: get(row, 0)?,
        token_hash: get(row, 1)?,
        merchant_id: get(row, 2)?,
        amount: get(row, 3)?,
        currency: get(row, 4)?,
        merchant_reference: get(row, 5)?,
        description: get(row, 6)?,
        return_url: get(row, 7)?,
        cancel_url: get(row, 8)?,
        methods: get(row, 9)?,
        openid: get(row, 10)?,
        metadata: get(row, 11)?,
        expires_at: get(row, 12)?,
        created_at: get(row, 13)?,
        payment_id: get(row, 14)?,
        legacy_token: get(row, 15)?,
    }
    .decode()
}

/// Decodes every row with `decode`.
fn all<T>(
    rows: Vec<PgRow>,
    decode: impl Fn(&PgRow) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    rows.iter().map(decode).collect()
}

/// `columns` with each name qualified by `table` (for `RETURNING` after a join).
fn qualified(table: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn load_payment(
    conn: &mut PgConnection,
    id: &str,
    lock: bool,
) -> Result<Option<Payment>, StoreError> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1{lock}");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    row.as_ref().map(payment).transpose()
}

async fn load_refund(
    conn: &mut PgConnection,
    id: &str,
    lock: bool,
) -> Result<Option<Refund>, StoreError> {
    let lock = if lock { " FOR UPDATE" } else { "" };
    let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1{lock}");
    let row = sqlx::query(&sql)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
    row.as_ref().map(refund).transpose()
}

/// Appends an event and its outbox row, in one statement.
async fn append_event(
    conn: &mut PgConnection,
    merchant_id: &str,
    kind: &str,
    object_id: &str,
    object: serde_json::Value,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    let id = new_id("evt");
    let body = event_json(&id, kind, now, object).to_string();
    sqlx::query(
        "WITH e AS (INSERT INTO events (id, merchant_id, type, object_id, body, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq) \
         INSERT INTO outbox (event_seq, merchant_id, next_attempt_at) SELECT seq, $2, $6 FROM e",
    )
    .bind(&id)
    .bind(merchant_id)
    .bind(kind)
    .bind(object_id)
    .bind(&body)
    .bind(ms(now))
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    Ok(())
}

/// A query with bind parameters, as the binders below extend it.
type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds a payment's columns as the next 23 parameters, in [`PAYMENT_COLUMNS`] order.
fn bind_payment(query: PgQuery<'_>, r: PaymentRow) -> PgQuery<'_> {
    query
        .bind(r.id)
        .bind(r.merchant_id)
        .bind(r.account_id)
        .bind(r.provider)
        .bind(r.method)
        .bind(r.amount)
        .bind(r.currency)
        .bind(r.merchant_reference)
        .bind(r.description)
        .bind(r.return_url)
        .bind(r.metadata)
        .bind(r.provider_order_id)
        .bind(r.provider_ref)
        .bind(r.status)
        .bind(r.next_action)
        .bind(r.failure)
        .bind(r.amount_refunded)
        .bind(r.expires_at)
        .bind(r.created_at)
        .bind(r.updated_at)
        .bind(r.payer)
        .bind(r.route)
        .bind(r.channel)
}

/// What a payment change sets, with `$1` the payment's id and `$2`–`$7` bound by
/// [`bind_change`].
const CHANGE_SET: &str = "status = $2, next_action = $3, provider_ref = $4, failure = $5, \
     updated_at = $6, paid_at = CASE WHEN $2 = 'succeeded' THEN COALESCE(paid_at, $6) \
     ELSE paid_at END, payer = $7";

/// Binds `$1`–`$7` of [`CHANGE_SET`]: the id, then the changed row's columns at `now`.
fn bind_change<'q>(
    query: PgQuery<'q>,
    id: &'q str,
    row: PaymentRow,
    now: OffsetDateTime,
) -> PgQuery<'q> {
    query
        .bind(id)
        .bind(row.status)
        .bind(row.next_action)
        .bind(row.provider_ref)
        .bind(row.failure)
        .bind(ms(now))
        .bind(row.payer)
}

/// Inserts a payment row (first check due 30 s after creation).
async fn insert_payment(conn: &mut PgConnection, p: &Payment) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO payments ({PAYMENT_COLUMNS}, next_check_at) VALUES ($1, $2, $3, $4, $5, $6, \
         $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, \
         $19 + {FIRST_CHECK_MS})"
    );
    bind_payment(sqlx::query(&sql), PaymentRow::of(p)?)
        .execute(&mut *conn)
        .await
        .map_err(db)?;
    Ok(())
}

/// Inserts the key row, or reports what an existing one says. A competing transaction that
/// holds the same key makes the insert wait for its outcome.
async fn claim(
    conn: &mut PgConnection,
    claim: &IdemClaim,
    resource_id: &str,
) -> Result<Option<Begin<()>>, StoreError> {
    // The nonce first, in the same transaction: a replay is refused before anything else.
    if let Some(nonce) = &claim.nonce
        && !keys::insert_nonce(
            &mut *conn,
            &claim.merchant_id,
            &nonce.nonce,
            nonce.keep_until,
            claim.now,
        )
        .await?
    {
        return Err(StoreError::NonceReused);
    }
    let now = ms(claim.now);
    // A key back after its retention is taken over in the same statement (the janitor
    // deletes the others); a key released between our insert and our read is claimed on the
    // next round.
    for _ in 0..3 {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (merchant_id, key, request_hash, resource_id, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (merchant_id, key) DO UPDATE SET \
             request_hash = excluded.request_hash, resource_id = excluded.resource_id, \
             status = NULL, response = NULL, created_at = excluded.created_at, completed_at = NULL \
             WHERE idempotency_keys.created_at < $6",
        )
        .bind(&claim.merchant_id)
        .bind(&claim.key)
        .bind(&claim.request_hash)
        .bind(resource_id)
        .bind(now)
        .bind(now - IDEMPOTENCY_RETENTION_MS)
        .execute(&mut *conn)
        .await
        .map_err(db)?
        .rows_affected();
        if inserted == 1 {
            return Ok(None);
        }
        let existing = sqlx::query(
            "SELECT request_hash, resource_id, status::BIGINT, response, created_at \
             FROM idempotency_keys WHERE merchant_id = $1 AND key = $2",
        )
        .bind(&claim.merchant_id)
        .bind(&claim.key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db)?;
        if let Some(row) = existing {
            let key = KeyRow {
                request_hash: get(&row, 0)?,
                resource_id: get(&row, 1)?,
                status: get(&row, 2)?,
                response: get(&row, 3)?,
                created_at: get(&row, 4)?,
            };
            return key.verdict(claim).map(Some);
        }
    }
    Err(StoreError::Database(
        "idempotency key kept changing under the claim".into(),
    ))
}

/// The breaks of a run (report order: the category enum's, not its name's).
fn stored_break(row: &PgRow) -> Result<StoredBreak, StoreError> {
    let body: String = get(row, 5)?;
    let mut record: Break =
        serde_json::from_str(&body).map_err(|_| StoreError::Corrupt("break body".into()))?;
    record.id = get(row, 4)?;
    let status: String = get(row, 6)?;
    record.status =
        BreakStatus::parse(&status).ok_or_else(|| StoreError::Corrupt("break status".into()))?;
    record.note = get(row, 7)?;
    Ok(StoredBreak {
        merchant_id: get(row, 0)?,
        account_id: get(row, 1)?,
        day: get(row, 2)?,
        run_id: get(row, 3)?,
        record,
    })
}

fn recon_run(row: &PgRow) -> Result<ReconRun, StoreError> {
    Ok(ReconRun {
        id: get(row, 0)?,
        merchant_id: get(row, 1)?,
        account_id: get(row, 2)?,
        day: get(row, 3)?,
        statement_id: get(row, 4)?,
        finished_at: from_ms(get(row, 5)?)?,
        report: get(row, 6)?,
    })
}

fn ledger_payment(row: &PgRow) -> Result<LedgerPayment, StoreError> {
    super::rows::LedgerPaymentRow {
        id: get(row, 0)?,
        provider_ref: get(row, 1)?,
        amount: get(row, 2)?,
        currency: get(row, 3)?,
        status: get(row, 4)?,
        paid_at_ms: get(row, 5)?,
    }
    .decode()
}

fn ledger_refund(row: &PgRow) -> Result<LedgerRefund, StoreError> {
    super::rows::LedgerRefundRow {
        id: get(row, 0)?,
        payment_id: get(row, 1)?,
        amount: get(row, 2)?,
        currency: get(row, 3)?,
        status: get(row, 4)?,
        settled_at_ms: get(row, 5)?,
    }
    .decode()
}
