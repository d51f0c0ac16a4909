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

use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use moongate_contract::ProviderKind;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::{PgConnection, Row};
use time::OffsetDateTime;

use super::rows::{
    CHECKOUT_COLUMNS, CheckoutRow, FIRST_CHECK_MS, IDEMPOTENCY_RETENTION_MS, KeyRow,
    PAYMENT_COLUMNS, PaymentRow, REFUND_COLUMNS, RefundRow, apply_change, cast, count, from_ms, ms,
    operation_name, refund_fits,
};
use super::{
    Attempt, Begin, CheckTarget, DailyClaim, Delivery, EventRecord, IdemClaim, InboxKey,
    OutboxItem, PaymentDecision, ReconRun, Store, StoreError, StoredBreak, StoredEvent, Updated,
    recon_sql,
};
use crate::cashier::Checkout;
use crate::ledger::{Failure, Payment, Refund, RefundStatus, event_json, new_id};
use crate::reconcile::{Break, BreakStatus, LedgerPayment, LedgerRefund, StatementRecord};

/// The schema migrations, applied in order, each once, by [`PgStore::migrate`].
const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "ledger", include_str!("migrations/0001_ledger.sql"))];

/// Key of the advisory lock that serialises migrations of instances starting together.
const MIGRATION_LOCK: i64 = 0x6d6f_6f6e_6761_7465;

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

/// The PostgreSQL ledger: a connection pool.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
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
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options)
            .await
            .map_err(db)?;
        Ok(PgStore { pool })
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
            CheckTarget::Payment => (
                "payments",
                PAYMENT_COLUMNS,
                "'pending', 'unknown', 'requires_action'",
            ),
            CheckTarget::Refund => ("refunds", REFUND_COLUMNS, "'pending', 'unknown'"),
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
        token: get(row, 1)?,
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

/// Inserts a payment row (first check due 30 s after creation).
async fn insert_payment(conn: &mut PgConnection, p: &Payment) -> Result<(), StoreError> {
    let r = PaymentRow::of(p)?;
    let sql = format!(
        "INSERT INTO payments ({PAYMENT_COLUMNS}, next_check_at) VALUES ($1, $2, $3, $4, $5, $6, \
         $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, \
         $19 + {FIRST_CHECK_MS})"
    );
    sqlx::query(&sql)
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
    let now = ms(claim.now);
    // Expired keys are forgotten lazily, at the moment the same key comes back.
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 AND created_at < $3",
    )
    .bind(&claim.merchant_id)
    .bind(&claim.key)
    .bind(now - IDEMPOTENCY_RETENTION_MS)
    .execute(&mut *conn)
    .await
    .map_err(db)?;
    // A key released between our insert and our read is simply claimed on the next round.
    for _ in 0..3 {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (merchant_id, key, request_hash, resource_id, created_at) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (merchant_id, key) DO NOTHING",
        )
        .bind(&claim.merchant_id)
        .bind(&claim.key)
        .bind(&claim.request_hash)
        .bind(resource_id)
        .bind(now)
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
    recon_sql::LedgerPaymentRow {
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
    recon_sql::LedgerRefundRow {
        id: get(row, 0)?,
        payment_id: get(row, 1)?,
        amount: get(row, 2)?,
        currency: get(row, 3)?,
        status: get(row, 4)?,
        settled_at_ms: get(row, 5)?,
    }
    .decode()
}

const BREAK_FIELDS: &str = "merchant_id, account_id, day, run_id, id, body, status, note";
const RUN_FIELDS: &str = "id, merchant_id, account_id, day, statement_id, finished_at, report";

#[async_trait]
impl Store for PgStore {
    async fn remember_nonce(
        &self,
        merchant_id: &str,
        nonce: &str,
        now: OffsetDateTime,
        keep_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        // A lapsed row of the same nonce is taken over; a live one refuses the replay.
        let inserted = sqlx::query(
            "INSERT INTO nonces (merchant_id, nonce, keep_until) VALUES ($1, $2, $3) \
             ON CONFLICT (merchant_id, nonce) DO UPDATE SET keep_until = excluded.keep_until \
             WHERE nonces.keep_until < $4",
        )
        .bind(merchant_id)
        .bind(nonce)
        .bind(ms(keep_until))
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        // Lapsed nonces go a few at a time; instances skip each other's rows.
        sqlx::query(
            "DELETE FROM nonces WHERE ctid IN (SELECT ctid FROM nonces WHERE keep_until < $1 \
             LIMIT 64 FOR UPDATE SKIP LOCKED)",
        )
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(inserted == 1)
    }

    async fn begin_payment(
        &self,
        idem: IdemClaim,
        payment: Payment,
    ) -> Result<Begin<Payment>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if let Some(found) = claim(&mut tx, &idem, &payment.id).await? {
            return Ok(cast(found));
        }
        insert_payment(&mut tx, &payment).await?;
        append_event(
            &mut tx,
            &payment.merchant_id,
            "payment.created",
            &payment.id,
            payment.to_api_json(),
            payment.created_at,
        )
        .await?;
        tx.commit().await.map_err(db)?;
        Ok(Begin::Fresh(payment))
    }

    async fn begin_refund(
        &self,
        idem: IdemClaim,
        refund: Refund,
    ) -> Result<Begin<Refund>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if let Some(found) = claim(&mut tx, &idem, &refund.id).await? {
            return Ok(cast(found));
        }
        // The payment's lock serialises refunds of one payment across instances.
        let payment = load_payment(&mut tx, &refund.payment_id, true).await?;
        let held: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(amount), 0)::BIGINT FROM refunds WHERE payment_id = $1 AND status != 'failed'",
        )
        .bind(&refund.payment_id)
        .fetch_one(&mut *tx)
        .await
        .map_err(db)?;
        refund_fits(payment.as_ref(), &refund, held)?;
        let r = RefundRow::of(&refund)?;
        sqlx::query(&format!(
            "INSERT INTO refunds ({REFUND_COLUMNS}, next_check_at) VALUES ($1, $2, $3, $4, $5, $6, \
             $7, $8, $9, $10, $9 + {FIRST_CHECK_MS})"
        ))
        .bind(r.id)
        .bind(r.payment_id)
        .bind(r.merchant_id)
        .bind(r.amount)
        .bind(r.currency)
        .bind(r.reason)
        .bind(r.status)
        .bind(r.failure)
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        append_event(
            &mut tx,
            &refund.merchant_id,
            "refund.created",
            &refund.id,
            refund.to_api_json(),
            refund.created_at,
        )
        .await?;
        tx.commit().await.map_err(db)?;
        Ok(Begin::Fresh(refund))
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
        sqlx::query(
            "UPDATE idempotency_keys SET status = $3, response = $4, completed_at = $5 \
             WHERE merchant_id = $1 AND key = $2",
        )
        .bind(merchant_id)
        .bind(key)
        .bind(i32::from(status))
        .bind(body)
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
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

    async fn payment(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> Result<Option<Payment>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let found = load_payment(&mut conn, id, false).await?;
        Ok(found.filter(|p| merchant_id.is_none_or(|m| m == p.merchant_id)))
    }

    async fn list_payments(
        &self,
        merchant_id: &str,
        starting_after: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Payment>, bool), StoreError> {
        let cursor: i64 = match starting_after {
            None => i64::MAX,
            Some(id) => {
                sqlx::query_scalar("SELECT seq FROM payments WHERE id = $1 AND merchant_id = $2")
                    .bind(id)
                    .bind(merchant_id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(db)?
                    .ok_or_else(|| StoreError::Corrupt("cursor".into()))?
            }
        };
        let rows = sqlx::query(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE merchant_id = $1 AND seq < $2 ORDER BY seq DESC LIMIT $3"
        ))
        .bind(merchant_id)
        .bind(cursor)
        .bind(i64::from(limit) + 1)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut out = all(rows, payment)?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let more = out.len() > limit;
        out.truncate(limit);
        Ok((out, more))
    }

    async fn refund(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> Result<Option<Refund>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(db)?;
        let found = load_refund(&mut conn, id, false).await?;
        Ok(found.filter(|r| merchant_id.is_none_or(|m| m == r.merchant_id)))
    }

    async fn update_payment(
        &self,
        id: &str,
        inbox: Option<InboxKey>,
        now: OffsetDateTime,
        decide: PaymentDecision,
    ) -> Result<Updated<Payment>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The payment's lock orders every writer of it, on every instance.
        let Some(mut payment) = load_payment(&mut tx, id, true).await? else {
            return Ok(Updated::Missing);
        };
        if let Some(inbox) = &inbox {
            let inserted = sqlx::query(
                "INSERT INTO inbox (provider, account, dedupe_id, payment_id, received_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            )
            .bind(&inbox.provider)
            .bind(&inbox.account)
            .bind(&inbox.dedupe_id)
            .bind(id)
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
            if inserted == 0 {
                return Ok(Updated::Duplicate);
            }
        }
        let Some(change) = decide(&payment) else {
            tx.commit().await.map_err(db)?;
            return Ok(Updated::Done {
                record: payment,
                changed: false,
            });
        };
        if !apply_change(&mut payment, change) {
            tx.commit().await.map_err(db)?;
            return Ok(Updated::Done {
                record: payment,
                changed: false,
            });
        }
        payment.updated_at = now;
        let row = PaymentRow::of(&payment)?;
        sqlx::query(
            "UPDATE payments SET status = $2, next_action = $3, provider_ref = $4, failure = $5, \
             updated_at = $6, paid_at = CASE WHEN $2 = 'succeeded' THEN COALESCE(paid_at, $6) \
             ELSE paid_at END WHERE id = $1",
        )
        .bind(id)
        .bind(row.status)
        .bind(row.next_action)
        .bind(row.provider_ref)
        .bind(row.failure)
        .bind(ms(now))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let kind = format!("payment.{}", payment.status.as_str());
        append_event(
            &mut tx,
            &payment.merchant_id,
            &kind,
            &payment.id,
            payment.to_api_json(),
            now,
        )
        .await?;
        tx.commit().await.map_err(db)?;
        Ok(Updated::Done {
            record: payment,
            changed: true,
        })
    }

    async fn update_refund(
        &self,
        id: &str,
        status: RefundStatus,
        failure: Option<Failure>,
        now: OffsetDateTime,
    ) -> Result<Updated<Refund>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let Some(mut refund) = load_refund(&mut tx, id, true).await? else {
            return Ok(Updated::Missing);
        };
        if !refund.status.can_become(status) {
            tx.commit().await.map_err(db)?;
            return Ok(Updated::Done {
                record: refund,
                changed: false,
            });
        }
        refund.status = status;
        refund.failure = failure;
        refund.updated_at = now;
        let row = RefundRow::of(&refund)?;
        sqlx::query("UPDATE refunds SET status = $2, failure = $3, updated_at = $4 WHERE id = $1")
            .bind(id)
            .bind(row.status)
            .bind(row.failure)
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let kind = format!("refund.{}", status.as_str());
        append_event(
            &mut tx,
            &refund.merchant_id,
            &kind,
            &refund.id,
            refund.to_api_json(),
            now,
        )
        .await?;
        if status == RefundStatus::Succeeded {
            sqlx::query(
                "UPDATE payments SET amount_refunded = amount_refunded + $2, updated_at = $3 WHERE id = $1",
            )
            .bind(&refund.payment_id)
            .bind(refund.amount)
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
            if let Some(payment) = load_payment(&mut tx, &refund.payment_id, false).await? {
                append_event(
                    &mut tx,
                    &payment.merchant_id,
                    "payment.refunded",
                    &payment.id,
                    payment.to_api_json(),
                    now,
                )
                .await?;
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(Updated::Done {
            record: refund,
            changed: true,
        })
    }

    async fn record_attempt(&self, attempt: Attempt) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO attempts (payment_id, refund_id, operation, started_at, elapsed_ms, outcome, account_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&attempt.payment_id)
        .bind(&attempt.refund_id)
        .bind(attempt.operation)
        .bind(ms(attempt.started_at))
        .bind(attempt.elapsed_ms)
        .bind(&attempt.outcome)
        .bind(&attempt.account_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn payments_due(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(Payment, u32)>, StoreError> {
        let rows = self
            .claim_due(CheckTarget::Payment, now, lease_until, limit)
            .await?;
        all(rows, |row| Ok((payment(row)?, count(get(row, 23)?))))
    }

    async fn refunds_due(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<(Refund, u32)>, StoreError> {
        let rows = self
            .claim_due(CheckTarget::Refund, now, lease_until, limit)
            .await?;
        all(rows, |row| Ok((refund(row)?, count(get(row, 10)?))))
    }

    async fn schedule_check(
        &self,
        target: CheckTarget,
        id: &str,
        next_at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let table = match target {
            CheckTarget::Payment => "payments",
            CheckTarget::Refund => "refunds",
        };
        sqlx::query(&format!(
            "UPDATE {table} SET next_check_at = $2, checks = checks + 1 WHERE id = $1"
        ))
        .bind(id)
        .bind(ms(next_at))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn event(
        &self,
        merchant_id: &str,
        event_id: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        let found = sqlx::query(
            "SELECT e.seq, e.body, o.attempts::BIGINT, o.next_attempt_at, o.delivered_at FROM events e \
             LEFT JOIN outbox o ON o.event_seq = e.seq WHERE e.id = $1 AND e.merchant_id = $2",
        )
        .bind(event_id)
        .bind(merchant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = found else {
            return Ok(None);
        };
        let seq: i64 = get(&row, 0)?;
        let rows = sqlx::query(
            "SELECT attempted_at, delivered, error FROM deliveries WHERE event_seq = $1 ORDER BY seq",
        )
        .bind(seq)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let deliveries = all(rows, |r| {
            Ok(Delivery {
                attempted_at: from_ms(get(r, 0)?)?,
                delivered: get(r, 1)?,
                error: get(r, 2)?,
            })
        })?;
        Ok(Some(EventRecord {
            body: get(&row, 1)?,
            attempts: get::<Option<i64>>(&row, 2)?.unwrap_or(0),
            next_attempt_at: get::<Option<i64>>(&row, 3)?.map(from_ms).transpose()?,
            delivered_at: get::<Option<i64>>(&row, 4)?.map(from_ms).transpose()?,
            deliveries,
        }))
    }

    async fn resend_event(
        &self,
        merchant_id: &str,
        event_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(
            "UPDATE outbox SET next_attempt_at = $3, attempts = 0 \
             WHERE event_seq = (SELECT seq FROM events WHERE id = $1 AND merchant_id = $2)",
        )
        .bind(event_id)
        .bind(merchant_id)
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(changed > 0)
    }

    async fn attempts_for(&self, payment_id: &str) -> Result<Vec<Attempt>, StoreError> {
        let rows = sqlx::query(
            "SELECT payment_id, COALESCE(account_id, ''), refund_id, operation, started_at, elapsed_ms, outcome \
             FROM attempts WHERE payment_id = $1 ORDER BY seq",
        )
        .bind(payment_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows, |row| {
            let operation: String = get(row, 3)?;
            Ok(Attempt {
                payment_id: get(row, 0)?,
                account_id: get(row, 1)?,
                refund_id: get(row, 2)?,
                operation: operation_name(&operation),
                started_at: from_ms(get(row, 4)?)?,
                elapsed_ms: get(row, 5)?,
                outcome: get(row, 6)?,
            })
        })
    }

    async fn switch_account(
        &self,
        payment_id: &str,
        from: &str,
        to: &str,
        provider: ProviderKind,
        now: OffsetDateTime,
    ) -> Result<Option<Payment>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE payments SET account_id = $3, provider = $4, updated_at = $5 \
             WHERE id = $1 AND account_id = $2 AND status = 'pending' RETURNING {PAYMENT_COLUMNS}"
        ))
        .bind(payment_id)
        .bind(from)
        .bind(to)
        .bind(provider.as_str())
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(payment).transpose()
    }

    async fn payments_in_doubt(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Payment>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status IN ('pending', 'unknown', 'requires_action') \
             AND updated_at <= $1 ORDER BY updated_at LIMIT $2"
        ))
        .bind(ms(before))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows, payment)
    }

    async fn refunds_in_doubt(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Refund>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE status IN ('pending', 'unknown') \
             AND updated_at <= $1 ORDER BY updated_at LIMIT $2"
        ))
        .bind(ms(before))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows, refund)
    }

    async fn due_webhooks(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(
            "WITH due AS (SELECT event_seq FROM outbox \
               WHERE next_attempt_at IS NOT NULL AND next_attempt_at <= $1 \
               ORDER BY event_seq LIMIT $2 FOR UPDATE SKIP LOCKED), \
             leased AS (UPDATE outbox o SET next_attempt_at = $3 FROM due \
               WHERE o.event_seq = due.event_seq RETURNING o.event_seq, o.merchant_id, o.attempts) \
             SELECT l.event_seq, e.id, l.merchant_id, e.body, l.attempts::BIGINT \
             FROM leased l JOIN events e ON e.seq = l.event_seq ORDER BY l.event_seq",
        )
        .bind(ms(now))
        .bind(i64::from(limit))
        .bind(ms(lease_until))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows, |row| {
            Ok(OutboxItem {
                event_seq: get(row, 0)?,
                event_id: get(row, 1)?,
                merchant_id: get(row, 2)?,
                body: get(row, 3)?,
                attempts: count(get(row, 4)?),
            })
        })
    }

    async fn webhook_attempted(
        &self,
        event_seq: i64,
        delivered: bool,
        next_attempt_at: Option<OffsetDateTime>,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let now = ms(OffsetDateTime::now_utc());
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2, \
             delivered_at = CASE WHEN $3 THEN $4 ELSE NULL END, last_error = $5 WHERE event_seq = $1",
        )
        .bind(event_seq)
        .bind(next_attempt_at.map(ms))
        .bind(delivered)
        .bind(now)
        .bind(&error)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query(
            "INSERT INTO deliveries (event_seq, attempted_at, delivered, error) VALUES ($1, $2, $3, $4)",
        )
        .bind(event_seq)
        .bind(now)
        .bind(delivered)
        .bind(&error)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(())
    }

    async fn events_for(&self, object_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, id, type, object_id FROM events WHERE object_id = $1 ORDER BY seq",
        )
        .bind(object_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows, |row| {
            Ok(StoredEvent {
                seq: get(row, 0)?,
                id: get(row, 1)?,
                kind: get(row, 2)?,
                object_id: get(row, 3)?,
            })
        })
    }

    async fn recon_ledger(
        &self,
        merchant_id: &str,
        account_id: &str,
        from: OffsetDateTime,
        to: OffsetDateTime,
    ) -> Result<(Vec<LedgerPayment>, Vec<LedgerRefund>), StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM payments WHERE account_id = $2 AND paid_at >= $3 AND paid_at < $4 \
             AND merchant_id = $1 AND status = 'succeeded'",
            recon_sql::PAYMENT_FIELDS
        ))
        .bind(merchant_id)
        .bind(account_id)
        .bind(ms(from))
        .bind(ms(to))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let payments = all(rows, ledger_payment)?;
        let rows = sqlx::query(&format!(
            "SELECT {} FROM refunds r JOIN payments p ON p.id = r.payment_id \
             WHERE r.status = 'succeeded' AND r.updated_at >= $3 AND r.updated_at < $4 \
             AND r.merchant_id = $1 AND p.account_id = $2",
            recon_sql::REFUND_FIELDS
        ))
        .bind(merchant_id)
        .bind(account_id)
        .bind(ms(from))
        .bind(ms(to))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok((payments, all(rows, ledger_refund)?))
    }

    async fn recon_lookup(
        &self,
        merchant_id: &str,
        account_id: &str,
        payment_ids: Vec<String>,
        refund_ids: Vec<String>,
    ) -> Result<(Vec<LedgerPayment>, Vec<LedgerRefund>), StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM payments WHERE id = ANY($1) AND merchant_id = $2 AND account_id = $3",
            recon_sql::PAYMENT_FIELDS
        ))
        .bind(&payment_ids)
        .bind(merchant_id)
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let payments = all(rows, ledger_payment)?;
        let rows = sqlx::query(&format!(
            "SELECT {} FROM refunds r JOIN payments p ON p.id = r.payment_id \
             WHERE r.id = ANY($1) AND r.merchant_id = $2 AND p.account_id = $3",
            recon_sql::REFUND_FIELDS
        ))
        .bind(&refund_ids)
        .bind(merchant_id)
        .bind(account_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok((payments, all(rows, ledger_refund)?))
    }

    async fn claim_daily_run(
        &self,
        claim: DailyClaim,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let changed = sqlx::query(recon_sql::CLAIM_DAILY)
            .bind(&claim.merchant_id)
            .bind(&claim.account_id)
            .bind(&claim.day)
            .bind(&claim.holder)
            .bind(ms(now))
            .bind(ms(lease_until))
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
        Ok(changed == 1)
    }

    async fn release_daily_run(&self, claim: DailyClaim) -> Result<(), StoreError> {
        sqlx::query(recon_sql::RELEASE_DAILY)
            .bind(&claim.merchant_id)
            .bind(&claim.account_id)
            .bind(&claim.day)
            .bind(&claim.holder)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn save_statement(&self, r: StatementRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO statements (id, merchant_id, account_id, provider, day, source, sha256, path, bytes, fetched_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&r.id)
        .bind(&r.merchant_id)
        .bind(&r.account_id)
        .bind(&r.provider)
        .bind(&r.day)
        .bind(&r.source)
        .bind(&r.sha256)
        .bind(&r.path)
        .bind(i64::try_from(r.bytes).unwrap_or(i64::MAX))
        .bind(&r.fetched_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn save_recon_run(
        &self,
        run: ReconRun,
        breaks: Vec<Break>,
    ) -> Result<Vec<Break>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Two runs of one statement day (a manual one beside the daily one) take turns.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!(
                "{}/{}/{}",
                run.merchant_id, run.account_id, run.day
            ))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let now = ms(run.finished_at);
        sqlx::query(
            "INSERT INTO recon_runs (id, merchant_id, account_id, day, statement_id, finished_at, report) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&run.id)
        .bind(&run.merchant_id)
        .bind(&run.account_id)
        .bind(&run.day)
        .bind(&run.statement_id)
        .bind(now)
        .bind(&run.report)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        let mut stored = Vec::with_capacity(breaks.len());
        for mut record in breaks {
            let refund_id = record.refund_id.clone().unwrap_or_default();
            let existing = sqlx::query(
                "SELECT id, status, note FROM recon_breaks WHERE merchant_id = $1 AND account_id = $2 \
                 AND day = $3 AND category = $4 AND kind = $5 AND payment_id = $6 AND refund_id = $7",
            )
            .bind(&run.merchant_id)
            .bind(&run.account_id)
            .bind(&run.day)
            .bind(record.category.as_str())
            .bind(&record.kind)
            .bind(&record.payment_id)
            .bind(&refund_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            match existing {
                Some(row) => {
                    record.id = get(&row, 0)?;
                    let status: String = get(&row, 1)?;
                    record.status = BreakStatus::parse(&status)
                        .ok_or_else(|| StoreError::Corrupt("break status".into()))?;
                    record.note = get(&row, 2)?;
                    sqlx::query(
                        "UPDATE recon_breaks SET run_id = $2, body = $3, updated_at = $4 WHERE id = $1",
                    )
                    .bind(&record.id)
                    .bind(&run.id)
                    .bind(recon_sql::break_json(&record)?)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
                None => {
                    record.id = new_id("brk");
                    record.status = BreakStatus::Open;
                    record.note = None;
                    sqlx::query(
                        "INSERT INTO recon_breaks (id, merchant_id, account_id, day, category, kind, payment_id, refund_id, run_id, body, status, note, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'open', NULL, $11, $11)",
                    )
                    .bind(&record.id)
                    .bind(&run.merchant_id)
                    .bind(&run.account_id)
                    .bind(&run.day)
                    .bind(record.category.as_str())
                    .bind(&record.kind)
                    .bind(&record.payment_id)
                    .bind(&refund_id)
                    .bind(&run.id)
                    .bind(recon_sql::break_json(&record)?)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(db)?;
                }
            }
            stored.push(record);
        }
        sqlx::query(
            "UPDATE recon_breaks SET status = 'resolved', note = 'no longer found by run ' || $4, updated_at = $5 \
             WHERE merchant_id = $1 AND account_id = $2 AND day = $3 AND run_id != $4 AND status = 'open'",
        )
        .bind(&run.merchant_id)
        .bind(&run.account_id)
        .bind(&run.day)
        .bind(&run.id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(stored)
    }

    async fn recon_run(
        &self,
        merchant_id: Option<&str>,
        run_id: &str,
    ) -> Result<Option<(ReconRun, Vec<Break>)>, StoreError> {
        let found = sqlx::query(&format!(
            "SELECT {RUN_FIELDS} FROM recon_runs WHERE id = $1 AND ($2::TEXT IS NULL OR merchant_id = $2)"
        ))
        .bind(run_id)
        .bind(merchant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = found else {
            return Ok(None);
        };
        let run = recon_run(&row)?;
        let rows = sqlx::query(&format!(
            "SELECT {BREAK_FIELDS} FROM recon_breaks WHERE run_id = $1"
        ))
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let mut breaks: Vec<Break> = all(rows, |row| Ok(stored_break(row)?.record))?;
        recon_sql::report_order(&mut breaks);
        Ok(Some((run, breaks)))
    }

    async fn latest_recon_run(
        &self,
        merchant_id: &str,
        account_id: &str,
        day: &str,
    ) -> Result<Option<ReconRun>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RUN_FIELDS} FROM recon_runs WHERE merchant_id = $1 AND account_id = $2 AND day = $3 \
             ORDER BY finished_at DESC LIMIT 1"
        ))
        .bind(merchant_id)
        .bind(account_id)
        .bind(day)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(recon_run).transpose()
    }

    async fn recon_runs(
        &self,
        merchant_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ReconRun>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RUN_FIELDS} FROM recon_runs WHERE ($1::TEXT IS NULL OR merchant_id = $1) \
             ORDER BY finished_at DESC LIMIT $2"
        ))
        .bind(merchant_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows, recon_run)
    }

    async fn breaks(
        &self,
        merchant_id: Option<&str>,
        status: Option<BreakStatus>,
        limit: u32,
    ) -> Result<Vec<StoredBreak>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {BREAK_FIELDS} FROM recon_breaks WHERE ($1::TEXT IS NULL OR merchant_id = $1) \
             AND ($2::TEXT IS NULL OR status = $2) ORDER BY updated_at DESC, id LIMIT $3"
        ))
        .bind(merchant_id)
        .bind(status.map(|s| s.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows, stored_break)
    }

    async fn break_by_id(
        &self,
        merchant_id: Option<&str>,
        break_id: &str,
    ) -> Result<Option<StoredBreak>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {BREAK_FIELDS} FROM recon_breaks WHERE id = $1 AND ($2::TEXT IS NULL OR merchant_id = $2)"
        ))
        .bind(break_id)
        .bind(merchant_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(stored_break).transpose()
    }

    async fn set_break_status(
        &self,
        merchant_id: Option<&str>,
        break_id: &str,
        status: BreakStatus,
        note: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Option<StoredBreak>, StoreError> {
        let row = sqlx::query(&format!(
            "UPDATE recon_breaks SET status = $3, note = $4, updated_at = $5 \
             WHERE id = $1 AND ($2::TEXT IS NULL OR merchant_id = $2) RETURNING {BREAK_FIELDS}"
        ))
        .bind(break_id)
        .bind(merchant_id)
        .bind(status.as_str())
        .bind(note)
        .bind(ms(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(stored_break).transpose()
    }

    async fn insert_repaired_payment(
        &self,
        payment: Payment,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // Two repairs of one break take turns; the second finds the payment.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(&payment.id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        if load_payment(&mut tx, &payment.id, false).await?.is_some() {
            return Ok(false);
        }
        insert_payment(&mut tx, &payment).await?;
        sqlx::query("UPDATE payments SET paid_at = $2, next_check_at = NULL WHERE id = $1")
            .bind(&payment.id)
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        append_event(
            &mut tx,
            &payment.merchant_id,
            "payment.succeeded",
            &payment.id,
            payment.to_api_json(),
            now,
        )
        .await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn begin_checkout(
        &self,
        idem: IdemClaim,
        checkout: Checkout,
    ) -> Result<Begin<Checkout>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        if let Some(found) = claim(&mut tx, &idem, &checkout.id).await? {
            return Ok(cast(found));
        }
        let r = CheckoutRow::of(&checkout)?;
        sqlx::query(&format!(
            "INSERT INTO checkouts ({CHECKOUT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, \
             $10, $11, $12, $13, $14, $15)"
        ))
        .bind(r.id)
        .bind(r.token)
        .bind(r.merchant_id)
        .bind(r.amount)
        .bind(r.currency)
        .bind(r.merchant_reference)
        .bind(r.description)
        .bind(r.return_url)
        .bind(r.cancel_url)
        .bind(r.methods)
        .bind(r.openid)
        .bind(r.metadata)
        .bind(r.expires_at)
        .bind(r.created_at)
        .bind(r.payment_id)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(Begin::Fresh(checkout))
    }

    async fn checkout(
        &self,
        merchant_id: Option<&str>,
        id: &str,
    ) -> Result<Option<Checkout>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CHECKOUT_COLUMNS} FROM checkouts WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let found = row.as_ref().map(checkout).transpose()?;
        Ok(found.filter(|c| merchant_id.is_none_or(|m| m == c.merchant_id)))
    }

    async fn checkout_by_token(&self, token: &str) -> Result<Option<Checkout>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {CHECKOUT_COLUMNS} FROM checkouts WHERE token = $1"
        ))
        .bind(token)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(checkout).transpose()
    }

    async fn begin_checkout_payment(
        &self,
        checkout_id: &str,
        expected: Option<&str>,
        payment: Payment,
        max_payments: usize,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // The checkout's lock orders competing choices, on every instance.
        let current = sqlx::query("SELECT payment_id FROM checkouts WHERE id = $1 FOR UPDATE")
            .bind(checkout_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
        let Some(current) = current else {
            return Ok(false);
        };
        let current: Option<String> = get(&current, 0)?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        let opened: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM checkout_payments WHERE checkout_id = $1")
                .bind(checkout_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        if usize::try_from(opened).unwrap_or(usize::MAX) >= max_payments {
            return Ok(false);
        }
        sqlx::query("UPDATE checkouts SET payment_id = $2 WHERE id = $1")
            .bind(checkout_id)
            .bind(&payment.id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query(
            "INSERT INTO checkout_payments (payment_id, checkout_id, opened_at) VALUES ($1, $2, $3)",
        )
        .bind(&payment.id)
        .bind(checkout_id)
        .bind(ms(payment.created_at))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        insert_payment(&mut tx, &payment).await?;
        append_event(
            &mut tx,
            &payment.merchant_id,
            "payment.created",
            &payment.id,
            payment.to_api_json(),
            payment.created_at,
        )
        .await?;
        tx.commit().await.map_err(db)?;
        Ok(true)
    }

    async fn checkout_payments(&self, checkout_id: &str) -> Result<Vec<Payment>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE id IN \
             (SELECT payment_id FROM checkout_payments WHERE checkout_id = $1) ORDER BY seq"
        ))
        .bind(checkout_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows, payment)
    }
}
