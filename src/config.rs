//! The merchant config file: TOML, parsed strictly, validated as a whole, then built.
//!
//! Three stages, as in Vector and linkerd: [`parse`] (syntax and unknown keys, first error with
//! its key path), [`RawConfig::validate`] (pure checks, *every* problem with its key path) and
//! [`RawConfig::build`] (I/O: read secrets and keys). Secrets are never inline: each is a
//! [`SecretRef`] to an env variable or a file, resolved into a redacting [`Secret`].

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use moongate_contract::{PaymentAdapter, ProviderKind, Secret, SecretRef};
use serde::Deserialize;

use crate::circuit::{Circuit, CircuitSettings};
use crate::limits::{Limit, RawLimit};
use crate::{registry, routing};

/// One problem found in a config file, with the dotted key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// e.g. `merchants.shop.accounts.main.settings.app_id`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Every problem found, in file order where possible.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} problem(s) in config:\n{}", .0.len(), render(.0))]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

fn render(problems: &[ConfigProblem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn problem(path: impl Into<String>, message: impl Into<String>) -> ConfigProblem {
    ConfigProblem {
        path: path.into(),
        message: message.into(),
    }
}

/// The file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listening and public addresses.
    pub server: ServerSection,
    /// Where the ledger lives.
    #[serde(default)]
    pub ledger: LedgerSection,
    /// Webhook delivery tuning.
    #[serde(default)]
    pub webhooks: WebhookSection,
    /// Outbound provider calls.
    #[serde(default)]
    pub providers: ProviderSection,
    /// Reconciliation against provider statements.
    #[serde(default)]
    pub reconciliation: ReconciliationSection,
    /// Rate limits shared across instances.
    #[serde(default)]
    pub rate_limits: RateLimitSection,
    /// The hosted cashier page.
    #[serde(default)]
    pub cashier: CashierSection,
    /// Merchants by id.
    #[serde(default)]
    pub merchants: BTreeMap<String, RawMerchant>,
}

/// `[rate_limits]`: merchant limits shared by every instance through Redis.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// Redis URL (`redis://[:password@]host:port/db`), from an env variable or a file: it may
    /// hold a password. Unset: limits are per instance (governor alone).
    #[serde(default)]
    pub redis_url: Option<SecretRef>,
    /// How long a limit check may wait for Redis before the local limiter decides alone,
    /// milliseconds (default 50).
    #[serde(default)]
    pub redis_timeout_ms: Option<u64>,
    /// Key prefix in Redis (default `moongate`), so several deployments can share one Redis.
    #[serde(default)]
    pub redis_key_prefix: Option<String>,
}

/// `[cashier]`: the hosted cashier page (its URLs live under `server.public_base_url`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CashierSection {
    /// Demo and test deployments only: per wallet (`alipay`, `wechatpay`), a sandbox "wallet"
    /// page that pays a QR code's order, linked from the cashier under the QR code so a
    /// newcomer without a phone can "scan and pay". Never set this in production.
    #[serde(default)]
    pub sandbox_wallets: BTreeMap<String, String>,
}

/// Shared rate limits, resolved.
#[derive(Debug, Clone)]
pub struct SharedLimitSettings {
    /// The Redis URL.
    pub url: Secret<String>,
    /// Check timeout.
    pub timeout: std::time::Duration,
    /// Key prefix.
    pub prefix: String,
}

/// `[reconciliation]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconciliationSection {
    /// Where raw statement files are kept (relative to the config file; default
    /// `statements` beside the ledger).
    #[serde(default)]
    pub statement_dir: Option<String>,
    /// How far a ledger time may be from the provider's statement day and still be a timing
    /// difference rather than a break, seconds (default 1800).
    #[serde(default = "default_drift")]
    pub drift_secs: u64,
    /// When set (`"HH:MM"`, Beijing time), `serve` reconciles yesterday's statement of every
    /// account each day from this time on, retrying while the bill is not ready.
    #[serde(default)]
    pub daily_at: Option<String>,
}

impl Default for ReconciliationSection {
    fn default() -> Self {
        ReconciliationSection {
            statement_dir: None,
            drift_secs: default_drift(),
            daily_at: None,
        }
    }
}

/// `"10:30"` → (10, 30).
pub fn parse_daily_at(text: &str) -> Option<(u8, u8)> {
    let (hour, minute) = text.trim().split_once(':')?;
    let (hour, minute): (u8, u8) = (hour.parse().ok()?, minute.parse().ok()?);
    (hour < 24 && minute < 60 && text.trim().len() == 5).then_some((hour, minute))
}

fn default_drift() -> u64 {
    1800
}

/// Reconciliation settings, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconciliationSettings {
    /// Raw statement files.
    pub statement_dir: PathBuf,
    /// Drift window, seconds.
    pub drift_secs: u64,
    /// Daily run time (Beijing hour, minute), when scheduled.
    pub daily_at: Option<(u8, u8)>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// e.g. `127.0.0.1:8080`.
    pub listen: String,
    /// Base URL providers reach Moongate at (notification URLs are built from it).
    pub public_base_url: String,
    /// Serve HTTPS with these files when present.
    #[serde(default)]
    pub tls: Option<TlsSection>,
    /// Accepted clock skew of signed merchant requests, seconds (default 300).
    #[serde(default = "default_skew")]
    pub signature_tolerance_secs: u64,
    /// Where the admin endpoints (`/metrics`, `/healthz`) listen; keep it private (default:
    /// not served).
    #[serde(default)]
    pub admin_listen: Option<String>,
    /// How long a client may take to send a request's headers (and a TLS handshake),
    /// milliseconds (default 10000): slow clients do not hold connections.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_ms: u64,
}

fn default_header_timeout() -> u64 {
    10_000
}

/// A merchant's request limit when its config names none.
const DEFAULT_MERCHANT_LIMIT: RawLimit = RawLimit {
    requests_per_second: 100,
    burst: 200,
    max_wait_ms: None,
};

fn default_skew() -> u64 {
    300
}

/// `[server.tls]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key.
    pub key_file: String,
}

/// `[ledger]`: the embedded SQLite file, or a PostgreSQL database shared by several instances.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// SQLite file path (relative to the config file). Ignored when `database_url` is set.
    #[serde(default = "default_ledger_path")]
    pub path: String,
    /// PostgreSQL URL (`postgres://user[:password]@host:port/db[?sslmode=…]`), from an env
    /// variable or a file: it may hold a password. Set: the ledger lives in PostgreSQL.
    #[serde(default)]
    pub database_url: Option<SecretRef>,
    /// PostgreSQL pool size per instance (default 16).
    #[serde(default)]
    pub max_connections: Option<u32>,
}

impl Default for LedgerSection {
    fn default() -> Self {
        LedgerSection {
            path: default_ledger_path(),
            database_url: None,
            max_connections: None,
        }
    }
}

/// Where the ledger lives, resolved.
#[derive(Debug, Clone)]
pub enum LedgerBackend {
    /// The embedded SQLite file.
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres {
        /// Its URL (may hold a password).
        url: Secret<String>,
        /// Pool size.
        max_connections: u32,
    },
}

impl LedgerBackend {
    /// Whether two settings name the same ledger (a reload cannot move it).
    pub fn same_as(&self, other: &LedgerBackend) -> bool {
        match (self, other) {
            (LedgerBackend::Sqlite(a), LedgerBackend::Sqlite(b)) => a == b,
            (
                LedgerBackend::Postgres {
                    url: a,
                    max_connections: m,
                },
                LedgerBackend::Postgres {
                    url: b,
                    max_connections: n,
                },
            ) => a.expose() == b.expose() && m == n,
            _ => false,
        }
    }
}

fn default_ledger_path() -> String {
    "moongate.db".to_owned()
}

/// `[webhooks]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookSection {
    /// First retry delay, milliseconds (default 5000); doubles per attempt, jittered.
    #[serde(default = "default_backoff")]
    pub initial_backoff_ms: u64,
    /// Longest delay between attempts, milliseconds (default one hour).
    #[serde(default = "default_max_backoff")]
    pub max_backoff_ms: u64,
    /// Attempts before an event is parked as undeliverable (default 110: with the default
    /// backoff, at least 3 days of retries).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Per-delivery timeout, milliseconds (default 10000).
    #[serde(default = "default_webhook_timeout")]
    pub timeout_ms: u64,
}

impl Default for WebhookSection {
    fn default() -> Self {
        WebhookSection {
            initial_backoff_ms: default_backoff(),
            max_backoff_ms: default_max_backoff(),
            max_attempts: default_attempts(),
            timeout_ms: default_webhook_timeout(),
        }
    }
}

fn default_backoff() -> u64 {
    5_000
}
fn default_max_backoff() -> u64 {
    3_600_000
}
fn default_attempts() -> u32 {
    110
}
fn default_webhook_timeout() -> u64 {
    10_000
}

/// `[providers]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSection {
    /// Connect timeout, milliseconds (default 3000).
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Whole-call timeout, milliseconds (default 15000).
    #[serde(default = "default_call_timeout")]
    pub call_timeout_ms: u64,
    /// How often payments and refunds in doubt are re-queried, milliseconds (default 30000).
    #[serde(default = "default_sweep")]
    pub recheck_interval_ms: u64,
    /// How often a scanned payment code waiting for the shopper's password is queried,
    /// milliseconds (default 3000), for `payment_code_poll_attempts` times; then the re-check
    /// loop takes over.
    #[serde(default = "default_code_poll")]
    pub payment_code_poll_ms: u64,
    /// How many quick queries a waiting payment code gets (default 20, about a minute).
    #[serde(default = "default_code_attempts")]
    pub payment_code_poll_attempts: u32,
    /// Per-account circuit breakers.
    #[serde(default)]
    pub circuit: CircuitSettings,
}

impl Default for ProviderSection {
    fn default() -> Self {
        ProviderSection {
            connect_timeout_ms: default_connect_timeout(),
            call_timeout_ms: default_call_timeout(),
            recheck_interval_ms: default_sweep(),
            payment_code_poll_ms: default_code_poll(),
            payment_code_poll_attempts: default_code_attempts(),
            circuit: CircuitSettings::default(),
        }
    }
}

fn default_connect_timeout() -> u64 {
    3_000
}
fn default_call_timeout() -> u64 {
    15_000
}
fn default_sweep() -> u64 {
    30_000
}
fn default_code_poll() -> u64 {
    3_000
}
fn default_code_attempts() -> u32 {
    20
}

/// `[merchants.<id>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMerchant {
    /// Display name.
    pub name: String,
    /// Request-signing keys; several may be active during a rotation.
    pub keys: Vec<RawKey>,
    /// Where events are delivered.
    #[serde(default)]
    pub webhook: Option<RawWebhook>,
    /// Provider accounts by id.
    pub accounts: BTreeMap<String, RawAccount>,
    /// Routing rules, tried in order (see [`crate::routing`]).
    #[serde(default)]
    pub routes: Vec<routing::RawRoute>,
    /// Requests to Moongate (default 100/s, burst 200).
    #[serde(default)]
    pub rate_limit: Option<RawLimit>,
}

/// `[[merchants.<id>.keys]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKey {
    /// Sent as `Moongate-Key-Id`.
    pub id: String,
    /// The shared HMAC secret.
    pub secret: SecretRef,
}

/// `[merchants.<id>.webhook]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWebhook {
    /// HTTPS (or loopback HTTP) endpoint.
    pub url: String,
    /// Signing secrets; every event carries one signature per secret.
    pub secrets: Vec<SecretRef>,
}

/// `[merchants.<id>.accounts.<id>]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAccount {
    /// Provider kind, e.g. `alipay`.
    pub provider: String,
    /// Provider-specific settings, parsed by the provider's own strict struct.
    pub settings: toml::Table,
    /// Calls Moongate makes to the provider for this account (default: unlimited).
    #[serde(default)]
    pub rate_limit: Option<RawLimit>,
    /// The fee rate agreed with the provider, e.g. `"0.6%"`: reconciliation flags statement
    /// fees that differ from it by more than one minor unit (default: fees are only summed).
    #[serde(default)]
    pub fee_rate: Option<String>,
}

/// `"0.6%"` → 6000 parts per million (up to four decimals of a percent, at most 100 %).
pub fn parse_fee_rate(text: &str) -> Option<i64> {
    let number = text.trim().strip_suffix('%')?;
    let ppm = moongate_contract::statement::parse_scaled(number, 4)?;
    (0..=1_000_000).contains(&ppm).then_some(ppm)
}

/// Parses TOML text; syntax and unknown-key errors come back with their key path.
pub fn parse(text: &str) -> Result<RawConfig, ConfigErrors> {
    let deserializer = toml::Deserializer::parse(text)
        .map_err(|e| ConfigErrors(vec![problem("(file)", e.message().to_owned())]))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let message = e.inner().message().to_owned();
        ConfigErrors(vec![problem(
            if path == "." {
                "(root)".to_owned()
            } else {
                path
            },
            message,
        )])
    })
}

/// Reads and parses a file.
pub fn load(path: &Path) -> Result<RawConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![problem("(file)", format!("{}: {e}", path.display()))]))?;
    parse(&text)
}

/// A validated merchant key.
#[derive(Debug)]
pub struct MerchantKey {
    /// Key id.
    pub id: String,
    /// HMAC secret.
    pub secret: Secret<Vec<u8>>,
}

/// A validated webhook endpoint.
#[derive(Debug)]
pub struct Webhook {
    /// Endpoint.
    pub url: String,
    /// Active secrets.
    pub secrets: Vec<Secret<Vec<u8>>>,
}

/// A provider account with its adapter built.
#[derive(Debug)]
pub struct Account {
    /// Account id within the merchant.
    pub id: String,
    /// Provider.
    pub kind: ProviderKind,
    /// The adapter, keys loaded.
    pub adapter: Arc<dyn PaymentAdapter>,
    /// Outbound limit, when configured (shared with the next config when a reload leaves the
    /// account's settings as they were).
    pub limit: Option<Arc<Limit>>,
    /// Circuit breaker (likewise kept across reloads).
    pub circuit: Arc<Circuit>,
    /// Agreed fee rate, parts per million, when configured.
    pub fee_rate_ppm: Option<i64>,
    /// What the limit and circuit were built from (provider, settings, limit, circuit
    /// settings): a reload keeps them when this is unchanged.
    pub state_key: String,
}

/// What an account's live state (limit, circuit) depends on.
fn account_state_key(account: &RawAccount, circuit: CircuitSettings) -> String {
    format!(
        "{}|{}|{:?}|{circuit:?}",
        account.provider,
        toml::to_string(&account.settings).unwrap_or_default(),
        account.rate_limit
    )
}

impl Config {
    /// Carries live state over from the config in force: every account whose settings are
    /// unchanged keeps its circuit breaker (an open circuit stays open) and outbound limit (its
    /// bucket is not refilled), and every merchant whose limit is unchanged keeps its limiter.
    /// Changed or new ones start fresh.
    pub fn keep_state_from(&mut self, old: &Config) {
        for (id, merchant) in &mut self.merchants {
            let Some(before) = old.merchants.get(id) else {
                continue;
            };
            // A freshly built config holds the only reference to its merchants.
            let Some(merchant) = Arc::get_mut(merchant) else {
                continue;
            };
            if merchant.limit_key == before.limit_key {
                merchant.limit = Arc::clone(&before.limit);
            }
            for account in &mut merchant.accounts {
                if let Some(was) = before.account(&account.id)
                    && was.state_key == account.state_key
                {
                    account.circuit = Arc::clone(&was.circuit);
                    account.limit = was.limit.clone();
                }
            }
        }
    }
}

/// A merchant ready to serve.
#[derive(Debug)]
pub struct Merchant {
    /// Merchant id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Signing keys.
    pub keys: Vec<MerchantKey>,
    /// Webhook endpoint.
    pub webhook: Option<Webhook>,
    /// Accounts in id order.
    pub accounts: Vec<Account>,
    /// Routing rules; empty means "the first account that serves the method".
    pub routes: routing::Routes,
    /// Inbound limit (kept across reloads that leave it unchanged).
    pub limit: Arc<Limit>,
    /// What the inbound limit was built from.
    pub limit_key: String,
}

impl Merchant {
    /// Finds an account.
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.id == id)
    }
}

/// The built configuration.
#[derive(Debug)]
pub struct Config {
    /// Parsed listen address.
    pub listen: SocketAddr,
    /// Public base URL, no trailing slash.
    pub public_base_url: String,
    /// TLS files, resolved.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Signature tolerance.
    pub signature_tolerance_secs: u64,
    /// Admin listener address.
    pub admin_listen: Option<SocketAddr>,
    /// Header read timeout.
    pub header_read_timeout_ms: u64,
    /// Where the ledger lives (a SQLite file's folder also keeps statements by default).
    pub ledger: LedgerBackend,
    /// Webhook tuning.
    pub webhooks: WebhookSection,
    /// Provider call tuning.
    pub providers: ProviderSection,
    /// Reconciliation.
    pub reconciliation: ReconciliationSettings,
    /// Shared (Redis) merchant rate limits, when configured.
    pub shared_limits: Option<SharedLimitSettings>,
    /// Sandbox wallet pages linked from the cashier (demo and tests only).
    pub sandbox_wallets: Vec<(ProviderKind, String)>,
    /// Merchants by id.
    pub merchants: BTreeMap<String, Arc<Merchant>>,
}

fn is_identifier(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 64
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

fn check_url(url: &str) -> Result<(), String> {
    moongate_contract::http::check_base_url(url)
}

impl RawConfig {
    /// Pure validation: every problem, with its key path.
    pub fn validate(&self) -> Result<(), ConfigErrors> {
        let mut problems = Vec::new();
        if self.server.listen.parse::<SocketAddr>().is_err() {
            problems.push(problem(
                "server.listen",
                "must be an address like 127.0.0.1:8080",
            ));
        }
        let base = &self.server.public_base_url;
        if !(base.starts_with("https://") || base.starts_with("http://")) || base.contains('?') {
            problems.push(problem(
                "server.public_base_url",
                "must be an http(s) URL without query",
            ));
        }
        if self
            .server
            .admin_listen
            .as_ref()
            .is_some_and(|a| a.parse::<SocketAddr>().is_err())
        {
            problems.push(problem(
                "server.admin_listen",
                "must be an address like 127.0.0.1:9090",
            ));
        }
        if self
            .reconciliation
            .daily_at
            .as_deref()
            .is_some_and(|t| parse_daily_at(t).is_none())
        {
            problems.push(problem(
                "reconciliation.daily_at",
                "must be a Beijing time like \"10:30\"",
            ));
        }
        if self
            .ledger
            .max_connections
            .is_some_and(|n| n == 0 || n > 1_000)
        {
            problems.push(problem(
                "ledger.max_connections",
                "must be between 1 and 1000",
            ));
        }
        if self
            .rate_limits
            .redis_timeout_ms
            .is_some_and(|ms| ms == 0 || ms > 5_000)
        {
            problems.push(problem(
                "rate_limits.redis_timeout_ms",
                "must be between 1 and 5000",
            ));
        }
        if self
            .rate_limits
            .redis_key_prefix
            .as_deref()
            .is_some_and(|p| !is_identifier(p))
        {
            problems.push(problem(
                "rate_limits.redis_key_prefix",
                "must be 1-64 of [A-Za-z0-9_-]",
            ));
        }
        for (wallet, url) in &self.cashier.sandbox_wallets {
            let path = format!("cashier.sandbox_wallets.{wallet}");
            if ProviderKind::parse(wallet).is_none() {
                problems.push(problem(
                    &path,
                    format!(
                        "must be a provider kind ({})",
                        ProviderKind::ALL
                            .iter()
                            .map(|k| k.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            } else if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(problem(&path, "must be an http(s) URL"));
            }
        }
        if self.reconciliation.drift_secs > 86_400 {
            problems.push(problem(
                "reconciliation.drift_secs",
                "must be at most 86400 (one statement day)",
            ));
        }
        if self.server.header_read_timeout_ms == 0 {
            problems.push(problem("server.header_read_timeout_ms", "must be positive"));
        }
        if self.server.signature_tolerance_secs == 0 || self.server.signature_tolerance_secs > 900 {
            problems.push(problem(
                "server.signature_tolerance_secs",
                "must be 1 to 900 seconds",
            ));
        }
        let w = &self.webhooks;
        if w.initial_backoff_ms == 0 || w.max_backoff_ms < w.initial_backoff_ms {
            problems.push(problem(
                "webhooks.max_backoff_ms",
                "must be at least initial_backoff_ms, which must be positive",
            ));
        }
        if w.max_attempts == 0 {
            problems.push(problem("webhooks.max_attempts", "must be at least 1"));
        }
        if self.providers.call_timeout_ms == 0 || self.providers.connect_timeout_ms == 0 {
            problems.push(problem("providers", "timeouts must be positive"));
        }
        for (key, message) in self.providers.circuit.validate() {
            problems.push(problem(format!("providers.circuit.{key}"), message));
        }
        if self.providers.payment_code_poll_ms == 0 {
            problems.push(problem(
                "providers.payment_code_poll_ms",
                "must be positive",
            ));
        }
        if self.merchants.is_empty() {
            problems.push(problem("merchants", "at least one merchant is required"));
        }
        let mut key_ids = BTreeMap::new();
        for (merchant_id, merchant) in &self.merchants {
            let at = format!("merchants.{merchant_id}");
            if !is_identifier(merchant_id) {
                problems.push(problem(
                    &at,
                    "merchant ids are 1-64 letters, digits, '-' or '_'",
                ));
            }
            if merchant.keys.is_empty() {
                problems.push(problem(
                    format!("{at}.keys"),
                    "at least one signing key is required",
                ));
            }
            for (index, key) in merchant.keys.iter().enumerate() {
                if !is_identifier(&key.id) {
                    problems.push(problem(
                        format!("{at}.keys[{index}].id"),
                        "must be an identifier",
                    ));
                } else if let Some(other) = key_ids.insert(key.id.clone(), merchant_id.clone()) {
                    problems.push(problem(
                        format!("{at}.keys[{index}].id"),
                        format!("key id {:?} is already used by merchant {other:?}", key.id),
                    ));
                }
            }
            if let Some(webhook) = &merchant.webhook {
                if let Err(message) = check_url(&webhook.url) {
                    problems.push(problem(format!("{at}.webhook.url"), message));
                }
                if webhook.secrets.is_empty() {
                    problems.push(problem(
                        format!("{at}.webhook.secrets"),
                        "at least one secret",
                    ));
                }
            }
            if merchant.accounts.is_empty() {
                problems.push(problem(
                    format!("{at}.accounts"),
                    "at least one account is required",
                ));
            }
            for (account_id, account) in &merchant.accounts {
                let at = format!("{at}.accounts.{account_id}");
                if !is_identifier(account_id) {
                    problems.push(problem(&at, "account ids are identifiers"));
                }
                match ProviderKind::parse(&account.provider) {
                    None => problems.push(problem(
                        format!("{at}.provider"),
                        format!(
                            "unknown provider {:?}; known: {}",
                            account.provider,
                            ProviderKind::ALL
                                .iter()
                                .map(|k| k.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )),
                    Some(kind) => {
                        for (key, message) in registry::validate_settings(kind, &account.settings) {
                            problems.push(problem(format!("{at}.settings{key}"), message));
                        }
                    }
                }
            }
            if let Some(limit) = &merchant.rate_limit {
                for (key, message) in limit.validate() {
                    problems.push(problem(format!("{at}.rate_limit.{key}"), message));
                }
            }
            for (account_id, account) in &merchant.accounts {
                if account
                    .fee_rate
                    .as_deref()
                    .is_some_and(|rate| parse_fee_rate(rate).is_none())
                {
                    problems.push(problem(
                        format!("{at}.accounts.{account_id}.fee_rate"),
                        "must be a percentage like \"0.6%\" (at most four decimals, at most 100%)",
                    ));
                }
                if let Some(limit) = &account.rate_limit {
                    for (key, message) in limit.validate() {
                        problems.push(problem(
                            format!("{at}.accounts.{account_id}.rate_limit.{key}"),
                            message,
                        ));
                    }
                }
            }
            let account_ids: Vec<&str> = merchant.accounts.keys().map(String::as_str).collect();
            if let Err(route_problems) = routing::validate(&merchant.routes, &account_ids) {
                for (key, message) in route_problems {
                    problems.push(problem(format!("{at}.{key}"), message));
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigErrors(problems))
        }
    }

    /// Validates, then reads every secret and key (relative paths against `base_dir`).
    pub fn build(&self, base_dir: &Path) -> Result<Config, ConfigErrors> {
        self.validate()?;
        let mut problems = Vec::new();
        let shared_limits = match &self.rate_limits.redis_url {
            None => None,
            Some(reference) => match resolve_secret(reference, base_dir) {
                Ok(url) if url.starts_with("redis://") || url.starts_with("rediss://") => {
                    Some(SharedLimitSettings {
                        url: Secret::new(url),
                        timeout: std::time::Duration::from_millis(
                            self.rate_limits.redis_timeout_ms.unwrap_or(50),
                        ),
                        prefix: self
                            .rate_limits
                            .redis_key_prefix
                            .clone()
                            .unwrap_or_else(|| "moongate".to_owned()),
                    })
                }
                Ok(_) => {
                    problems.push(problem(
                        "rate_limits.redis_url",
                        "must be a redis:// or rediss:// URL",
                    ));
                    None
                }
                Err(message) => {
                    problems.push(problem("rate_limits.redis_url", message));
                    None
                }
            },
        };
        let ledger = match &self.ledger.database_url {
            None => LedgerBackend::Sqlite(base_dir.join(&self.ledger.path)),
            Some(reference) => match resolve_secret(reference, base_dir) {
                Ok(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                    LedgerBackend::Postgres {
                        url: Secret::new(url.trim().to_owned()),
                        max_connections: self.ledger.max_connections.unwrap_or(16),
                    }
                }
                Ok(_) => {
                    problems.push(problem(
                        "ledger.database_url",
                        "must be a postgres:// or postgresql:// URL",
                    ));
                    LedgerBackend::Sqlite(base_dir.join(&self.ledger.path))
                }
                Err(message) => {
                    problems.push(problem("ledger.database_url", message));
                    LedgerBackend::Sqlite(base_dir.join(&self.ledger.path))
                }
            },
        };
        let mut merchants = BTreeMap::new();
        for (merchant_id, raw) in &self.merchants {
            let at = format!("merchants.{merchant_id}");
            let mut keys = Vec::new();
            for (index, key) in raw.keys.iter().enumerate() {
                match resolve_secret(&key.secret, base_dir) {
                    Ok(secret) if secret.len() >= 16 => keys.push(MerchantKey {
                        id: key.id.clone(),
                        secret: Secret::new(secret.into_bytes()),
                    }),
                    Ok(_) => problems.push(problem(
                        format!("{at}.keys[{index}].secret"),
                        "must be at least 16 bytes",
                    )),
                    Err(message) => {
                        problems.push(problem(format!("{at}.keys[{index}].secret"), message))
                    }
                }
            }
            let webhook = match &raw.webhook {
                None => None,
                Some(webhook) => {
                    let mut secrets = Vec::new();
                    for (index, secret) in webhook.secrets.iter().enumerate() {
                        match resolve_secret(secret, base_dir) {
                            Ok(value) if value.len() >= 16 => {
                                secrets.push(Secret::new(value.into_bytes()))
                            }
                            Ok(_) => problems.push(problem(
                                format!("{at}.webhook.secrets[{index}]"),
                                "must be at least 16 bytes",
                            )),
                            Err(message) => problems
                                .push(problem(format!("{at}.webhook.secrets[{index}]"), message)),
                        }
                    }
                    Some(Webhook {
                        url: webhook.url.clone(),
                        secrets,
                    })
                }
            };
            let mut accounts = Vec::new();
            for (account_id, account) in &raw.accounts {
                let at = format!("{at}.accounts.{account_id}.settings");
                let Some(kind) = ProviderKind::parse(&account.provider) else {
                    continue;
                };
                match registry::build_adapter(kind, &account.settings, base_dir) {
                    Ok(adapter) => accounts.push(Account {
                        id: account_id.clone(),
                        kind,
                        adapter,
                        limit: account.rate_limit.as_ref().map(|l| Arc::new(Limit::new(l))),
                        circuit: Arc::new(Circuit::new(self.providers.circuit)),
                        fee_rate_ppm: account.fee_rate.as_deref().and_then(parse_fee_rate),
                        state_key: account_state_key(account, self.providers.circuit),
                    }),
                    Err(errors) => {
                        for (key, message) in errors {
                            problems.push(problem(format!("{at}{key}"), message));
                        }
                    }
                }
            }
            let account_ids: Vec<&str> = raw.accounts.keys().map(String::as_str).collect();
            let routes = routing::validate(&raw.routes, &account_ids).unwrap_or_default();
            let capabilities = |id: &str| {
                accounts
                    .iter()
                    .find(|a| a.id == id)
                    .map(|a| a.adapter.capabilities())
            };
            for (key, message) in routing::check_capabilities(&routes, capabilities) {
                problems.push(problem(format!("{at}.{key}"), message));
            }
            merchants.insert(
                merchant_id.clone(),
                Arc::new(Merchant {
                    id: merchant_id.clone(),
                    name: raw.name.clone(),
                    keys,
                    webhook,
                    accounts,
                    routes,
                    limit: Arc::new(Limit::new(
                        &raw.rate_limit.unwrap_or(DEFAULT_MERCHANT_LIMIT),
                    )),
                    limit_key: format!("{:?}", raw.rate_limit),
                }),
            );
        }
        if !problems.is_empty() {
            return Err(ConfigErrors(problems));
        }
        let listen = self
            .server
            .listen
            .parse()
            .map_err(|_| ConfigErrors(vec![problem("server.listen", "invalid address")]))?;
        Ok(Config {
            listen,
            public_base_url: self.server.public_base_url.trim_end_matches('/').to_owned(),
            tls: self
                .server
                .tls
                .as_ref()
                .map(|t| (base_dir.join(&t.cert_file), base_dir.join(&t.key_file))),
            signature_tolerance_secs: self.server.signature_tolerance_secs,
            header_read_timeout_ms: self.server.header_read_timeout_ms,
            admin_listen: self
                .server
                .admin_listen
                .as_ref()
                .and_then(|a| a.parse().ok()),
            ledger,
            reconciliation: ReconciliationSettings {
                statement_dir: match &self.reconciliation.statement_dir {
                    Some(dir) => base_dir.join(dir),
                    None => base_dir
                        .join(&self.ledger.path)
                        .parent()
                        .map(|p| p.join("statements"))
                        .unwrap_or_else(|| PathBuf::from("statements")),
                },
                drift_secs: self.reconciliation.drift_secs,
                daily_at: self
                    .reconciliation
                    .daily_at
                    .as_deref()
                    .and_then(parse_daily_at),
            },
            shared_limits,
            sandbox_wallets: self
                .cashier
                .sandbox_wallets
                .iter()
                .filter_map(|(wallet, url)| Some((ProviderKind::parse(wallet)?, url.clone())))
                .collect(),
            webhooks: self.webhooks.clone(),
            providers: self.providers.clone(),
            merchants,
        })
    }
}

/// Reads a secret: an env variable or a file (relative to `base_dir`), trailing newline trimmed.
/// Errors name the source, never the value.
pub fn resolve_secret(reference: &SecretRef, base_dir: &Path) -> Result<String, String> {
    let value = match reference {
        SecretRef::Env(name) => std::env::var(name)
            .map_err(|_| format!("environment variable {name} is not set or not UTF-8"))?,
        SecretRef::File(path) => {
            let full = base_dir.join(path);
            std::fs::read_to_string(&full)
                .map_err(|e| format!("cannot read {}: {}", full.display(), e.kind()))?
        }
    };
    let trimmed = value.trim_end_matches(['\n', '\r']).to_owned();
    if trimmed.is_empty() {
        return Err(format!("{reference:?} is empty"));
    }
    Ok(trimmed)
}

/// Parses a provider's settings table with its strict struct, keeping the key path of errors.
pub fn parse_settings<T: serde::de::DeserializeOwned>(
    table: &toml::Table,
) -> Result<T, (String, String)> {
    let text = toml::to_string(table).map_err(|e| (String::new(), e.to_string()))?;
    let deserializer =
        toml::Deserializer::parse(&text).map_err(|e| (String::new(), e.message().to_owned()))?;
    serde_path_to_error::deserialize(deserializer).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." {
            String::new()
        } else {
            format!(".{path}")
        };
        (path, e.inner().message().to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
public_base_url = "http://127.0.0.1:8080"

[merchants.shop]
name = "Shop"
keys = [{ id = "shop_k1", secret = { env = "X" } }]
webhook = { url = "http://127.0.0.1:9/hook", secrets = [{ file = "w.secret" }] }

[merchants.shop.accounts.main]
provider = "alipay"
settings = { app_id = "2021000122671080", app_private_key = { file = "k.pem" }, alipay_public_key = { file = "p.pem" } }
"#;

    #[test]
    fn a_good_file_validates() {
        let raw = parse(GOOD).unwrap();
        raw.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_reported_with_their_path() {
        let text = GOOD.replace("name = \"Shop\"", "name = \"Shop\"\ncolour = 1");
        let errors = parse(&text).unwrap_err();
        assert_eq!(errors.0[0].path, "merchants.shop.colour");
        assert!(errors.0[0].message.contains("colour"), "{errors}");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let text = GOOD
            .replace("127.0.0.1:8080\"", "nowhere\"")
            .replace("2021000122671080", "abc")
            .replace("http://127.0.0.1:9/hook", "http://example.com/hook")
            .replace("provider = \"alipay\"", "provider = \"alipay\"\n");
        let errors = parse(&text).unwrap().validate().unwrap_err();
        let paths: Vec<&str> = errors.0.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"server.listen"), "{paths:?}");
        assert!(paths.contains(&"merchants.shop.webhook.url"), "{paths:?}");
        assert!(
            paths.contains(&"merchants.shop.accounts.main.settings.app_id"),
            "{paths:?}"
        );
    }

    #[test]
    fn unknown_settings_keys_and_providers_are_reported() {
        let text = GOOD.replace("app_id =", "appid = \"1\", app_id =");
        let errors = parse(&text).unwrap().validate().unwrap_err();
        assert!(
            errors.0[0]
                .path
                .starts_with("merchants.shop.accounts.main.settings"),
            "{errors}"
        );
        let text = GOOD.replace("provider = \"alipay\"", "provider = \"paypal\"");
        let errors = parse(&text).unwrap().validate().unwrap_err();
        assert_eq!(errors.0[0].path, "merchants.shop.accounts.main.provider");
    }

    /// A folder with the test keys the configs below name (`k.pem`, `p.pem`, `m.pem`), a
    /// webhook secret `w.secret`, and `extra` files.
    fn key_dir(extra: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys");
        for (from, to) in [
            ("nodejs-sdk-app-private-key.pem", "k.pem"),
            ("sandbox-alipay-public-key.pem", "p.pem"),
            ("wechatpay-go-merchant-private-key.pem", "m.pem"),
        ] {
            std::fs::copy(keys.join(from), dir.path().join(to)).unwrap();
        }
        std::fs::write(dir.path().join("w.secret"), "webhook-secret-0123456789").unwrap();
        for (name, value) in extra {
            std::fs::write(dir.path().join(name), value).unwrap();
        }
        dir
    }

    #[test]
    fn a_database_url_selects_postgres_and_stays_secret() {
        let dir = key_dir(&[
            (
                "db.url",
                "postgres://moongate:hunter2@db.internal:5432/ledger\n",
            ),
            ("bad.url", "mysql://moongate:hunter2@db.internal/ledger"),
            ("a.secret", "shop-signing-secret-0123456789"),
        ]);
        let base = GOOD.replace("{ env = \"X\" }", "{ file = \"a.secret\" }");
        let good = format!("{base}\n[ledger]\ndatabase_url = {{ file = \"db.url\" }}\n");
        let config = parse(&good).unwrap().build(dir.path()).unwrap();
        match &config.ledger {
            LedgerBackend::Postgres {
                url,
                max_connections,
            } => {
                assert_eq!(
                    url.expose(),
                    "postgres://moongate:hunter2@db.internal:5432/ledger"
                );
                assert_eq!(*max_connections, 16);
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{:?}", config.ledger).contains("hunter2"));
        let bad = format!(
            "{base}\n[ledger]\ndatabase_url = {{ file = \"bad.url\" }}\nmax_connections = 0\n"
        );
        let errors = parse(&bad).unwrap().build(dir.path()).unwrap_err();
        let text = errors.to_string();
        assert!(text.contains("ledger.max_connections"), "{text}");
        let errors = parse(&bad.replace("max_connections = 0", "max_connections = 4"))
            .unwrap()
            .build(dir.path())
            .unwrap_err();
        assert_eq!(errors.0[0].path, "ledger.database_url");
        assert!(!errors.to_string().contains("hunter2"), "{errors}");
        // Without one, the SQLite file beside the config.
        let config = parse(&base).unwrap().build(dir.path()).unwrap();
        assert!(
            matches!(config.ledger, LedgerBackend::Sqlite(ref p) if p.ends_with("moongate.db"))
        );
    }

    const WECHAT: &str = r#"
[merchants.shop.accounts.wx]
provider = "wechatpay"
[merchants.shop.accounts.wx.settings]
mchid = "1230000109"
appid = "wxd678efh567hg6787"
merchant_serial_no = "F5765756002FDD77"
merchant_private_key = { file = "m.pem" }
apiv3_key = { file = "v3.secret" }
wechatpay_public_key = { file = "p.pem" }
wechatpay_public_key_id = "PUB_KEY_ID_0112300001092026112200000000000001"
"#;

    #[test]
    fn wechatpay_accounts_are_validated_with_key_paths() {
        let good = format!("{GOOD}{WECHAT}");
        parse(&good).unwrap().validate().unwrap();
        let bad = good
            .replace("mchid = \"1230000109\"", "mchid = \"12a\"")
            .replace("PUB_KEY_ID_0112300001092026112200000000000001", "KEY_1")
            .replace("F5765756002FDD77", "not-hex");
        let errors = parse(&bad).unwrap().validate().unwrap_err();
        let paths: Vec<&str> = errors.0.iter().map(|p| p.path.as_str()).collect();
        for key in ["mchid", "wechatpay_public_key_id", "merchant_serial_no"] {
            let path = format!("merchants.shop.accounts.wx.settings.{key}");
            assert!(paths.contains(&path.as_str()), "{key}: {paths:?}");
        }
        // Neither a public key nor a certificate: nothing could verify WeChat Pay's answers.
        let keyless = good
            .replace("wechatpay_public_key = { file = \"p.pem\" }\n", "")
            .replace(
                "wechatpay_public_key_id = \"PUB_KEY_ID_0112300001092026112200000000000001\"\n",
                "",
            );
        let errors = parse(&keyless).unwrap().validate().unwrap_err();
        assert_eq!(
            errors.0[0].path,
            "merchants.shop.accounts.wx.settings.wechatpay_public_key"
        );
        let unknown = good.replace("appid =", "app_id = \"x\"\nappid =");
        let errors = parse(&unknown).unwrap().validate().unwrap_err();
        assert!(errors.0[0].message.contains("app_id"), "{errors}");
    }

    #[test]
    fn a_short_apiv3_key_is_refused_without_showing_it() {
        let dir = key_dir(&[("v3.secret", "tooshort-apiv3")]);
        let good = format!("{GOOD}{WECHAT}").replace("{ env = \"X\" }", "{ file = \"w.secret\" }");
        let errors = parse(&good)
            .unwrap()
            .build(dir.path())
            .unwrap_err()
            .to_string();
        assert!(
            errors.contains(
                "merchants.shop.accounts.wx.settings.apiv3_key: must be exactly 32 bytes"
            ),
            "{errors}"
        );
        assert!(!errors.contains("tooshort"), "{errors}");
    }

    #[test]
    fn routes_to_accounts_that_cannot_serve_fail_the_check_with_their_path() {
        let dir = key_dir(&[("x.secret", "merchant-secret-0123456789")]);
        let text = GOOD.replace("{ env = \"X\" }", "{ file = \"x.secret\" }")
            + r#"
[[merchants.shop.routes]]
name = "wechat-to-alipay"
match = { methods = ["wechat_native"], currencies = ["USD"] }
to = { account = "main" }

[[merchants.shop.routes]]
name = "ghost"
to = { priority = ["main", "missing"] }
"#;
        let errors = parse(&text).unwrap().validate().unwrap_err();
        assert_eq!(errors.0.len(), 1, "{errors}");
        assert_eq!(errors.0[0].path, "merchants.shop.routes[1].to.priority[1]");
        let text = text.replace(", \"missing\"", "");
        let errors = parse(&text).unwrap().build(dir.path()).unwrap_err();
        let rendered = errors.to_string();
        assert!(
            rendered.contains(
                "merchants.shop.routes[0].to.account: account \"main\" cannot serve wechat_native"
            ),
            "{rendered}"
        );
        assert!(
            rendered.contains(
                "merchants.shop.routes[0].to.account: account \"main\" cannot charge USD"
            ),
            "{rendered}"
        );
        let fixed = text.replace(
            "methods = [\"wechat_native\"], currencies = [\"USD\"]",
            "methods = [\"alipay_qr\"]",
        );
        let config = parse(&fixed).unwrap().build(dir.path()).unwrap();
        assert_eq!(config.merchants["shop"].routes.0.len(), 2);
    }

    #[test]
    fn daily_times_are_beijing_hours_and_minutes() {
        assert_eq!(parse_daily_at("10:30"), Some((10, 30)));
        assert_eq!(parse_daily_at("00:00"), Some((0, 0)));
        assert_eq!(parse_daily_at("24:00"), None);
        assert_eq!(parse_daily_at("9:30"), None);
        assert_eq!(parse_daily_at("10:60"), None);
        assert_eq!(parse_daily_at("10.30"), None);
    }

    #[test]
    fn fee_rates_are_percentages() {
        assert_eq!(parse_fee_rate("0.6%"), Some(6000));
        assert_eq!(parse_fee_rate("0.38%"), Some(3800));
        assert_eq!(parse_fee_rate("0.0025%"), Some(25));
        assert_eq!(parse_fee_rate("100%"), Some(1_000_000));
        assert_eq!(parse_fee_rate("0.6"), None);
        assert_eq!(parse_fee_rate("101%"), None);
        assert_eq!(parse_fee_rate("-1%"), None);
        assert_eq!(parse_fee_rate("0.00001%"), None);
    }

    #[test]
    fn rate_limits_are_validated_with_their_paths() {
        let text = GOOD
            .replace(
                "name = \"Shop\"",
                "name = \"Shop\"\nrate_limit = { requests_per_second = 0, burst = 5 }",
            )
            .replace(
                "provider = \"alipay\"",
                "provider = \"alipay\"\nrate_limit = { requests_per_second = 5, burst = 0, max_wait_ms = 90000 }",
            );
        let errors = parse(&text).unwrap().validate().unwrap_err();
        let paths: Vec<&str> = errors.0.iter().map(|p| p.path.as_str()).collect();
        for path in [
            "merchants.shop.rate_limit.requests_per_second",
            "merchants.shop.accounts.main.rate_limit.burst",
            "merchants.shop.accounts.main.rate_limit.max_wait_ms",
        ] {
            assert!(paths.contains(&path), "{path}: {paths:?}");
        }
        let unknown = GOOD.replace(
            "name = \"Shop\"",
            "name = \"Shop\"\nrate_limit = { rps = 5, burst = 5 }",
        );
        let errors = parse(&unknown).unwrap_err();
        assert!(
            errors.0[0].path.starts_with("merchants.shop.rate_limit"),
            "{errors}"
        );
    }

    #[test]
    fn secrets_never_appear_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("w.secret"), "short").unwrap();
        let raw = parse(GOOD).unwrap();
        let errors = raw.build(dir.path()).unwrap_err().to_string();
        assert!(!errors.contains("short"), "{errors}");
        assert!(
            errors.contains("merchants.shop.webhook.secrets[0]"),
            "{errors}"
        );
    }
}
