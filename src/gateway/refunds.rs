//! Refunds: sending them, querying those in doubt, and recording the outcome.

use super::*;

pub(super) fn refund_outcome(
    answer: ProviderRefund,
    otherwise: RefundStatus,
) -> (RefundStatus, Option<Failure>) {
    match answer {
        ProviderRefund::Succeeded { .. } => (RefundStatus::Succeeded, None),
        ProviderRefund::Failed { code, message } => {
            (RefundStatus::Failed, Some(failure(&code, &message)))
        }
        ProviderRefund::Processing => (RefundStatus::Pending, None),
        ProviderRefund::NotFound => (otherwise, None),
    }
}

impl Gateway {
    /// Sends a refund already in the ledger and records the outcome.
    pub async fn drive_refund(
        &self,
        refund: Refund,
        payment: &Payment,
        prepared: Result<Prepared<ProviderRefund>, AdapterError>,
    ) -> Result<Refund, StoreError> {
        let Some(bound) = self.account_of(payment) else {
            return Ok(refund);
        };
        let (merchant, account) = (bound.merchant(), bound.account());
        let adapter = Arc::clone(&account.adapter);
        let request = refund_request(&refund, payment, self.notify_url(&merchant.id, account));
        let exchange = self
            .exchange(
                &payment.merchant_id,
                account,
                &payment.id,
                Some(&refund.id),
                "refund",
                prepared,
                |r| adapter.parse_refund(&request, r),
            )
            .await;
        let (status, fail) = match exchange {
            Exchange::Answer(answer) => refund_outcome(answer, RefundStatus::Unknown),
            Exchange::Adapter(
                AdapterError::Rejected { code, message }
                | AdapterError::Unauthorised { code, message },
            ) => (RefundStatus::Failed, Some(failure(&code, &message))),
            Exchange::Adapter(
                error @ (AdapterError::InvalidRequest(_)
                | AdapterError::InvalidParameter { .. }
                | AdapterError::Signing
                | AdapterError::Unsupported { .. }),
            ) => (
                RefundStatus::Failed,
                Some(failure("request_not_sent", &error.to_string())),
            ),
            Exchange::Call(CallError::NotSent(message)) => (
                RefundStatus::Failed,
                Some(failure("provider_unreachable", &message)),
            ),
            Exchange::CircuitOpen => (
                RefundStatus::Failed,
                Some(failure(
                    "circuit_open",
                    "the account's provider is failing; the call was not sent",
                )),
            ),
            Exchange::Throttled(_) => (
                RefundStatus::Failed,
                Some(failure(
                    "outbound_rate_limited",
                    "the account's call limit had no turn; not sent",
                )),
            ),
            Exchange::Adapter(_) | Exchange::Call(_) => (RefundStatus::Unknown, None),
        };
        self.set_refund(refund, status, fail).await
    }

    pub(super) async fn set_refund(
        &self,
        refund: Refund,
        status: RefundStatus,
        fail: Option<Failure>,
    ) -> Result<Refund, StoreError> {
        if status == refund.status {
            return Ok(refund);
        }
        match self
            .store
            .update_refund(&refund.id, status, fail, self.now())
            .await?
        {
            Updated::Done { record, .. } => Ok(record),
            Updated::Duplicate | Updated::Missing => Ok(refund),
        }
    }

    /// Asks the provider about a refund in doubt.
    pub async fn sync_refund(&self, refund: Refund) -> Result<Refund, StoreError> {
        let Some(payment) = self.store.payment(None, &refund.payment_id).await? else {
            return Ok(refund);
        };
        let Some(bound) = self.account_of(&payment) else {
            return Ok(refund);
        };
        let (merchant, account) = (bound.merchant(), bound.account());
        let adapter = Arc::clone(&account.adapter);
        let request = refund_request(&refund, &payment, self.notify_url(&merchant.id, account));
        let prepared = adapter.prepare_refund_query(&self.call_context(), &request);
        let exchange = self
            .exchange(
                &payment.merchant_id,
                account,
                &payment.id,
                Some(&refund.id),
                "refund_query",
                prepared,
                |r| adapter.parse_refund_query(&request, r),
            )
            .await;
        match exchange {
            Exchange::Answer(ProviderRefund::NotFound) => {
                // The refund never took effect: send it again under the same request number.
                let prepared = adapter.prepare_refund(&self.call_context(), &request);
                self.drive_refund(refund, &payment, prepared).await
            }
            Exchange::Answer(answer) => {
                let (status, fail) = refund_outcome(answer, refund.status);
                self.set_refund(refund, status, fail).await
            }
            Exchange::Adapter(_)
            | Exchange::Call(_)
            | Exchange::Throttled(_)
            | Exchange::CircuitOpen => Ok(refund),
        }
    }
}
