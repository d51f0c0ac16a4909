//! SQLite: the janitor: open payments and refunds due for a check, leased.

use super::*;
use crate::store::rows::{open_payment_statuses, open_refund_statuses};

#[async_trait]
impl JanitorStore for SqliteStore {
    async fn payments_in_doubt(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Payment>, StoreError> {
        self.read(move |conn| {
            let open = open_payment_statuses();
            let sql = format!(
                "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status IN ({open}) AND updated_at <= ?1 ORDER BY updated_at LIMIT ?2"
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
        self.write(move |conn| {
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
        self.write(move |conn| {
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
        self.write(move |conn| {
            let table = match target {
                CheckTarget::Payment => "payments",
                CheckTarget::Refund => "refunds",
            };
            conn.exec(
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
        self.read(move |conn| {
            let open = open_refund_statuses();
            let sql = format!(
                "SELECT {REFUND_COLUMNS} FROM refunds WHERE status IN ({open}) AND updated_at <= ?1 ORDER BY updated_at LIMIT ?2"
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
}
