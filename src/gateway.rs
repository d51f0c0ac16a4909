//! The core: drives adapters through the outbound client and records every outcome.
//!
//! Provider answers are mapped once, here, onto ledger changes:
//! a definite "paid" becomes `succeeded` (amount cross-checked), a definite refusal `failed`,
//! anything that might have reached the provider without a clear answer `unknown`, which
//! the re-check loop ([`Gateway::recheck_once`]) resolves by querying.

use std::sync::Arc;
use std::time::Duration;

use moongate_contract::{
    AdapterError, CallContext, CloseStatus, CreatePayment, HttpResponse, Money, Notification,
    NotificationError, NotificationEvent, PaymentAdapter, PaymentRef,
    PaymentStatus as ProviderStatus, Prepared, RawNotification, RefundRequest,
    RefundStatus as ProviderRefund,
};
use time::OffsetDateTime;
use tracing::warn;

use crate::config::{Account, Config, Merchant};
use crate::ledger::{Failure, Payment, PaymentChange, PaymentStatus, Refund, RefundStatus};
use crate::metrics::Metrics;
use crate::outbound::{CallError, Outbound};
use crate::port::{Caller, Exchange, ProviderPort};
use crate::store::{CheckTarget, InboxKey, Store, StoreError, Updated};

/// A payment's merchant and account, from one config snapshot.
#[derive(Debug, Clone)]
pub struct Bound {
    merchant: Arc<Merchant>,
    index: usize,
}

impl Bound {
    /// The merchant.
    pub fn merchant(&self) -> &Merchant {
        &self.merchant
    }

    /// The account.
    pub fn account(&self) -> &Account {
        // `index` was found in this very merchant's accounts.
        #[allow(clippy::indexing_slicing)]
        &self.merchant.accounts[self.index]
    }
}

/// Shared state of a running gateway.
#[derive(Debug)]
pub struct Gateway {
    /// The configuration in force; replaced whole by a reload. Readers take a snapshot, so a
    /// request in flight finishes with the config it started with.
    config: std::sync::RwLock<Arc<Config>>,
    /// The ledger.
    pub store: Arc<dyn Store>,
    /// The one way to reach a provider (limits, circuit, metrics, attempt log).
    port: ProviderPort,
    /// Webhook client.
    pub webhooks: Outbound,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Merchant limits shared through Redis, when configured (fixed at start).
    pub shared_limits: Option<crate::shared_limits::SharedLimiter>,
    /// This instance's name in cross-instance claims (`ins_…`, new at every start).
    pub instance_id: String,
}

fn random_nonce() -> String {
    let id = crate::ledger::new_id("n");
    id.chars()
        .skip(2)
        .chain("00000000".chars())
        .take(32)
        .collect()
}

fn failure(code: &str, message: &str) -> Failure {
    Failure {
        code: code.chars().take(128).collect(),
        message: message.chars().take(512).collect(),
    }
}

/// Builds the domain request of a payment.
pub fn create_request(payment: &Payment, notify_url: String) -> CreatePayment {
    CreatePayment {
        provider_order_id: payment.provider_order_id.clone(),
        amount: Money::new(payment.amount, payment.currency),
        method: payment.method,
        subject: payment.description.clone(),
        description: None,
        return_url: payment.return_url.clone(),
        notify_url,
        expires_at: payment.expires_at,
        payer: payment.payer.clone(),
    }
}

/// Rows one janitor claim takes (a pass claims again until nothing is due).
const JANITOR_BATCH: u32 = 16;

/// Claims one janitor pass takes at most (the next pass takes the rest).
const JANITOR_CLAIMS_PER_PASS: usize = 64;

/// How long a janitor holds what it claimed: no other instance checks those rows meanwhile,
/// and a crashed instance's claims are due again after it. A batch that overruns it (every
/// provider call timing out) only lets another janitor ask the provider again, which is a
/// read (or an idempotent close), never a charge.
const JANITOR_LEASE: Duration = Duration::from_secs(120);

impl Gateway {
    /// A gateway over a built config.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        providers: Outbound,
        webhooks: Outbound,
    ) -> Gateway {
        let metrics = Arc::new(Metrics::new());
        Gateway {
            config: std::sync::RwLock::new(Arc::new(config)),
            port: ProviderPort::new(providers, Arc::clone(&metrics), Arc::clone(&store)),
            store,
            webhooks,
            metrics,
            shared_limits: None,
            instance_id: crate::ledger::new_id("ins"),
        }
    }

    /// Adds the Redis-shared merchant limits.
    pub fn with_shared_limits(
        mut self,
        shared: Option<crate::shared_limits::SharedLimiter>,
    ) -> Gateway {
        self.shared_limits = shared;
        self
    }

    /// The config in force now.
    pub fn config(&self) -> Arc<Config> {
        Arc::clone(
            &self
                .config
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Puts a new config in force; requests already running finish with the old one.
    pub fn replace_config(&self, config: Config) {
        *self
            .config
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(config);
    }

    /// The one provider port.
    pub fn port(&self) -> &ProviderPort {
        &self.port
    }

    /// The merchant and account of a payment.
    pub fn account_of(&self, payment: &Payment) -> Option<Bound> {
        let merchant = Arc::clone(self.config().merchants.get(&payment.merchant_id)?);
        let index = merchant
            .accounts
            .iter()
            .position(|a| a.id == payment.account_id)?;
        Some(Bound { merchant, index })
    }

    /// The URL providers post notifications for this account to.
    pub fn notify_url(&self, merchant_id: &str, account: &Account) -> String {
        format!(
            "{}/notify/{}/{}/{}",
            self.config().public_base_url,
            account.kind.as_str(),
            merchant_id,
            account.id
        )
    }

    /// A fresh call context.
    pub fn call_context() -> CallContext {
        CallContext {
            now: OffsetDateTime::now_utc(),
            nonce: random_nonce(),
        }
    }

    /// Sends through the one provider port, about a payment (and refund) of `account`.
    #[allow(clippy::too_many_arguments)]
    async fn exchange<T>(
        &self,
        merchant_id: &str,
        account: &Account,
        payment_id: &str,
        refund_id: Option<&str>,
        operation: &'static str,
        prepared: Result<Prepared<T>, AdapterError>,
        parse: impl FnOnce(&HttpResponse) -> Result<T, AdapterError>,
    ) -> Exchange<T> {
        let caller = Caller {
            merchant_id,
            account,
            subject: payment_id,
            refund_id,
        };
        self.port.exchange(caller, operation, prepared, parse).await
    }

    async fn apply(&self, id: &str, change: PaymentChange) -> Result<Payment, StoreError> {
        let decide = Box::new(move |_: &Payment| Some(change));
        match self
            .store
            .update_payment(id, None, OffsetDateTime::now_utc(), decide)
            .await?
        {
            Updated::Done { record, .. } => Ok(record),
            Updated::Duplicate | Updated::Missing => {
                Err(StoreError::Corrupt(format!("payment {id} vanished")))
            }
        }
    }

    /// Renders (and signs) the create of `payment` for `account`.
    pub fn prepare_create(
        &self,
        payment: &Payment,
        merchant_id: &str,
        account: &Account,
    ) -> Result<Prepared<ProviderStatus>, AdapterError> {
        let request = create_request(payment, self.notify_url(merchant_id, account));
        account
            .adapter
            .prepare_create(&Self::call_context(), &request)
    }

    /// Renders (and signs) the refund of `payment`, before anything is stored: a request the
    /// adapter refuses is the caller's error.
    pub fn prepare_refund(
        &self,
        refund: &Refund,
        payment: &Payment,
        account: &Account,
    ) -> Result<Prepared<ProviderRefund>, AdapterError> {
        let request = refund_request(
            refund,
            payment,
            self.notify_url(&payment.merchant_id, account),
        );
        account
            .adapter
            .prepare_refund(&Self::call_context(), &request)
    }

    /// Records the provider's view of a payment, when it changes anything.
    async fn record_status(
        &self,
        payment: Payment,
        status: ProviderStatus,
    ) -> Result<Payment, StoreError> {
        match Self::change_for(&payment, status) {
            Some(change) => self.apply(&payment.id, change).await,
            None => Ok(payment),
        }
    }

    /// Maps a provider's view of a payment onto a ledger change (amount cross-checked).
    fn change_for(payment: &Payment, status: ProviderStatus) -> Option<PaymentChange> {
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
        self.drive_create_with_failover(payment, prepared, &[])
            .await
    }

    /// Sends a create and records the outcome; when the provider certainly did not take the
    /// order (never sent, refused before acting, circuit open), the payment moves to the next
    /// of `fallbacks` and is sent there. An outcome that is merely unknown never fails over:
    /// the order may exist, and a second one elsewhere could charge twice.
    pub async fn drive_create_with_failover(
        &self,
        mut payment: Payment,
        mut prepared: Result<Prepared<ProviderStatus>, AdapterError>,
        fallbacks: &[String],
    ) -> Result<Payment, StoreError> {
        let mut fallbacks = fallbacks.iter();
        let exchange = loop {
            let Some(bound) = self.account_of(&payment) else {
                return Err(StoreError::Corrupt(format!(
                    "payment {} has no account",
                    payment.id
                )));
            };
            let (merchant, account) = (bound.merchant(), bound.account());
            let request = create_request(&payment, self.notify_url(&merchant.id, account));
            let adapter = Arc::clone(&account.adapter);
            let cx = Self::call_context();
            let exchange = self
                .exchange(
                    &payment.merchant_id,
                    account,
                    &payment.id,
                    None,
                    "create",
                    prepared,
                    |r| adapter.parse_create(&cx, &request, r),
                )
                .await;
            if !exchange.not_taken() {
                break exchange;
            }
            let Some(next) = fallbacks.find_map(|id| merchant.account(id)) else {
                break exchange;
            };
            let switched = self
                .store
                .switch_account(
                    &payment.id,
                    &account.id,
                    &next.id,
                    next.kind,
                    OffsetDateTime::now_utc(),
                )
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
            Exchange::Adapter(AdapterError::Rejected { code, message }) => PaymentChange {
                status: Some(PaymentStatus::Failed),
                failure: Some(failure(&code, &message)),
                ..PaymentChange::default()
            },
            Exchange::Adapter(
                error @ (AdapterError::InvalidRequest(_)
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
        self.apply(&payment.id, change).await
    }

    /// Asks the provider about a payment and records what it says. Returns the payment.
    pub async fn sync_payment(&self, payment: Payment) -> Result<Payment, StoreError> {
        let Some(bound) = self.account_of(&payment) else {
            return Ok(payment);
        };
        let (merchant, account) = (bound.merchant(), bound.account());
        let adapter = Arc::clone(&account.adapter);
        let reference = payment_ref(&payment);
        let prepared = adapter.prepare_query(&Self::call_context(), &reference);
        let exchange = self
            .exchange(
                &payment.merchant_id,
                account,
                &payment.id,
                None,
                "query",
                prepared,
                |r| adapter.parse_query(&reference, r),
            )
            .await;
        match exchange {
            Exchange::Answer(ProviderStatus::NotFound) => {
                let now = OffsetDateTime::now_utc();
                if payment.expires_at <= now {
                    // Nothing exists at the provider and nothing can be paid any more.
                    let change = PaymentChange {
                        status: Some(PaymentStatus::Canceled),
                        next_action: Some(None),
                        failure: Some(failure("expired", "expired before the shopper paid")),
                        ..PaymentChange::default()
                    };
                    return self.apply(&payment.id, change).await;
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

    /// Closes a payment at the provider. `Ok(None)` means the provider's answer left the
    /// outcome open (the payment is unchanged).
    pub async fn cancel(&self, payment: Payment) -> Result<Option<Payment>, StoreError> {
        let Some(bound) = self.account_of(&payment) else {
            return Ok(None);
        };
        let account = bound.account();
        let adapter = Arc::clone(&account.adapter);
        let reference = payment_ref(&payment);
        let prepared = adapter.prepare_close(&Self::call_context(), &reference);
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
                self.apply(&payment.id, change).await.map(Some)
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
            Exchange::Adapter(AdapterError::Rejected { code, message }) => {
                (RefundStatus::Failed, Some(failure(&code, &message)))
            }
            Exchange::Adapter(
                error @ (AdapterError::InvalidRequest(_)
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

    async fn set_refund(
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
            .update_refund(&refund.id, status, fail, OffsetDateTime::now_utc())
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
        let prepared = adapter.prepare_refund_query(&Self::call_context(), &request);
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
                let prepared = adapter.prepare_refund(&Self::call_context(), &request);
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
                let level_is_attack = matches!(
                    error,
                    NotificationError::BadSignature | NotificationError::WrongAccount
                );
                if level_is_attack {
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
        if note.total != Money::new(payment.amount, payment.currency) {
            tracing::error!(payment_id = %payment.id, reported = %note.total, "notification amount differs from the ledger; not recorded");
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

    async fn record_payment_notification(
        &self,
        payment: &Payment,
        inbox: InboxKey,
        status: ProviderStatus,
    ) -> bool {
        let decide = Box::new(move |current: &Payment| Self::change_for(current, status));
        match self
            .store
            .update_payment(&payment.id, Some(inbox), OffsetDateTime::now_utc(), decide)
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
    async fn record_refund_notification(
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

    /// Checks every open payment (`pending`, `unknown`, `requires_action`) and refund untouched
    /// for `min_age`,
    /// whatever its schedule; returns how many. The janitor ([`Gateway::janitor_once`]) is the
    /// scheduled path; this one is for sweeps on demand.
    pub async fn recheck_once(&self, min_age: Duration) -> Result<usize, StoreError> {
        let before = OffsetDateTime::now_utc() - min_age;
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
                let result = if payment.status == PaymentStatus::RequiresAction && expired {
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
            if let Err(error) = self.janitor_once(OffsetDateTime::now_utc()).await {
                warn!(%error, "janitor pass failed");
            }
            let every = Duration::from_millis(self.config().providers.recheck_interval_ms);
            tokio::time::sleep(every).await;
        }
    }
}

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

/// Identifies a payment at its provider.
pub fn payment_ref(payment: &Payment) -> PaymentRef {
    PaymentRef {
        provider_order_id: payment.provider_order_id.clone(),
        amount: Money::new(payment.amount, payment.currency),
    }
}

/// Builds the domain refund request; `notify_url` is the account's notification endpoint.
pub fn refund_request(refund: &Refund, payment: &Payment, notify_url: String) -> RefundRequest {
    RefundRequest {
        provider_order_id: payment.provider_order_id.clone(),
        provider_refund_id: refund.id.clone(),
        amount: Money::new(refund.amount, refund.currency),
        payment_amount: Money::new(payment.amount, payment.currency),
        reason: refund.reason.clone(),
        notify_url: Some(notify_url),
    }
}

fn refund_outcome(
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
