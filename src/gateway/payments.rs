//! Payments: creating (with failover), querying and closing at the provider, and mapping
//! its view of a payment onto a ledger change.

use super::*;

impl Gateway {
    /// Records the provider's view of a payment, when it changes anything.
    pub(super) async fn record_status(
        &self,
        payment: Payment,
        status: ProviderStatus,
    ) -> Result<Payment, StoreError> {
        match Self::change_for(&payment, status) {
            Some(change) => self.apply(&payment.id, change, Also::Nothing).await,
            None => Ok(payment),
        }
    }

    /// Maps a provider's view of a payment onto a ledger change (amount cross-checked).
    pub(super) fn change_for(payment: &Payment, status: ProviderStatus) -> Option<PaymentChange> {
        match status {
            // A scanned payment code waiting for the shopper's password has nothing for the
            // merchant to show: it stays `pending`, so the re-check loop polls it to the end.
            ProviderStatus::AwaitingPayment { next_action }
                if crate::registry::is_payment_code(payment.method) =>
            {
                Some(PaymentChange {
                    status: Some(PaymentStatus::Pending),
                    next_action: next_action.map(Some),
                    ..PaymentChange::default()
                })
            }
            ProviderStatus::AwaitingPayment { next_action } => Some(PaymentChange {
                status: Some(PaymentStatus::RequiresAction),
                next_action: next_action.map(Some),
                ..PaymentChange::default()
            }),
            ProviderStatus::Succeeded {
                provider_ref,
                amount,
                ..
            } => {
                if amount != Money::new(payment.amount, payment.currency) {
                    tracing::error!(
                        payment_id = %payment.id,
                        provider_amount = %amount,
                        "provider reports a paid amount that differs from the ledger; not recorded"
                    );
                    return None;
                }
                Some(PaymentChange {
                    status: Some(PaymentStatus::Succeeded),
                    next_action: Some(None),
                    provider_ref: Some(provider_ref),
                    ..PaymentChange::default()
                })
            }
            ProviderStatus::Closed => Some(PaymentChange {
                status: Some(PaymentStatus::Canceled),
                next_action: Some(None),
                ..PaymentChange::default()
            }),
            ProviderStatus::Failed { code, message } => Some(PaymentChange {
                status: Some(PaymentStatus::Failed),
                next_action: Some(None),
                failure: Some(failure(&code, &message)),
                ..PaymentChange::default()
            }),
            ProviderStatus::NotFound | ProviderStatus::Unrecognized(_) => None,
        }
    }

    /// Sends a prepared create for a payment already in the ledger and records the outcome.
    pub async fn drive_create(
        &self,
        payment: Payment,
        prepared: Result<Prepared<ProviderStatus>, AdapterError>,
    ) -> Result<Payment, StoreError> {
        self.drive_create_with_failover(payment, prepared, &[], None)
            .await
    }

    /// Sends a create and records the outcome; when the provider certainly did not take the
    /// order (never sent, refused before acting, circuit open), the payment moves to the next
    /// of `fallbacks` and is sent there. An outcome that is merely unknown never fails over:
    /// the order may exist, and a second one elsewhere could charge twice.
    ///
    /// With `answer`, the outcome commits together with the request's stored answer (the
    /// create's second and last commit).
    pub async fn drive_create_with_failover(
        &self,
        mut payment: Payment,
        mut prepared: Result<Prepared<ProviderStatus>, AdapterError>,
        fallbacks: &[String],
        answer: Option<KeyAnswer>,
    ) -> Result<Payment, StoreError> {
        let mut fallbacks = fallbacks.iter();
        // The calls' attempt-log lines commit with the outcome.
        let mut attempts = Vec::new();
        let exchange = loop {
            let Some(bound) = self.account_of(&payment) else {
                return Err(StoreError::Corrupt(format!(
                    "payment {} has no account",
                    payment.id
                )));
            };
            let (merchant, account) = (bound.merchant(), bound.account());
            let request = self.create_request(&payment, &merchant.id, account);
            let adapter = Arc::clone(&account.adapter);
            let cx = self.call_context();
            let (exchange, attempt) = self
                .exchange_unlogged(account, &payment, "create", prepared, |r| {
                    adapter.parse_create(&cx, &request, r)
                })
                .await;
            attempts.extend(attempt);
            if !exchange.not_taken() {
                break exchange;
            }
            let Some(next) = fallbacks.find_map(|id| merchant.account(id)) else {
                break exchange;
            };
            let switched = self
                .store
                .switch_account(&payment.id, &account.id, &next.id, next.kind, self.now())
                .await?;
            let Some(switched) = switched else {
                break exchange;
            };
            warn!(
                payment_id = %payment.id,
                from = %account.id,
                to = %next.id,
                reason = exchange.describe(),
                "failing over: the provider did not take the order"
            );
            prepared = self.prepare_create(&switched, &merchant.id, next);
            payment = switched;
        };
        let change = match exchange {
            Exchange::Answer(status) => {
                Self::change_for(&payment, status).unwrap_or(PaymentChange {
                    status: Some(PaymentStatus::Unknown),
                    ..PaymentChange::default()
                })
            }
            Exchange::Adapter(
                AdapterError::Rejected { code, message }
                | AdapterError::Unauthorised { code, message },
            ) => PaymentChange {
                status: Some(PaymentStatus::Failed),
                failure: Some(failure(&code, &message)),
                ..PaymentChange::default()
            },
            Exchange::Adapter(
                error @ (AdapterError::InvalidRequest(_)
                | AdapterError::InvalidParameter { .. }
                | AdapterError::Signing
                | AdapterError::Unsupported { .. }),
            ) => PaymentChange {
                status: Some(PaymentStatus::Failed),
                failure: Some(failure("request_not_sent", &error.to_string())),
                ..PaymentChange::default()
            },
            Exchange::Adapter(AdapterError::Indeterminate { .. } | AdapterError::Protocol(_))
            | Exchange::Call(CallError::Unknown(_)) => PaymentChange {
                status: Some(PaymentStatus::Unknown),
                ..PaymentChange::default()
            },
            Exchange::Call(CallError::NotSent(message)) => PaymentChange {
                status: Some(PaymentStatus::Failed),
                failure: Some(failure("provider_unreachable", &message)),
                ..PaymentChange::default()
            },
            Exchange::CircuitOpen => PaymentChange {
                status: Some(PaymentStatus::Failed),
                failure: Some(failure(
                    "circuit_open",
                    "the account's provider is failing; the call was not sent",
                )),
                ..PaymentChange::default()
            },
            Exchange::Throttled(limited) => PaymentChange {
                status: Some(PaymentStatus::Failed),
                failure: Some(failure(
                    "outbound_rate_limited",
                    &format!(
                        "the account's call limit had no turn for {} ms; not sent",
                        limited.retry_after.as_millis()
                    ),
                )),
                ..PaymentChange::default()
            },
        };
        let also = answer.map_or(Also::Nothing, Also::Answer);
        // The payment is as its last write left it (the create, or the failover's switch).
        let updated = self
            .store
            .update_known(&payment, also, self.now(), change, attempts)
            .await?;
        applied(&payment.id, updated)
    }

    /// One query of `payment` at `account`, through the port.
    async fn query(&self, payment: &Payment, account: &Account) -> Exchange<ProviderStatus> {
        let adapter = Arc::clone(&account.adapter);
        let reference = payment_ref(payment);
        let prepared = adapter.prepare_query(&self.call_context(), &reference);
        self.exchange(
            &payment.merchant_id,
            account,
            &payment.id,
            None,
            "query",
            prepared,
            |r| adapter.parse_query(&reference, r),
        )
        .await
    }

    /// Asks the provider about a payment and records what it says. Returns the payment.
    pub async fn sync_payment(&self, payment: Payment) -> Result<Payment, StoreError> {
        let Some(bound) = self.account_of(&payment) else {
            return Ok(payment);
        };
        let (merchant, account) = (bound.merchant(), bound.account());
        let exchange = self.query(&payment, account).await;
        match exchange {
            Exchange::Answer(ProviderStatus::NotFound) => {
                let now = self.now();
                if payment.expires_at <= now {
                    // Nothing exists at the provider and nothing can be paid any more.
                    return self.apply(&payment.id, expired(), Also::Nothing).await;
                }
                if matches!(
                    payment.status,
                    PaymentStatus::Pending | PaymentStatus::Unknown
                ) {
                    // The create never took effect (or, for a QR, was never scanned): send it
                    // again. The provider order number is the same, so this cannot charge twice.
                    let prepared = self.prepare_create(&payment, &merchant.id, account);
                    return self.drive_create(payment, prepared).await;
                }
                Ok(payment)
            }
            // The order exists but we never learnt what the shopper must do (the create's
            // answer was lost): ask again with the same parameters, which providers answer
            // with the same QR code / prepay id instead of a second order.
            Exchange::Answer(ProviderStatus::AwaitingPayment { next_action: None })
                if payment.next_action.is_none()
                    && !crate::registry::is_payment_code(payment.method)
                    && matches!(
                        payment.status,
                        PaymentStatus::Pending | PaymentStatus::Unknown
                    ) =>
            {
                let prepared = self.prepare_create(&payment, &merchant.id, account);
                if prepared.is_ok() {
                    return self.drive_create(payment, prepared).await;
                }
                // Too close to expiry to ask again: record what the provider said.
                let waiting = ProviderStatus::AwaitingPayment { next_action: None };
                self.record_status(payment, waiting).await
            }
            Exchange::Answer(status) => self.record_status(payment, status).await,
            Exchange::Adapter(_)
            | Exchange::Call(_)
            | Exchange::Throttled(_)
            | Exchange::CircuitOpen => Ok(payment),
        }
    }

    /// A payment past its deadline at a provider that has no close (UnionPay): the provider
    /// stopped the order itself at the deadline it was given (`payTimeout`), so once a query
    /// finds it still unpaid (or gone) it is canceled as expired. Any other answer is recorded
    /// as a query's; no answer changes nothing, and the next pass asks again.
    pub async fn expire_unclosable(&self, payment: Payment) -> Result<Payment, StoreError> {
        let Some(bound) = self.account_of(&payment) else {
            return Ok(payment);
        };
        let exchange = self.query(&payment, bound.account()).await;
        match exchange {
            Exchange::Answer(ProviderStatus::AwaitingPayment { .. } | ProviderStatus::NotFound) => {
                self.apply(&payment.id, expired(), Also::Nothing).await
            }
            Exchange::Answer(status) => self.record_status(payment, status).await,
            Exchange::Adapter(_)
            | Exchange::Call(_)
            | Exchange::Throttled(_)
            | Exchange::CircuitOpen => Ok(payment),
        }
    }

    /// Closes a payment at the provider. `Ok(None)` means the provider's answer left the
    /// outcome open (the payment is unchanged).
    pub async fn cancel(&self, payment: Payment) -> Result<Option<Payment>, StoreError> {
        let Some(bound) = self.account_of(&payment) else {
            return Ok(None);
        };
        let account = bound.account();
        let adapter = Arc::clone(&account.adapter);
        let reference = payment_ref(&payment);
        let prepared = adapter.prepare_close(&self.call_context(), &reference);
        let exchange = self
            .exchange(
                &payment.merchant_id,
                account,
                &payment.id,
                None,
                "close",
                prepared,
                |r| adapter.parse_close(&reference, r),
            )
            .await;
        match exchange {
            Exchange::Answer(CloseStatus::Closed | CloseStatus::NotFound) => {
                let change = PaymentChange {
                    status: Some(PaymentStatus::Canceled),
                    next_action: Some(None),
                    ..PaymentChange::default()
                };
                self.apply(&payment.id, change, Also::Nothing)
                    .await
                    .map(Some)
            }
            Exchange::Answer(CloseStatus::Conflict { .. }) => {
                // Typically paid meanwhile: learn the truth and let the caller report it.
                self.sync_payment(payment).await.map(Some)
            }
            Exchange::Adapter(_)
            | Exchange::Call(_)
            | Exchange::Throttled(_)
            | Exchange::CircuitOpen => Ok(None),
        }
    }
}

/// The change of a payment that expired before the shopper paid.
fn expired() -> PaymentChange {
    PaymentChange {
        status: Some(PaymentStatus::Canceled),
        next_action: Some(None),
        failure: Some(failure("expired", "expired before the shopper paid")),
        ..PaymentChange::default()
    }
}
