//! The janitor: every open payment and refund re-checked at its provider on a backing-off
//! schedule kept in the ledger, claimed in small leased batches; expired unpaid payments
//! closed; payment codes followed closely right after the charge.

use super::*;

/// Rows one janitor claim takes (a pass claims again until nothing is due).
const JANITOR_BATCH: u32 = 16;

/// Claims one janitor pass takes at most (the next pass takes the rest).
const JANITOR_CLAIMS_PER_PASS: usize = 64;

/// How long a janitor holds what it claimed: no other instance checks those rows meanwhile,
/// and a crashed instance's claims are due again after it. A batch that overruns it (every
/// provider call timing out) only lets another janitor ask the provider again, which is a
/// read (or an idempotent close), never a charge.
const JANITOR_LEASE: Duration = Duration::from_secs(120);

/// How long after its deadline an unpaid payment is closed at the provider.
const EXPIRY_GRACE: time::Duration = time::Duration::minutes(1);

/// When to check an open payment or refund again after `checks` checks: 30 s after creation
/// (the store schedules that one), then 1, 2, 5, 10, 30 minutes, 1, 2, 6 hours, then daily until
/// it settles.
pub fn check_delay(checks: u32) -> time::Duration {
    const STEPS_SECS: [i64; 9] = [30, 60, 120, 300, 600, 1_800, 3_600, 7_200, 21_600];
    let seconds = STEPS_SECS
        .get(usize::try_from(checks).unwrap_or(usize::MAX))
        .copied()
        .unwrap_or(86_400);
    time::Duration::seconds(seconds)
}

impl Gateway {
    /// Checks every open payment (`pending`, `unknown`, `requires_action`) and refund untouched
    /// for `min_age`,
    /// whatever its schedule; returns how many. The janitor ([`Gateway::janitor_once`]) is the
    /// scheduled path; this one is for sweeps on demand.
    pub async fn recheck_once(&self, min_age: Duration) -> Result<usize, StoreError> {
        let before = self.now() - min_age;
        let mut checked = 0;
        for payment in self.store.payments_in_doubt(before, 1_000).await? {
            let id = payment.id.clone();
            if let Err(error) = self.sync_payment(payment).await {
                warn!(%error, payment_id = %id, "re-check failed");
            }
            checked += 1;
        }
        for refund in self.store.refunds_in_doubt(before, 1_000).await? {
            let id = refund.id.clone();
            if let Err(error) = self.sync_refund(refund).await {
                warn!(%error, refund_id = %id, "refund re-check failed");
            }
            checked += 1;
        }
        Ok(checked)
    }

    /// Follows a scanned payment code while the shopper confirms in the wallet: quick queries
    /// (WeChat Pay and Alipay both advise polling every few seconds) until it is settled or the
    /// attempts run out; the re-check loop covers it after that.
    pub async fn follow_payment_code(self: Arc<Self>, payment_id: String) {
        let providers = self.config().providers.clone();
        let every = Duration::from_millis(providers.payment_code_poll_ms);
        for _ in 0..providers.payment_code_poll_attempts {
            tokio::time::sleep(every).await;
            let payment = match self.store.payment(None, &payment_id).await {
                Ok(Some(payment)) => payment,
                Ok(None) => return,
                Err(error) => {
                    warn!(%error, payment_id, "payment code follow-up cannot read the ledger");
                    continue;
                }
            };
            if !matches!(
                payment.status,
                PaymentStatus::Pending | PaymentStatus::Unknown
            ) {
                return;
            }
            if let Err(error) = self.sync_payment(payment).await {
                warn!(%error, payment_id, "payment code follow-up failed");
            }
        }
    }

    /// One janitor pass at `now`: every open payment and refund whose check is due is asked
    /// about at its provider (an expired `requires_action` payment is closed there instead,
    /// which also learns of a late payment), then scheduled again further out. Returns how
    /// many were checked.
    pub async fn janitor_once(&self, now: OffsetDateTime) -> Result<usize, StoreError> {
        // Lapsed request nonces, once a pass (never on a request's path).
        let purged = self.store.purge_nonces(now).await?;
        if purged > 0 {
            tracing::debug!(purged, "lapsed nonces deleted");
        }
        let purged = self.store.purge_keys(now).await?;
        if purged > 0 {
            tracing::debug!(purged, "idempotency keys past their retention deleted");
        }
        // Clear cashier tokens kept from before tokens were derived, once their checkout ended.
        let forgotten = self.store.forget_legacy_tokens(now).await?;
        if forgotten > 0 {
            tracing::debug!(
                forgotten,
                "expired checkouts' legacy cashier tokens cleared"
            );
        }
        self.store
            .purge_payer_identities(now - crate::service::checkouts::IDENTITY_STATE_LIFE)
            .await?;
        self.code_limits.prune();
        let purged = self.store.purge_authorisation_links(now).await?;
        if purged > 0 {
            tracing::debug!(purged, "lapsed or used authorisation links deleted");
        }
        // Authorisations: refusals the port saw, tokens due for a refresh, and the tokens
        // other instances refreshed, loaded into this one's adapters.
        self.take_refusals().await?;
        let refreshed = self.refresh_authorisations(now).await?;
        if refreshed > 0 {
            tracing::info!(refreshed, "authorisations refreshed");
        }
        let mut checked = 0;
        // Small claims, taken again until nothing is due (bounded, so a pass always ends).
        for _ in 0..JANITOR_CLAIMS_PER_PASS {
            let payments = self
                .store
                .payments_due(now, now + JANITOR_LEASE, JANITOR_BATCH)
                .await?;
            let refunds = self
                .store
                .refunds_due(now, now + JANITOR_LEASE, JANITOR_BATCH)
                .await?;
            if payments.is_empty() && refunds.is_empty() {
                break;
            }
            for (payment, checks) in payments {
                let id = payment.id.clone();
                let expired = payment.expires_at + EXPIRY_GRACE <= now;
                // A payment code's charge has no deadline at the provider: it is followed to its end.
                let unclosable = expired
                    && !crate::registry::is_payment_code(payment.method)
                    && !self.supports(&payment, moongate_contract::Operation::Close);
                let result = if unclosable {
                    self.expire_unclosable(payment).await.map(|_| ())
                } else if payment.status == PaymentStatus::RequiresAction && expired {
                    self.cancel(payment).await.map(|_| ())
                } else {
                    self.sync_payment(payment).await.map(|_| ())
                };
                if let Err(error) = result {
                    warn!(%error, payment_id = %id, "janitor check failed");
                }
                self.store
                    .schedule_check(
                        CheckTarget::Payment,
                        &id,
                        now + check_delay(checks.saturating_add(1)),
                    )
                    .await?;
                checked += 1;
            }
            for (refund, checks) in refunds {
                let id = refund.id.clone();
                if let Err(error) = self.sync_refund(refund).await {
                    warn!(%error, refund_id = %id, "janitor refund check failed");
                }
                self.store
                    .schedule_check(
                        CheckTarget::Refund,
                        &id,
                        now + check_delay(checks.saturating_add(1)),
                    )
                    .await?;
                checked += 1;
            }
        }
        Ok(checked)
    }

    /// Runs [`Gateway::janitor_once`] at once (resuming whatever a previous run left open),
    /// then every `recheck_interval_ms`.
    pub async fn recheck_loop(self: Arc<Self>) {
        loop {
            if let Err(error) = self.sync_clock().await {
                warn!(%error, "clock sync failed");
            }
            if let Err(error) = self.janitor_once(self.now()).await {
                warn!(%error, "janitor pass failed");
            }
            let every = Duration::from_millis(self.config().providers.recheck_interval_ms);
            tokio::time::sleep(every).await;
        }
    }
}
