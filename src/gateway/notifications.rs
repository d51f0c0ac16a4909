//! Provider notifications: verified by the adapter, cross-checked against the ledger, recorded
//! with their inbox row in one transaction.

use super::refunds::refund_outcome;
use super::*;

impl Gateway {
    /// Verifies, cross-checks and records one provider notification; returns whether to
    /// acknowledge it (accepted) or let the provider retry.
    pub async fn handle_notification(
        &self,
        merchant_id: &str,
        account_id: &str,
        raw: &RawNotification<'_>,
    ) -> (Option<Arc<dyn PaymentAdapter>>, bool) {
        let config = self.config();
        let Some(account) = config
            .merchants
            .get(merchant_id)
            .and_then(|m| m.account(account_id))
        else {
            warn!(
                merchant_id,
                account_id, "notification for an unknown account"
            );
            return (None, false);
        };
        let adapter = Arc::clone(&account.adapter);
        let note = match adapter.parse_notification(raw) {
            Ok(note) => note,
            Err(error) => {
                // Forgeries, and signed notifications Moongate cannot use (an APIv3 key that
                // does not decrypt them is a misconfiguration an operator must see), at WARN;
                // the error names the reason, never a secret.
                let needs_attention = matches!(
                    error,
                    NotificationError::BadSignature
                        | NotificationError::WrongAccount
                        | NotificationError::Undecryptable
                        | NotificationError::Stale
                );
                if needs_attention {
                    warn!(%error, merchant_id, account_id, "notification refused");
                } else {
                    tracing::info!(%error, merchant_id, account_id, "notification refused");
                }
                return (Some(adapter), false);
            }
        };
        let payment = match self
            .store
            .payment(Some(merchant_id), &note.provider_order_id)
            .await
        {
            Ok(Some(payment)) if payment.account_id == account_id => payment,
            Ok(_) => {
                tracing::error!(order = %note.provider_order_id, "verified notification for an order this account does not have");
                return (Some(adapter), false);
            }
            Err(error) => {
                tracing::error!(%error, "ledger unavailable for a notification");
                return (Some(adapter), false);
            }
        };
        if let Some(total) = note.total
            && total != Money::new(payment.amount, payment.currency)
        {
            tracing::error!(payment_id = %payment.id, reported = %total, "notification amount differs from the ledger; not recorded");
            return (Some(adapter), false);
        }
        let Notification {
            dedupe_id, event, ..
        } = note;
        match event {
            NotificationEvent::Payment { status, .. } => {
                let inbox = InboxKey {
                    provider: account.kind.as_str().to_owned(),
                    account: format!("{merchant_id}/{account_id}"),
                    dedupe_id,
                };
                let accepted = self
                    .record_payment_notification(&payment, inbox, status)
                    .await;
                (Some(adapter), accepted)
            }
            NotificationEvent::Refund {
                provider_refund_id,
                amount,
                status,
            } => {
                let accepted = self
                    .record_refund_notification(&payment, &provider_refund_id, amount, status)
                    .await;
                (Some(adapter), accepted)
            }
        }
    }

    pub(super) async fn record_payment_notification(
        &self,
        payment: &Payment,
        inbox: InboxKey,
        status: ProviderStatus,
    ) -> bool {
        let decide = Box::new(move |current: &Payment| Self::change_for(current, status));
        match self
            .store
            .update_payment(&payment.id, Also::Inbox(inbox), self.now(), decide)
            .await
        {
            Ok(Updated::Done { record, changed }) => {
                tracing::info!(payment_id = %record.id, status = record.status.as_str(), changed, "notification recorded");
                true
            }
            Ok(Updated::Duplicate) => {
                tracing::info!(payment_id = %payment.id, "duplicate notification");
                true
            }
            Ok(Updated::Missing) => false,
            Err(error) => {
                tracing::error!(%error, "could not record a notification");
                false
            }
        }
    }

    /// A refund's outcome reported by notification. Repeats are harmless: a refund that
    /// already has this state is left alone.
    pub(super) async fn record_refund_notification(
        &self,
        payment: &Payment,
        refund_id: &str,
        amount: Money,
        status: ProviderRefund,
    ) -> bool {
        let refund = match self
            .store
            .refund(Some(&payment.merchant_id), refund_id)
            .await
        {
            Ok(Some(refund)) if refund.payment_id == payment.id => refund,
            Ok(_) => {
                tracing::error!(payment_id = %payment.id, refund_id, "verified refund notification for a refund this payment does not have");
                return false;
            }
            Err(error) => {
                tracing::error!(%error, "ledger unavailable for a refund notification");
                return false;
            }
        };
        if amount != Money::new(refund.amount, refund.currency) {
            tracing::error!(refund_id, reported = %amount, "refund notification amount differs from the ledger; not recorded");
            return false;
        }
        let (next, fail) = refund_outcome(status, refund.status);
        match self.set_refund(refund, next, fail).await {
            Ok(refund) => {
                tracing::info!(refund_id = %refund.id, status = refund.status.as_str(), "refund notification recorded");
                true
            }
            Err(error) => {
                tracing::error!(%error, "could not record a refund notification");
                false
            }
        }
    }
}
