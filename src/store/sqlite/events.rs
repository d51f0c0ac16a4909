//! SQLite: events and the webhook outbox.

use super::*;
use crate::store::{DeliveryStatus, EventFilter};

/// The conditions of an [`EventFilter`] over `events e LEFT JOIN outbox o`: ?1 merchant,
/// ?2 type, ?3 object, ?4 created from, ?5 created to, ?6 cursor event id, ?7 delivery status
/// (each NULL: any).
const EVENT_FILTER: &str = "e.merchant_id = ?1 AND (?2 IS NULL OR e.type = ?2) \
     AND (?3 IS NULL OR e.object_id = ?3) AND (?4 IS NULL OR e.created_at >= ?4) \
     AND (?5 IS NULL OR e.created_at < ?5) \
     AND (?6 IS NULL OR e.seq < (SELECT seq FROM events WHERE id = ?6 AND merchant_id = ?1)) \
     AND (?7 IS NULL \
       OR (?7 = 'pending' AND o.next_attempt_at IS NOT NULL) \
       OR (?7 = 'delivered' AND o.next_attempt_at IS NULL AND o.delivered_at IS NOT NULL) \
       OR (?7 = 'parked' AND o.next_attempt_at IS NULL AND o.delivered_at IS NULL))";

/// The claim of due webhooks: each merchant with events in the outbox is found by a walk of
/// `outbox_due_by_merchant` (one index seek per merchant, however long the backlog), each
/// contributes its ?3 soonest due, then the oldest ?2 of those are taken. ?1 now, ?4 JSON
/// array of merchants to leave out.
const DUE_WEBHOOKS: &str = "WITH RECURSIVE m(id) AS (\
       SELECT (SELECT MIN(merchant_id) FROM outbox WHERE next_attempt_at IS NOT NULL) \
       UNION ALL SELECT (SELECT MIN(merchant_id) FROM outbox \
         WHERE next_attempt_at IS NOT NULL AND merchant_id > m.id) FROM m WHERE m.id IS NOT NULL) \
     SELECT o.event_seq, e.id, o.merchant_id, e.body, o.attempts FROM m \
     JOIN outbox o ON o.event_seq IN (SELECT event_seq FROM outbox \
       WHERE merchant_id = m.id AND next_attempt_at IS NOT NULL AND next_attempt_at <= ?1 \
       ORDER BY next_attempt_at LIMIT ?3) \
     JOIN events e ON e.seq = o.event_seq \
     WHERE m.id IS NOT NULL AND m.id NOT IN (SELECT value FROM json_each(?4)) \
     ORDER BY o.event_seq LIMIT ?2";

#[async_trait]
impl EventStore for SqliteStore {
    async fn due_webhooks(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
        per_merchant: u32,
        skip: &[String],
    ) -> Result<Vec<OutboxItem>, StoreError> {
        let skip = to_json(skip)?;
        self.write(move |conn| {
            let mut out = Vec::new();
            {
                let mut stmt = conn.prepare_cached(DUE_WEBHOOKS).map_err(db)?;
                let mut rows = stmt
                    .query(params![ms(now), limit, per_merchant, skip])
                    .map_err(db)?;
                while let Some(row) = rows.next().map_err(db)? {
                    out.push(OutboxItem {
                        event_seq: row.get(0).map_err(db)?,
                        event_id: row.get(1).map_err(db)?,
                        merchant_id: row.get(2).map_err(db)?,
                        body: row.get(3).map_err(db)?,
                        attempts: count(row.get(4).map_err(db)?),
                    });
                }
                let mut lease = conn
                    .prepare_cached("UPDATE outbox SET next_attempt_at = ?2 WHERE event_seq = ?1")
                    .map_err(db)?;
                for item in &out {
                    lease
                        .execute(params![item.event_seq, ms(lease_until)])
                        .map_err(db)?;
                }
            }
            Ok(out)
        })
        .await
    }

    async fn webhook_attempted(
        &self,
        event_seq: i64,
        now: OffsetDateTime,
        delivered: bool,
        next_attempt_at: Option<OffsetDateTime>,
        error: Option<String>,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            let now = ms(now);
            attempted(
                conn,
                event_seq,
                delivered,
                next_attempt_at,
                error.as_deref(),
                now,
            )
        })
        .await
    }

    async fn park_undeliverable(
        &self,
        event_seqs: Vec<i64>,
        now: OffsetDateTime,
        reason: String,
    ) -> Result<(), StoreError> {
        self.write(move |conn| {
            let now = ms(now);
            for seq in event_seqs {
                attempted(conn, seq, false, None, Some(&reason), now)?;
            }
            Ok(())
        })
        .await
    }

    async fn park_merchants(
        &self,
        merchant_ids: Vec<String>,
        now: OffsetDateTime,
        reason: String,
    ) -> Result<u64, StoreError> {
        self.write(move |conn| {
            let now = ms(now);
            let mut parked = 0;
            for merchant in &merchant_ids {
                conn.exec(
                    "INSERT INTO deliveries (event_seq, attempted_at, delivered, error) \
                     SELECT event_seq, ?2, 0, ?3 FROM outbox WHERE merchant_id = ?1 \
                       AND next_attempt_at IS NOT NULL AND next_attempt_at <= ?2",
                    params![merchant, now, reason],
                )
                .map_err(db)?;
                parked += conn
                    .exec(
                        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = NULL, \
                         delivered_at = NULL, last_error = ?3 WHERE merchant_id = ?1 \
                           AND next_attempt_at IS NOT NULL AND next_attempt_at <= ?2",
                        params![merchant, now, reason],
                    )
                    .map_err(db)?;
            }
            Ok(u64::try_from(parked).unwrap_or(u64::MAX))
        })
        .await
    }

    async fn event(
        &self,
        merchant_id: &str,
        event_id: &str,
    ) -> Result<Option<EventRecord>, StoreError> {
        let (merchant_id, event_id) = (merchant_id.to_owned(), event_id.to_owned());
        self.read(move |conn| {
            // Both reads in one snapshot (a savepoint opens a read transaction on its own, and
            // nests inside the writer's): a delivery attempt commits its log row and the
            // outbox state together, and the answer must not show one without the other.
            conn.execute_batch("SAVEPOINT event_read").map_err(db)?;
            let read = event_in(conn, &merchant_id, &event_id);
            conn.execute_batch("RELEASE event_read").map_err(db)?;
            read
        })
        .await
    }

    async fn event_ids(
        &self,
        merchant_id: &str,
        filter: EventFilter,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let merchant_id = merchant_id.to_owned();
        self.read(move |conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT e.id FROM events e LEFT JOIN outbox o ON o.event_seq = e.seq \
                     WHERE {EVENT_FILTER} ORDER BY e.seq DESC LIMIT ?8"
                ))
                .map_err(db)?;
            let mut rows = stmt
                .query(params![
                    merchant_id,
                    filter.kind,
                    filter.object_id,
                    filter.created_from.map(ms),
                    filter.created_to.map(ms),
                    filter.before_event,
                    filter.delivery.map(|d| d.as_str()),
                    limit
                ])
                .map_err(db)?;
            let mut out = Vec::new();
            while let Some(row) = rows.next().map_err(db)? {
                out.push(row.get(0).map_err(db)?);
            }
            Ok(out)
        })
        .await
    }

    async fn resend_parked(
        &self,
        merchant_id: &str,
        filter: EventFilter,
        limit: u32,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let merchant_id = merchant_id.to_owned();
        self.write(move |conn| {
            let changed = conn
                .exec(
                    &format!(
                        "UPDATE outbox SET next_attempt_at = ?8, attempts = 0 WHERE event_seq IN \
                         (SELECT e.seq FROM events e LEFT JOIN outbox o ON o.event_seq = e.seq \
                          WHERE {EVENT_FILTER} ORDER BY e.seq LIMIT ?9)"
                    ),
                    params![
                        merchant_id,
                        filter.kind,
                        filter.object_id,
                        filter.created_from.map(ms),
                        filter.created_to.map(ms),
                        filter.before_event,
                        Some(DeliveryStatus::Parked.as_str()),
                        ms(now),
                        limit
                    ],
                )
                .map_err(db)?;
            Ok(changed as u64)
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
        self.write(move |conn| {
            let changed = conn
                .exec(
                    "UPDATE outbox SET next_attempt_at = ?3, attempts = 0 \
                     WHERE event_seq = (SELECT seq FROM events WHERE id = ?1 AND merchant_id = ?2)",
                    params![event_id, merchant_id, ms(now)],
                )
                .map_err(db)?;
            Ok(changed > 0)
        })
        .await
    }

    async fn events_for(&self, object_id: &str) -> Result<Vec<StoredEvent>, StoreError> {
        let object_id = object_id.to_owned();
        self.read(move |conn| {
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
}

/// Records one delivery attempt of an event: its outbox row (delivered, next attempt, or
/// parked when neither) and its line in the delivery log.
fn attempted(
    conn: &Connection,
    event_seq: i64,
    delivered: bool,
    next_attempt_at: Option<OffsetDateTime>,
    error: Option<&str>,
    now: i64,
) -> Result<(), StoreError> {
    conn.exec(
        "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2, delivered_at = CASE WHEN ?3 THEN ?4 ELSE NULL END, last_error = ?5 WHERE event_seq = ?1",
        params![event_seq, next_attempt_at.map(ms), delivered, now, error],
    )
    .map_err(db)?;
    conn.exec(
        "INSERT INTO deliveries (event_seq, attempted_at, delivered, error) VALUES (?1, ?2, ?3, ?4)",
        params![event_seq, now, delivered, error],
    )
    .map_err(db)?;
    Ok(())
}

/// An event and its delivery log (see `event`).
fn event_in(
    conn: &Connection,
    merchant_id: &str,
    event_id: &str,
) -> Result<Option<EventRecord>, StoreError> {
    let found = conn
        .row(
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
}
