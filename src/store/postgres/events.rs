//! PostgreSQL: events and the webhook outbox.

use super::*;
use crate::store::{DeliveryStatus, EventFilter};

/// The conditions of an [`EventFilter`] over `events e LEFT JOIN outbox o`: $1 merchant,
/// $2 type, $3 object, $4 created from, $5 created to, $6 cursor event id, $7 delivery status
/// (each NULL: any).
const EVENT_FILTER: &str = "e.merchant_id = $1 AND ($2::TEXT IS NULL OR e.type = $2) \
     AND ($3::TEXT IS NULL OR e.object_id = $3) \
     AND ($4::BIGINT IS NULL OR e.created_at >= $4) AND ($5::BIGINT IS NULL OR e.created_at < $5) \
     AND ($6::TEXT IS NULL OR e.seq < (SELECT seq FROM events WHERE id = $6 AND merchant_id = $1)) \
     AND ($7::TEXT IS NULL \
       OR ($7 = 'pending' AND o.next_attempt_at IS NOT NULL) \
       OR ($7 = 'delivered' AND o.next_attempt_at IS NULL AND o.delivered_at IS NOT NULL) \
       OR ($7 = 'parked' AND o.next_attempt_at IS NULL AND o.delivered_at IS NULL))";

/// Parks the outbox rows `condition` selects (`$1` its array, `$3` now), each with its attempt
/// logged at `$3` under the reason `$2`, in one statement.
fn park_where(condition: &str) -> String {
    format!(
        "WITH parked AS (UPDATE outbox SET attempts = attempts + 1, next_attempt_at = NULL, \
         delivered_at = NULL, last_error = $2 WHERE {condition} RETURNING event_seq) \
         INSERT INTO deliveries (event_seq, attempted_at, delivered, error) \
         SELECT event_seq, $3, FALSE, $2 FROM parked"
    )
}

#[async_trait]
impl EventStore for PgStore {
    async fn event_ids(
        &self,
        merchant_id: &str,
        filter: EventFilter,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT e.id FROM events e LEFT JOIN outbox o ON o.event_seq = e.seq \
             WHERE {EVENT_FILTER} ORDER BY e.seq DESC LIMIT $8"
        ))
        .bind(merchant_id)
        .bind(filter.kind)
        .bind(filter.object_id)
        .bind(filter.created_from.map(ms))
        .bind(filter.created_to.map(ms))
        .bind(filter.before_event)
        .bind(filter.delivery.map(|d| d.as_str()))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows, |row| get(row, 0))
    }

    async fn resend_parked(
        &self,
        merchant_id: &str,
        filter: EventFilter,
        limit: u32,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE outbox SET next_attempt_at = $9, attempts = 0 WHERE event_seq IN \
             (SELECT e.seq FROM events e LEFT JOIN outbox o ON o.event_seq = e.seq \
              WHERE {EVENT_FILTER} ORDER BY e.seq LIMIT $8)"
        ))
        .bind(merchant_id)
        .bind(filter.kind)
        .bind(filter.object_id)
        .bind(filter.created_from.map(ms))
        .bind(filter.created_to.map(ms))
        .bind(filter.before_event)
        .bind(Some(DeliveryStatus::Parked.as_str()))
        .bind(i64::from(limit))
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn event(
        &self,
        merchant_id: &str,
        event_id: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        // Both reads in one snapshot: a delivery attempt commits its log row and the outbox
        // state together, and the answer must not show one without the other.
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let found = sqlx::query(
            "SELECT e.seq, e.body, o.attempts::BIGINT, o.next_attempt_at, o.delivered_at FROM events e \
             LEFT JOIN outbox o ON o.event_seq = e.seq WHERE e.id = $1 AND e.merchant_id = $2",
        )
        .bind(event_id)
        .bind(merchant_id)
        .fetch_optional(&mut *tx)
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
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)?;
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

    async fn due_webhooks(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
        per_merchant: u32,
        skip: &[String],
    ) -> Result<Vec<OutboxItem>, StoreError> {
        // Each merchant with events in the outbox found by a walk of `outbox_due_by_merchant`
        // (one index seek each), its $4 soonest due taken, the oldest $2 of those locked; the
        // due condition is repeated on the locked row, which PostgreSQL re-checks.
        let rows = sqlx::query(
            "WITH RECURSIVE m(id) AS (\
               SELECT (SELECT MIN(merchant_id) FROM outbox WHERE next_attempt_at IS NOT NULL) \
               UNION ALL SELECT (SELECT MIN(merchant_id) FROM outbox \
                 WHERE next_attempt_at IS NOT NULL AND merchant_id > m.id) \
               FROM m WHERE m.id IS NOT NULL), \
             candidates AS (SELECT c.event_seq FROM m CROSS JOIN LATERAL \
               (SELECT event_seq FROM outbox WHERE merchant_id = m.id \
                  AND next_attempt_at IS NOT NULL AND next_attempt_at <= $1 \
                ORDER BY next_attempt_at LIMIT $4) c \
               WHERE m.id IS NOT NULL AND NOT (m.id = ANY($5))), \
             due AS (SELECT o.event_seq FROM outbox o JOIN candidates c ON c.event_seq = o.event_seq \
               WHERE o.next_attempt_at IS NOT NULL AND o.next_attempt_at <= $1 \
               ORDER BY o.event_seq LIMIT $2 FOR UPDATE OF o SKIP LOCKED), \
             leased AS (UPDATE outbox o SET next_attempt_at = $3 FROM due \
               WHERE o.event_seq = due.event_seq RETURNING o.event_seq, o.merchant_id, o.attempts) \
             SELECT l.event_seq, e.id, l.merchant_id, e.body, l.attempts::BIGINT \
             FROM leased l JOIN events e ON e.seq = l.event_seq ORDER BY l.event_seq",
        )
        .bind(ms(now))
        .bind(i64::from(limit))
        .bind(ms(lease_until))
        .bind(i64::from(per_merchant))
        .bind(skip)
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
        now: OffsetDateTime,
        delivered: bool,
        next_attempt_at: Option<OffsetDateTime>,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        let now = ms(now);
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

    async fn park_undeliverable(
        &self,
        event_seqs: Vec<i64>,
        now: OffsetDateTime,
        reason: String,
    ) -> Result<(), StoreError> {
        let now = ms(now);
        sqlx::query(&park_where("event_seq = ANY($1)"))
            .bind(&event_seqs)
            .bind(&reason)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn park_merchants(
        &self,
        merchant_ids: Vec<String>,
        now: OffsetDateTime,
        reason: String,
    ) -> Result<u64, StoreError> {
        let parked = sqlx::query(&park_where(
            "merchant_id = ANY($1) AND next_attempt_at IS NOT NULL AND next_attempt_at <= $3",
        ))
        .bind(&merchant_ids)
        .bind(&reason)
        .bind(ms(now))
        .execute(&self.pool)
        .await
        .map_err(db)?
        .rows_affected();
        Ok(parked)
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
}
