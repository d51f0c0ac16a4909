//! PostgreSQL: the database's clock, which every instance follows.

use super::*;
use crate::store::{ClockReference, ClockStore};

#[async_trait]
impl ClockStore for PgStore {
    async fn clock_reference(&self) -> Result<ClockReference, StoreError> {
        let sent = std::time::Instant::now();
        let micros: i64 =
            sqlx::query_scalar("SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::bigint")
                .fetch_one(&self.pool)
                .await
                .map_err(db)?;
        // The database read its clock somewhere in the round trip: take its middle.
        let read_at = sent + sent.elapsed() / 2;
        let now = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
            .map_err(|e| StoreError::Corrupt(format!("database clock: {e}")))?;
        Ok(ClockReference::Database { now, read_at })
    }

    async fn mark_clock(&self, _now: OffsetDateTime) -> Result<(), StoreError> {
        Ok(())
    }
}
