//! The core: drives adapters through the outbound client and records every outcome.
//!
//! Provider answers are mapped once, here, onto ledger changes:
//! a definite "paid" becomes `succeeded` (amount cross-checked), a definite refusal `failed`,
//! anything that might have reached the provider without a clear answer `unknown`, which
//! the re-check loop ([`Gateway::recheck_once`]) resolves by querying.

mod authorisations;
mod janitor;
mod notifications;
mod payments;
mod refunds;

pub use authorisations::{
    AuthorisationError, AuthorisationView, BROWSER_COOKIE, CALLBACK_PATH, STATE_LIFE,
    StartedAuthorisation,
};
pub use janitor::check_delay;

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

use crate::cashier::key::CashierKey;
use crate::clock::Clock;
use crate::config::{Account, Config, Merchant};
use crate::ledger::{Failure, Payment, PaymentChange, PaymentStatus, Refund, RefundStatus};
use crate::metrics::Metrics;
use crate::outbound::{CallError, Outbound};
use crate::port::{Caller, Exchange, ProviderPort};
use crate::store::{
    Also, Attempt, CheckTarget, ClockReference, InboxKey, KeyAnswer, Store, StoreError, Updated,
};

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
    /// Slots for reconciliation runs (API and daily schedule together).
    pub recon_slots: Arc<tokio::sync::Semaphore>,
    /// Held while an on-demand janitor sweep runs: one at a time.
    pub sweep_lock: tokio::sync::Mutex<()>,
    /// What cashier links are derived from (fixed at start).
    cashier: CashierKey,
    /// What the ledger's secrets (authorisation tokens) are sealed with, derived from the
    /// same server key.
    sealing: crate::sealing::SealingKey,
    /// The ledger version of each authorisation whose token this instance's adapters hold.
    loaded_authorisations: std::sync::Mutex<std::collections::HashMap<(String, String), i64>>,
    /// Scans of payment codes, per code.
    pub code_limits: crate::limits::CodeLimits,
    /// Moongate's clock: every ledger stamp, schedule and lease.
    pub clock: Clock,
}

/// How far the system clock may be from Moongate's before a clock sync says so.
const CLOCK_STEP_WARNING: time::Duration = time::Duration::seconds(2);

/// The metadata key naming a payment's checkout: set by Moongate on the payments a cashier
/// opens, refused in `POST /v1/payments`.
pub const CHECKOUT_ID: &str = "checkout_id";

fn failure(code: &str, message: &str) -> Failure {
    Failure {
        code: code.chars().take(128).collect(),
        message: message.chars().take(512).collect(),
    }
}

impl Gateway {
    /// A gateway over a built config.
    pub fn new(
        config: Config,
        store: Arc<dyn Store>,
        providers: Outbound,
        webhooks: Outbound,
        cashier: CashierKey,
        clock: Clock,
    ) -> Gateway {
        let metrics = Arc::new(Metrics::new());
        Gateway {
            config: std::sync::RwLock::new(Arc::new(config)),
            port: ProviderPort::new(
                providers,
                Arc::clone(&metrics),
                Arc::clone(&store),
                clock.clone(),
            ),
            store,
            webhooks,
            metrics,
            shared_limits: None,
            instance_id: crate::ledger::new_id("ins"),
            recon_slots: Arc::new(tokio::sync::Semaphore::new(
                crate::service::reconciliation::MAX_CONCURRENT_RUNS,
            )),
            sweep_lock: tokio::sync::Mutex::new(()),
            sealing: crate::sealing::SealingKey::derive(&cashier),
            code_limits: crate::limits::CodeLimits::default(),
            loaded_authorisations: std::sync::Mutex::default(),
            cashier,
            clock,
        }
    }

    /// Moongate's time now ([`crate::clock`]).
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// Sets Moongate's clock by the ledger: the database's clock where it is shared; else never
    /// before the time the ledger last recorded, which it then records again. Run at start and
    /// by every janitor pass. A system clock that has stepped away from Moongate's time is
    /// logged.
    pub async fn sync_clock(&self) -> Result<(), StoreError> {
        match self.store.clock_reference().await? {
            ClockReference::Database { now, read_at } => self.clock.follow(now, read_at),
            ClockReference::Reached(reached) => {
                if let Some(reached) = reached {
                    self.clock.not_before(reached);
                }
                self.store.mark_clock(self.clock.now()).await?;
            }
        }
        let ahead = self.clock.wall_ahead();
        if ahead.abs() > CLOCK_STEP_WARNING {
            warn!(
                system_clock_ahead_ms = ahead.whole_milliseconds() as i64,
                "the system clock is away from Moongate's clock (stepped?): schedules and \
                 leases keep Moongate's clock; signatures use the system clock"
            );
        }
        Ok(())
    }

    /// Adds the Redis-shared merchant limits.
    pub fn with_shared_limits(
        mut self,
        shared: Option<crate::shared_limits::SharedLimiter>,
    ) -> Gateway {
        self.shared_limits = shared;
        self
    }

    /// `path` under the public base URL (which the config keeps without a trailing slash).
    fn public_url(&self, path: &str) -> String {
        format!("{}{path}", self.config().public_base_url)
    }

    /// Where a wallet's OAuth sends the shopper back to the cashier (`redirect_uri`).
    pub fn identity_callback_url(&self) -> String {
        self.public_url("/cashier/identity")
    }

    /// A static code's URL (`{public_base_url}/c/{token}`).
    pub fn code_url(&self, code_id: &str) -> String {
        self.public_url(&format!("/c/{}", self.cashier.code_token(code_id)))
    }

    /// What the ledger keeps of a code's token.
    pub fn code_token_hash(&self, code_id: &str) -> String {
        crate::cashier::key::token_hash(&self.cashier.code_token(code_id))
    }

    /// A checkout's cashier URL (`{public_base_url}/cashier/{token}`).
    pub fn cashier_url(&self, checkout_id: &str) -> String {
        self.public_url(&format!("/cashier/{}", self.cashier.token(checkout_id)))
    }

    /// The cashier URL of a checkout as stored (a legacy checkout's own token until it
    /// expires).
    pub fn checkout_url(&self, checkout: &crate::cashier::Checkout) -> String {
        match &checkout.legacy_token {
            Some(token) => self.public_url(&format!("/cashier/{token}")),
            None => self.cashier_url(&checkout.id),
        }
    }

    /// Where a redirect wallet sends a checkout's shopper back (no token in it).
    pub fn cashier_return_url(&self, checkout_id: &str) -> String {
        self.public_url(&crate::http::cashier::return_path(checkout_id))
    }

    /// What the ledger keeps of a checkout's token.
    pub fn cashier_token_hash(&self, checkout_id: &str) -> String {
        self.cashier.token_hash_of(checkout_id)
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
        self.bound(&payment.merchant_id, &payment.account_id)
    }

    /// A merchant's account in the config in force.
    pub fn bound(&self, merchant_id: &str, account_id: &str) -> Option<Bound> {
        let merchant = Arc::clone(self.config().merchants.get(merchant_id)?);
        let index = merchant.accounts.iter().position(|a| a.id == account_id)?;
        Some(Bound { merchant, index })
    }

    /// True when the payment's account implements `operation` (its adapter's capabilities).
    pub fn supports(&self, payment: &Payment, operation: moongate_contract::Operation) -> bool {
        self.account_of(payment)
            .is_some_and(|bound| bound.account().adapter.capabilities().supports(operation))
    }

    /// The URL providers post notifications for this account to.
    pub fn notify_url(&self, merchant_id: &str, account: &Account) -> String {
        self.public_url(&format!(
            "/notify/{}/{}/{}",
            account.kind.as_str(),
            merchant_id,
            account.id
        ))
    }

    /// A fresh call context ([`ProviderPort::call_context`]).
    pub fn call_context(&self) -> CallContext {
        self.port.call_context()
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

    /// [`Gateway::exchange`] about a payment, with the attempt's log line handed back for the
    /// caller's commit of the outcome ([`ProviderPort::exchange_unlogged`]).
    async fn exchange_unlogged<T>(
        &self,
        account: &Account,
        payment: &Payment,
        operation: &'static str,
        prepared: Result<Prepared<T>, AdapterError>,
        parse: impl FnOnce(&HttpResponse) -> Result<T, AdapterError>,
    ) -> (Exchange<T>, Option<Attempt>) {
        let caller = Caller {
            merchant_id: &payment.merchant_id,
            account,
            subject: &payment.id,
            refund_id: None,
        };
        self.port
            .exchange_unlogged(caller, operation, prepared, parse)
            .await
    }

    async fn apply(
        &self,
        id: &str,
        change: PaymentChange,
        also: Also,
    ) -> Result<Payment, StoreError> {
        let decide = Box::new(move |_: &Payment| Some(change));
        let updated = self
            .store
            .update_payment(id, also, self.now(), decide)
            .await?;
        applied(id, updated)
    }

    /// Renders (and signs) the create of `payment` for `account`.
    pub fn prepare_create(
        &self,
        payment: &Payment,
        merchant_id: &str,
        account: &Account,
    ) -> Result<Prepared<ProviderStatus>, AdapterError> {
        let request = self.create_request(payment, merchant_id, account);
        account
            .adapter
            .prepare_create(&self.call_context(), &request)
    }

    /// The domain request of `payment` for `account`. A checkout's payment keeps no
    /// `return_url` (the cashier URL is a credential): the provider gets the cashier return
    /// path of its checkout's id, which names the checkout only. The deadline is told on the
    /// system clock (the provider holds it to its own clock, as it does the call's timestamp).
    pub fn create_request(
        &self,
        payment: &Payment,
        merchant_id: &str,
        account: &Account,
    ) -> CreatePayment {
        let return_url = payment.return_url.clone().or_else(|| {
            payment
                .metadata
                .get(CHECKOUT_ID)
                .and_then(|v| v.as_str())
                .map(|id| self.cashier_return_url(id))
        });
        CreatePayment {
            provider_order_id: payment.provider_order_id.clone(),
            amount: Money::new(payment.amount, payment.currency),
            method: payment.method,
            subject: payment.description.clone(),
            description: None,
            return_url,
            notify_url: self.notify_url(merchant_id, account),
            expires_at: payment.expires_at + self.clock.wall_ahead(),
            payer: payment.payer.clone(),
            created_at: payment.created_at,
        }
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
            .prepare_refund(&self.call_context(), &request)
    }
}

/// Identifies a payment at its provider.
pub fn payment_ref(payment: &Payment) -> PaymentRef {
    PaymentRef {
        provider_order_id: payment.provider_order_id.clone(),
        amount: Money::new(payment.amount, payment.currency),
        created_at: payment.created_at,
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
        created_at: refund.created_at,
        payment_created_at: payment.created_at,
        payment_provider_ref: payment.provider_ref.clone(),
    }
}

/// The payment an unconditional change (no inbox row) left: it was there before the change,
/// so no record is a corrupt ledger.
fn applied(id: &str, updated: Updated<Payment>) -> Result<Payment, StoreError> {
    match updated {
        Updated::Done { record, .. } => Ok(record),
        Updated::Duplicate | Updated::Missing => {
            Err(StoreError::Corrupt(format!("payment {id} vanished")))
        }
    }
}
