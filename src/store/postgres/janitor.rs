//! PostgreSQL: the janitor: open payments and refunds due for a check, leased.

use super::*;
use crate::store::rows::{open_payment_statuses, open_refund_statuses};

#[async_trait]
impl JanitorStore for PgStore {
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

    async fn payments_in_doubt(
        &self,
        before: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Payment>, StoreError> {
        let open = open_payment_statuses();
        let rows = sqlx::query(&format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE status IN ({open}) \
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
        let open = open_refund_statuses();
        let rows = sqlx::query(&format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE status IN ({open}) \
             AND updated_at <= $1 ORDER BY updated_at LIMIT $2"
        ))
        .bind(ms(before))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        all(rows, refund)
    }
}
