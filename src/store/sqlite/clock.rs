//! SQLite: the latest time Moongate's clock reached, kept so that a restart after the system
//! clock stepped back does not start behind it.

use super::*;
use crate::store::{ClockReference, ClockStore};

/// One row: the time reached.
pub(super) const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS clock (\
    id INTEGER PRIMARY KEY CHECK (id = 1), \
    reached INTEGER NOT NULL);";

#[async_trait]
impl ClockStore for SqliteStore {
    async fn clock_reference(&self) -> Result<ClockReference, StoreError> {
        self.read(|conn| {
            let reached: Option<i64> = conn
                .row("SELECT reached FROM clock WHERE id = 1", [], |r| r.get(0))
                .optional()
                .map_err(db)?;
            Ok(ClockReference::Reached(reached.map(from_ms).transpose()?))
        })
        .await
    }

    async fn mark_clock(&self, now: OffsetDateTime) -> Result<(), StoreError> {
        self.write(move |conn| {
            conn.exec(
                "INSERT INTO clock (id, reached) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET reached = max(reached, excluded.reached)",
                params![ms(now)],
            )
            .map_err(db)?;
            Ok(())
        })
        .await
    }
}
