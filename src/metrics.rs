//! Prometheus metrics (OpenMetrics text) on the admin listener's `/metrics`.
//!
//! Label values are bounded: routes are the router's matched paths, merchants and accounts come
//! from the config, outcomes are fixed words. Nothing here carries an amount, an id of a payment
//! or a secret.

use std::fmt;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `route`, `method`, `status`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Matched route, e.g. `/v1/payments/{id}`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Status code.
    pub status: u16,
}

/// `route`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Matched route.
    pub route: String,
}

/// A provider call: `provider`, `merchant`, `account`, `operation`, `outcome`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// Provider kind.
    pub provider: String,
    /// Merchant id.
    pub merchant: String,
    /// Account id.
    pub account: String,
    /// `create`, `query`, `close`, `refund`, `refund_query`.
    pub operation: String,
    /// `answered`, `rejected`, `indeterminate`, `unusable`, `not_sent`, `unknown`, `throttled`.
    pub outcome: String,
}

/// A provider call's timing: `provider`, `merchant`, `account`, `operation`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallTimeLabels {
    /// Provider kind.
    pub provider: String,
    /// Merchant id.
    pub merchant: String,
    /// Account id.
    pub account: String,
    /// Operation.
    pub operation: String,
}

/// A rate-limit refusal: `scope` (`merchant`, `account` or `partner`) and `id`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LimitLabels {
    /// `merchant`, `account` or `partner`.
    pub scope: String,
    /// `merchant`, `merchant/account` or the partner id.
    pub id: String,
}

/// `partner`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartnerLabels {
    /// Partner id.
    pub partner: String,
}

/// `merchant`, `account`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AccountLabels {
    /// Merchant id.
    pub merchant: String,
    /// Account id.
    pub account: String,
}

/// An outcome label alone, with the provider or merchant it concerns.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Provider kind (notifications), merchant id (webhooks) or `merchant/account`
    /// (reconciliation).
    pub source: String,
    /// `accepted`/`rejected` or `delivered`/`failed`/`parked`.
    pub outcome: String,
}

/// The outcome of a shared limit check.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SharedLimitLabels {
    /// `allowed`, `limited` or `unavailable`.
    pub outcome: String,
}

type Timing<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 1 ms to ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Every metric Moongate keeps.
pub struct Metrics {
    registry: Registry,
    /// `moongate_http_requests_total`.
    pub requests: Family<RequestLabels, Counter>,
    /// `moongate_http_request_duration_seconds`.
    pub request_seconds: Timing<RouteLabels>,
    /// `moongate_provider_calls_total`.
    pub provider_calls: Family<CallLabels, Counter>,
    /// `moongate_provider_call_duration_seconds`.
    pub provider_seconds: Timing<CallTimeLabels>,
    /// `moongate_rate_limited_total`.
    pub rate_limited: Family<LimitLabels, Counter>,
    /// `moongate_provider_notifications_total`.
    pub notifications: Family<OutcomeLabels, Counter>,
    /// `moongate_webhook_deliveries_total`.
    pub webhook_deliveries: Family<OutcomeLabels, Counter>,
    /// `moongate_circuit_state`: 0 closed, 1 half-open, 2 open.
    pub circuit_state: Family<AccountLabels, Gauge>,
    /// `moongate_partner_circuit_state`: the same, per partner.
    pub partner_circuit_state: Family<PartnerLabels, Gauge>,
    /// `moongate_config_reloads_total`.
    pub config_reloads: Family<OutcomeLabels, Counter>,
    /// `moongate_authorisation_refusals_total`: calls the provider refused for the account's
    /// authorisation of its partner's app (revoked, lapsed).
    pub authorisation_refusals: Family<AccountLabels, Counter>,
    /// `moongate_shared_limit_checks_total{outcome}`: Redis limit checks (`allowed`, `limited`,
    /// `unavailable`).
    pub shared_limit_checks: Family<SharedLimitLabels, Counter>,
    /// `moongate_shared_limit_up`: 1 while the last Redis check got an answer, 0 otherwise.
    pub shared_limit_up: Gauge,
    /// `moongate_reconciliation_runs_total`: scheduled runs by `merchant/account` and outcome.
    pub reconciliation_runs: Family<OutcomeLabels, Counter>,
    /// `moongate_reconciliation_open_breaks`: open breaks found by an account's last daily run.
    pub reconciliation_open_breaks: Family<AccountLabels, Gauge>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("moongate");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "Requests served, by route, method and status",
            requests.clone(),
        );
        let request_seconds: Timing<RouteLabels> =
            Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register(
            "http_request_duration_seconds",
            "Time to serve a request, by route",
            request_seconds.clone(),
        );
        let provider_calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "provider_calls",
            "Calls to providers, by account, operation and outcome",
            provider_calls.clone(),
        );
        let provider_seconds: Timing<CallTimeLabels> =
            Family::new_with_constructor(seconds_histogram as fn() -> Histogram);
        registry.register(
            "provider_call_duration_seconds",
            "Duration of provider calls, by account and operation",
            provider_seconds.clone(),
        );
        let rate_limited = Family::<LimitLabels, Counter>::default();
        registry.register(
            "rate_limited",
            "Requests refused or calls held back by a rate limit",
            rate_limited.clone(),
        );
        let notifications = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "provider_notifications",
            "Provider notifications, by provider and whether they were accepted",
            notifications.clone(),
        );
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "webhook_deliveries",
            "Merchant webhook delivery attempts, by merchant and outcome",
            webhook_deliveries.clone(),
        );
        let circuit_state = Family::<AccountLabels, Gauge>::default();
        registry.register(
            "circuit_state",
            "Circuit breaker state per account: 0 closed, 1 half-open, 2 open",
            circuit_state.clone(),
        );
        let partner_circuit_state = Family::<PartnerLabels, Gauge>::default();
        registry.register(
            "partner_circuit_state",
            "Circuit breaker state per partner (all its sub-merchants' calls): 0 closed, 1 half-open, 2 open",
            partner_circuit_state.clone(),
        );
        let authorisation_refusals = Family::<AccountLabels, Counter>::default();
        registry.register(
            "authorisation_refusals",
            "Provider calls refused for the account's authorisation of its partner's app",
            authorisation_refusals.clone(),
        );
        let config_reloads = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads, applied or refused",
            config_reloads.clone(),
        );
        let reconciliation_runs = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "reconciliation_runs",
            "Scheduled daily reconciliations, by merchant/account and outcome",
            reconciliation_runs.clone(),
        );
        let reconciliation_open_breaks = Family::<AccountLabels, Gauge>::default();
        registry.register(
            "reconciliation_open_breaks",
            "Open breaks found by each account's last daily reconciliation",
            reconciliation_open_breaks.clone(),
        );
        let shared_limit_checks = Family::<SharedLimitLabels, Counter>::default();
        registry.register(
            "shared_limit_checks",
            "Shared (Redis) merchant limit checks, by outcome",
            shared_limit_checks.clone(),
        );
        let shared_limit_up = Gauge::default();
        registry.register(
            "shared_limit_up",
            "1 while Redis answers limit checks, 0 while limits are per instance only",
            shared_limit_up.clone(),
        );
        Metrics {
            registry,
            shared_limit_checks,
            shared_limit_up,
            reconciliation_runs,
            reconciliation_open_breaks,
            circuit_state,
            partner_circuit_state,
            authorisation_refusals,
            config_reloads,
            requests,
            request_seconds,
            provider_calls,
            provider_seconds,
            rate_limited,
            notifications,
            webhook_deliveries,
        }
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
