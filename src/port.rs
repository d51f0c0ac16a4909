//! The one provider port: the only way anything in Moongate reaches a provider.
//!
//! Every call, whatever asks for it (payments, refunds, the janitor, statement downloads,
//! repair, certificate downloads), passes the same steps in the same order: the account's
//! outbound rate limit (a bounded wait, else not sent) and, for a sub-merchant, its partner's;
//! the partner's circuit breaker and the account's, a `provider_call`
//! span, the one HTTP client, the adapter's pure parse, the call metrics, the breaker's
//! bookkeeping and a row in the attempt log. The HTTP client is private to this module.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moongate_contract::{AdapterError, CallContext, HttpRequest, HttpResponse, Prepared};
use time::OffsetDateTime;
use tracing::{Instrument, info_span, warn};

use crate::clock::Clock;
use crate::config::Account;
use crate::limits::Limited;
use crate::metrics::{CallLabels, CallTimeLabels, LimitLabels, Metrics};
use crate::outbound::{CallError, Downloaded, Outbound};
use crate::store::{Attempt, Store};

/// Who is calling and about what: the account called and the record the call concerns.
#[derive(Clone, Copy, Debug)]
pub struct Caller<'a> {
    /// The merchant owning the account.
    pub merchant_id: &'a str,
    /// The account called (its adapter, limit and circuit).
    pub account: &'a Account,
    /// What the call is about, for the attempt log: a payment id, or `statement:{day}`,
    /// `certificates` for calls about no payment.
    pub subject: &'a str,
    /// The refund concerned, if any.
    pub refund_id: Option<&'a str>,
}

/// The outcome of one provider exchange, before the caller maps it.
#[derive(Debug)]
pub enum Exchange<T> {
    /// The provider answered and the adapter read it.
    Answer(T),
    /// The adapter refused to render the request, or could not use the answer.
    Adapter(AdapterError),
    /// The request got no answer.
    Call(CallError),
    /// Not sent: the account's outbound limit had no turn within its bound.
    Throttled(Limited),
    /// Not sent: the account's circuit is open.
    CircuitOpen,
}

impl<T> Exchange<T> {
    /// True when the provider certainly did not act on the request.
    pub fn not_taken(&self) -> bool {
        matches!(
            self,
            Exchange::Call(CallError::NotSent(_))
                | Exchange::Throttled(_)
                | Exchange::CircuitOpen
                | Exchange::Adapter(
                    AdapterError::Rejected { .. }
                        | AdapterError::Unauthorised { .. }
                        | AdapterError::InvalidRequest(_)
                        | AdapterError::Signing
                        | AdapterError::Unsupported { .. }
                )
        )
    }

    /// A short word for logs and metrics.
    pub fn describe(&self) -> &'static str {
        match self {
            Exchange::Answer(_) => "answered",
            Exchange::Adapter(AdapterError::Rejected { .. }) => "rejected",
            Exchange::Adapter(AdapterError::Unauthorised { .. }) => "unauthorised",
            Exchange::Adapter(AdapterError::Indeterminate { .. }) => "indeterminate",
            Exchange::Adapter(_) => "unusable",
            Exchange::Call(CallError::NotSent(_)) => "not_sent",
            Exchange::Call(CallError::Unknown(_)) => "unknown",
            Exchange::Throttled(_) => "throttled",
            Exchange::CircuitOpen => "circuit_open",
        }
    }

    /// The answer, or what went wrong in words (for callers that only report failures).
    pub fn into_answer(self) -> Result<T, String> {
        match self {
            Exchange::Answer(answer) => Ok(answer),
            Exchange::Adapter(error) => Err(error.to_string()),
            Exchange::Call(error) => Err(error.to_string()),
            Exchange::Throttled(limited) => Err(format!(
                "the account's outbound limit had no turn (retry in {} ms); not sent",
                limited.retry_after.as_millis()
            )),
            Exchange::CircuitOpen => {
                Err("the account's provider is failing (circuit open); not sent".to_owned())
            }
        }
    }
}

/// The port: the HTTP client, the metrics it feeds and the attempt log it writes.
#[derive(Debug)]
pub struct ProviderPort {
    client: Outbound,
    metrics: Arc<Metrics>,
    attempts: Option<Arc<dyn Store>>,
    clock: Clock,
    refusals: Refusals,
}

/// An account whose authorisation the provider refused ([`AdapterError::Unauthorised`]), as
/// the port saw it; the gateway's authorisation service takes these
/// (`gateway/authorisations.rs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// Merchant.
    pub merchant_id: String,
    /// Account.
    pub account_id: String,
    /// The provider's code.
    pub code: String,
}

/// Refusals seen and not yet taken, and a wake-up for whoever takes them.
#[derive(Debug, Default)]
pub struct Refusals {
    pending: std::sync::Mutex<Vec<Refusal>>,
    /// Notified on each new refusal.
    pub arrived: tokio::sync::Notify,
}

impl Refusals {
    fn report(&self, refusal: Refusal) {
        let mut pending = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !pending.contains(&refusal) {
            pending.push(refusal);
        }
        drop(pending);
        self.arrived.notify_one();
    }

    /// Takes every refusal seen so far.
    pub fn take(&self) -> Vec<Refusal> {
        std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Why a gated call was not made.
enum Gate {
    Throttled(Limited),
    CircuitOpen,
}

/// A provider call's nonce: 32 random characters.
fn random_nonce() -> String {
    crate::ledger::random_token(32)
}

impl ProviderPort {
    /// A port that logs attempts in the ledger.
    pub fn new(
        client: Outbound,
        metrics: Arc<Metrics>,
        store: Arc<dyn Store>,
        clock: Clock,
    ) -> ProviderPort {
        ProviderPort {
            client,
            metrics,
            attempts: Some(store),
            clock,
            refusals: Refusals::default(),
        }
    }

    /// A port with no ledger (command-line tools that run before a gateway exists): attempts
    /// go to the log only.
    pub fn without_ledger(client: Outbound) -> ProviderPort {
        ProviderPort {
            client,
            metrics: Arc::new(Metrics::new()),
            attempts: None,
            clock: Clock::system(),
            refusals: Refusals::default(),
        }
    }

    /// Reports an answer refusing the account's authorisation.
    fn note_refusal<T>(&self, caller: Caller<'_>, exchange: &Exchange<T>) {
        if let Exchange::Adapter(AdapterError::Unauthorised { code, .. }) = exchange {
            warn!(
                merchant_id = caller.merchant_id,
                account_id = %caller.account.id,
                code = code.as_str(),
                "the provider refused the account's authorisation"
            );
            self.refusals.report(Refusal {
                merchant_id: caller.merchant_id.to_owned(),
                account_id: caller.account.id.clone(),
                code: code.clone(),
            });
        }
    }

    /// Authorisations the provider refused, not yet taken.
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// A fresh call context: the provider compares its time with its own clock, so it is the
    /// system clock's.
    pub fn call_context(&self) -> CallContext {
        CallContext {
            now: self.clock.wall(),
            nonce: random_nonce(),
        }
    }

    /// Sends what the adapter prepared and reads the answer with `parse`.
    pub async fn exchange<T>(
        &self,
        caller: Caller<'_>,
        operation: &'static str,
        prepared: Result<Prepared<T>, AdapterError>,
        parse: impl FnOnce(&HttpResponse) -> Result<T, AdapterError>,
    ) -> Exchange<T> {
        let (exchange, attempt) = self
            .exchange_unlogged(caller, operation, prepared, parse)
            .await;
        self.log(attempt).await;
        exchange
    }

    /// [`ProviderPort::exchange`], with the call's attempt-log line handed back instead of
    /// written (`None` when nothing was sent, or the port keeps no attempt log): the caller
    /// writes it in the commit that records the outcome (a create's second write).
    pub async fn exchange_unlogged<T>(
        &self,
        caller: Caller<'_>,
        operation: &'static str,
        prepared: Result<Prepared<T>, AdapterError>,
        parse: impl FnOnce(&HttpResponse) -> Result<T, AdapterError>,
    ) -> (Exchange<T>, Option<Attempt>) {
        let request = match prepared {
            Ok(Prepared::Ready(answer)) => return (Exchange::Answer(answer), None),
            Ok(Prepared::Send(request)) => request,
            Err(error) => return (Exchange::Adapter(error), None),
        };
        match self.gate(caller, operation).await {
            Err(Gate::Throttled(limited)) => return (Exchange::Throttled(limited), None),
            Err(Gate::CircuitOpen) => return (Exchange::CircuitOpen, None),
            Ok(()) => {}
        }
        let started_at = self.clock.now();
        let clock = Instant::now();
        let span = span(caller, operation);
        let result = self
            .client
            .send(&request)
            .instrument(span.clone())
            .await
            .map(|mut response| {
                // The adapter holds the answer's timestamp to the system clock.
                response.received_at = self.clock.wall();
                response
            });
        let (exchange, outcome_text) = match result {
            Err(error) => {
                let text = error.to_string();
                (Exchange::Call(error), text)
            }
            Ok(response) => match parse(&response) {
                Ok(answer) => (
                    Exchange::Answer(answer),
                    format!("answered HTTP {}", response.status),
                ),
                Err(error) => {
                    let text = error.to_string();
                    (Exchange::Adapter(error), text)
                }
            },
        };
        span.record("outcome", outcome_text.as_str());
        self.note_refusal(caller, &exchange);
        // A provider that answered, even with a refusal, is up; unknown fates are failures.
        let healthy = matches!(
            exchange,
            Exchange::Answer(_)
                | Exchange::Adapter(
                    AdapterError::Rejected { .. } | AdapterError::Unauthorised { .. }
                )
        );
        let attempt = self.finish(
            caller,
            operation,
            exchange.describe(),
            healthy,
            started_at,
            clock,
            &outcome_text,
        );
        (exchange, attempt)
    }

    /// Sends one request and streams the answer's body into `path` (statement files), with the
    /// same limit, circuit, metrics and attempt log as every call. A non-200 answer is returned
    /// as such: the caller reads the status.
    pub async fn download(
        &self,
        caller: Caller<'_>,
        operation: &'static str,
        request: &HttpRequest,
        path: &Path,
        max_bytes: u64,
        timeout: Duration,
    ) -> Exchange<Downloaded> {
        match self.gate(caller, operation).await {
            Err(Gate::Throttled(limited)) => return Exchange::Throttled(limited),
            Err(Gate::CircuitOpen) => return Exchange::CircuitOpen,
            Ok(()) => {}
        }
        let started_at = self.clock.now();
        let clock = Instant::now();
        let span = span(caller, operation);
        let result = self
            .client
            .download_to(request, path, max_bytes, timeout)
            .instrument(span.clone())
            .await;
        let (exchange, outcome_text, healthy) = match result {
            Err(error) => {
                let text = error.to_string();
                (Exchange::Call(error), text, false)
            }
            Ok(got) => {
                let text = format!("answered HTTP {} ({} bytes)", got.status, got.bytes);
                // A 5xx is the provider failing; any other answer shows it is up.
                let healthy = got.status < 500;
                (Exchange::Answer(got), text, healthy)
            }
        };
        span.record("outcome", outcome_text.as_str());
        self.note_refusal(caller, &exchange);
        let attempt = self.finish(
            caller,
            operation,
            exchange.describe(),
            healthy,
            started_at,
            clock,
            &outcome_text,
        );
        self.log(attempt).await;
        exchange
    }

    /// The account's outbound limit, its partner's (a sub-merchant's calls are also its
    /// partner's), then the partner's circuit and the account's.
    async fn gate(&self, caller: Caller<'_>, operation: &'static str) -> Result<(), Gate> {
        let account = caller.account;
        let partner = account.partner.as_deref();
        let limits = [
            account.limit.as_deref().map(|l| {
                (
                    l,
                    "account",
                    format!("{}/{}", caller.merchant_id, account.id),
                )
            }),
            partner.and_then(|p| p.limit.as_deref().map(|l| (l, "partner", p.id.clone()))),
        ];
        for (limit, scope, id) in limits.into_iter().flatten() {
            if let Err(limited) = limit.acquire().await {
                warn!(
                    account = %account.id,
                    scope,
                    operation,
                    retry_after_ms = limited.retry_after.as_millis() as u64,
                    "outbound rate limit: call not sent"
                );
                self.metrics
                    .rate_limited
                    .get_or_create(&LimitLabels {
                        scope: scope.to_owned(),
                        id,
                    })
                    .inc();
                self.count(caller, operation, "throttled", None);
                return Err(Gate::Throttled(limited));
            }
        }
        let now = Instant::now();
        let partner_pass = match partner {
            None => None,
            Some(partner) => match partner.circuit.pass(now) {
                Some(pass) => Some((partner, pass)),
                None => {
                    self.count(caller, operation, "circuit_open", None);
                    return Err(Gate::CircuitOpen);
                }
            },
        };
        if !account.circuit.allow(now) {
            // The partner's probe, if this call held it, goes to another call.
            if let Some((partner, pass)) = partner_pass {
                partner.circuit.unused(pass);
            }
            self.count(caller, operation, "circuit_open", None);
            return Err(Gate::CircuitOpen);
        }
        Ok(())
    }

    /// Metrics and the circuit's bookkeeping of a call that was sent; its attempt-log line
    /// when the port keeps the log in a ledger (else the line goes to the trace).
    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        caller: Caller<'_>,
        operation: &'static str,
        outcome: &str,
        healthy: bool,
        started_at: OffsetDateTime,
        clock: Instant,
        outcome_text: &str,
    ) -> Option<Attempt> {
        self.count(caller, operation, outcome, Some(clock.elapsed()));
        let now = Instant::now();
        caller.account.circuit.record(now, healthy);
        if let Some(partner) = &caller.account.partner {
            partner.circuit.record(now, healthy);
        }
        let attempt = Attempt {
            payment_id: caller.subject.to_owned(),
            account_id: caller.account.id.clone(),
            refund_id: caller.refund_id.map(str::to_owned),
            operation,
            started_at,
            elapsed_ms: i64::try_from(clock.elapsed().as_millis()).unwrap_or(i64::MAX),
            outcome: outcome_text.chars().take(300).collect(),
        };
        if self.attempts.is_none() {
            tracing::info!(
                account = %attempt.account_id,
                operation,
                outcome = %attempt.outcome,
                elapsed_ms = attempt.elapsed_ms,
                "provider call"
            );
            return None;
        }
        Some(attempt)
    }

    /// Writes an attempt-log line to the port's ledger.
    async fn log(&self, attempt: Option<Attempt>) {
        if let (Some(store), Some(attempt)) = (&self.attempts, attempt)
            && let Err(error) = store.record_attempt(attempt).await
        {
            warn!(%error, "could not record provider attempt");
        }
    }

    fn count(&self, caller: Caller<'_>, operation: &str, outcome: &str, elapsed: Option<Duration>) {
        let account = caller.account;
        self.metrics
            .provider_calls
            .get_or_create(&CallLabels {
                provider: account.kind.as_str().to_owned(),
                merchant: caller.merchant_id.to_owned(),
                account: account.id.clone(),
                operation: operation.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        if let Some(elapsed) = elapsed {
            self.metrics
                .provider_seconds
                .get_or_create(&CallTimeLabels {
                    provider: account.kind.as_str().to_owned(),
                    merchant: caller.merchant_id.to_owned(),
                    account: account.id.clone(),
                    operation: operation.to_owned(),
                })
                .observe(elapsed.as_secs_f64());
        }
    }
}

fn span(caller: Caller<'_>, operation: &'static str) -> tracing::Span {
    info_span!(
        "provider_call",
        operation,
        account = %caller.account.id,
        subject = caller.subject,
        outcome = tracing::field::Empty
    )
}
