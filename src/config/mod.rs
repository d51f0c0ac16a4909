//! The merchant config file: TOML, parsed strictly, validated as a whole, then built.
//!
//! Three stages, as in Vector and linkerd: [`parse`] (syntax and unknown keys, first error with
//! its key path), [`RawConfig::validate`] (pure checks, *every* problem with its key path) and
//! [`RawConfig::build`] (I/O: read secrets and keys). Secrets are never inline: each is a
//! [`SecretRef`] to an env variable or a file, resolved into a redacting [`Secret`].

mod build;
mod runtime;
#[cfg(test)]
mod tests;
mod validate;

pub use build::{parse_settings, resolve_secret, resolve_secret_bytes};
pub use runtime::{
    Account, Config, ManagedAuthorisation, Merchant, MerchantFiles, MerchantKey, Webhook,
};

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use moongate_contract::{Authorising, PaymentAdapter, ProviderKind, Secret, SecretRef, TokenSlot};
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
    /// Service-provider credential sets (服务商 / ISV) by id, which sub-merchant accounts name.
    #[serde(default)]
    pub partners: BTreeMap<String, RawPartner>,
    /// Merchants by id.
    #[serde(default)]
    pub merchants: BTreeMap<String, RawMerchant>,
    /// A folder (relative to the config file) of more merchants, one file per merchant:
    /// `<merchant id>.toml` holding what `[merchants.<id>]` would. Read by [`load`], beside the
    /// merchants of the file itself (an id in both is refused).
    #[serde(default)]
    pub merchants_dir: Option<String>,
}

/// `[partners.<id>]`: one service-provider contract, declared once. Its `settings` are the
/// provider's own (an Alipay ISV app: its `app_id` and keys, in either mode); each account that
/// names it signs its calls with them and carries its own sub-merchant identity.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPartner {
    /// Provider kind, e.g. `alipay`.
    pub provider: String,
    /// The provider's settings for the service provider's own credentials.
    pub settings: toml::Table,
    /// Calls to the provider under these credentials, all sub-merchants together (default:
    /// none; each account's own `rate_limit` still applies to it).
    #[serde(default)]
    pub rate_limit: Option<RawLimit>,
    /// The breaker of the partner's calls (default: `[providers.circuit]`): open, it stops
    /// every sub-merchant's calls; only failures whose fate is unknown (transport, timeouts,
    /// 5xx, garbage) count, never a provider's refusal of one sub-merchant.
    #[serde(default)]
    pub circuit: Option<CircuitSettings>,
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
    /// Lets `admin_listen` be an address other machines can reach (default false: the admin
    /// endpoints have no authentication, so only a loopback address is accepted).
    #[serde(default)]
    pub admin_allow_remote: bool,
    /// A bearer token every admin request but `/healthz` must carry (`Authorization: Bearer
    /// …`), from a file or the environment; required with `admin_allow_remote`.
    #[serde(default)]
    pub admin_token: Option<SecretRef>,
    /// The key cashier links are derived from (at least 32 bytes, from a file or the
    /// environment; see `cashier::key`). Default with an SQLite ledger: a file beside it,
    /// created on first start; required with PostgreSQL (every instance must share it).
    /// Changing it changes the links of open checkouts: links already handed out keep
    /// working, the API shows new ones that do not.
    #[serde(default)]
    pub cashier_key: Option<SecretRef>,
    /// How long a client may take to send a request's headers (and a TLS handshake),
    /// milliseconds (default 10000): slow clients do not hold connections.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_ms: u64,
    /// How long a client may take to send a request's body once its headers are in,
    /// milliseconds (default 10000); slower bodies are answered `408 body_timeout` and the
    /// connection is closed.
    #[serde(default = "default_header_timeout")]
    pub body_read_timeout_ms: u64,
    /// Most client connections served at once (default 1024); further connections wait in the
    /// listen queue until one closes. A restart applies a change.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Reverse proxies (addresses or ranges like `10.0.0.0/8`) whose `X-Forwarded-For` names
    /// the client (default none: the connection's address is the client's).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

fn default_header_timeout() -> u64 {
    10_000
}

fn default_max_connections() -> usize {
    1024
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
    /// Hosts a payment's or checkout's `return_url` and `cancel_url` may point at (exact host
    /// names, e.g. `shop.example`); empty: any https (or loopback http) URL.
    #[serde(default)]
    pub return_hosts: Vec<String>,
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
    /// Provider-specific settings, parsed by the provider's own strict struct; for an account
    /// under a partner, its sub-merchant identity (Alipay: `auth_app_id`, `app_auth_token`).
    pub settings: toml::Table,
    /// The partner (`[partners.<id>]`) whose credentials sign this account's calls.
    #[serde(default)]
    pub partner: Option<String>,
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

/// `line L, column C` of a byte offset in `text` (1-based).
fn position(text: &str, offset: usize) -> String {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("line {line}, column {column}")
}

/// Parses TOML text. A syntax error comes back with its line and column; unknown keys all
/// come back at once, each with its key path (the file is read again without each one found,
/// so one run lists them all), together with the first other problem of the same kind.
pub fn parse(text: &str) -> Result<RawConfig, ConfigErrors> {
    let table =
        toml_table(text).map_err(|message| ConfigErrors(vec![problem("(file)", message)]))?;
    parse_all(table).map_err(|(problems, _)| ConfigErrors(problems))
}

/// TOML text as a table; a syntax error with its line and column.
fn toml_table(text: &str) -> Result<toml::Table, String> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let at = e
            .span()
            .map(|s| position(text, s.start))
            .unwrap_or_default();
        if at.is_empty() {
            e.message().to_owned()
        } else {
            format!("{at}: {}", e.message())
        }
    })
}

/// Reads a config file as one table: the file, and the merchants of its `merchants_dir`
/// (each `<id>.toml` as `merchants.<id>`, in name order). A file that does not read is a
/// problem at its merchant's path; so is an id declared twice or a file name that is not an id.
fn read_tables(path: &Path) -> Result<toml::Table, ConfigErrors> {
    let tables = read_all(path)?;
    if tables.file_problems.is_empty() {
        Ok(tables.table)
    } else {
        Err(ConfigErrors(tables.file_problems))
    }
}

/// The config file with its `merchants_dir` files merged in as `merchants.<id>`.
struct Tables {
    table: toml::Table,
    /// The text of each merchant file that read, by merchant id.
    files: MerchantFiles,
    /// Files that did not read (or clash), each at `merchants.<id>` or at `merchants_dir`;
    /// their merchants are not in `table`.
    file_problems: Vec<ConfigProblem>,
}

fn read_all(path: &Path) -> Result<Tables, ConfigErrors> {
    let mut table = toml_table(&read(path)?)
        .map_err(|message| ConfigErrors(vec![problem("(file)", message)]))?;
    let Some(dir) = merchants_dir(path, &table) else {
        return Ok(Tables {
            table,
            files: MerchantFiles::default(),
            file_problems: Vec::new(),
        });
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| {
            ConfigErrors(vec![problem(
                "merchants_dir",
                format!("{}: {e}", dir.display()),
            )])
        })?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    let mut problems = Vec::new();
    let mut found = toml::Table::new();
    let mut texts = MerchantFiles::default();
    for file in files {
        let id = file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_owned();
        let at = format!("merchants.{id}");
        if !validate::is_identifier(&id) {
            problems.push(problem(
                "merchants_dir",
                format!(
                    "{}: a merchant file is named by its id (letters, digits, _ and -)",
                    file.display()
                ),
            ));
            continue;
        }
        let declared = table
            .get("merchants")
            .and_then(toml::Value::as_table)
            .is_some_and(|m| m.contains_key(&id));
        if declared {
            problems.push(problem(
                &at,
                format!("declared in the config file and in {}", file.display()),
            ));
            continue;
        }
        let read = std::fs::read_to_string(&file).map_err(|e| e.to_string());
        match read.and_then(|text| toml_table(&text).map(|merchant| (text, merchant))) {
            Ok((text, merchant)) => {
                texts.push(&id, &text);
                found.insert(id, toml::Value::Table(merchant));
            }
            Err(message) => problems.push(problem(&at, format!("{}: {message}", file.display()))),
        }
    }
    let merchants = table
        .entry("merchants")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(merchants) = merchants {
        merchants.extend(found);
    }
    Ok(Tables {
        table,
        files: texts,
        file_problems: problems,
    })
}

/// The `merchants_dir` of the config file at `path` (whose table is `table`), resolved against
/// the file's folder.
pub fn merchants_dir(path: &Path, table: &toml::Table) -> Option<PathBuf> {
    let dir = table.get("merchants_dir")?.as_str()?;
    Some(path.parent().unwrap_or(Path::new("")).join(dir))
}

/// Parses, collecting every unknown key; `Err` also carries the config read without them
/// (when the rest of it reads), so its values can still be checked.
fn parse_all(
    mut table: toml::Table,
) -> Result<RawConfig, (Vec<ConfigProblem>, Option<Box<RawConfig>>)> {
    let mut unknown = Vec::new();
    // Bounded: each pass removes one key.
    for _ in 0..256 {
        let value = toml::Value::Table(table.clone());
        match serde_path_to_error::deserialize::<_, RawConfig>(value) {
            Ok(raw) => {
                return if unknown.is_empty() {
                    Ok(raw)
                } else {
                    Err((unknown, Some(Box::new(raw))))
                };
            }
            Err(e) => {
                let path = e.path().to_string();
                let message = e.inner().message().to_owned();
                let shown = if path == "." {
                    "(root)".to_owned()
                } else {
                    path.clone()
                };
                let is_unknown = message.starts_with("unknown field");
                unknown.push(problem(shown, message.clone()));
                if !is_unknown || !remove_key(&mut table, &path, &message) {
                    return Err((unknown, None));
                }
            }
        }
    }
    Err((unknown, None))
}

/// Removes the unknown key named in `message` (``unknown field `x`, …``) from the table at
/// `path` (`a.b` or `a.b[2]`); false when it cannot be found.
fn remove_key(table: &mut toml::Table, path: &str, message: &str) -> bool {
    let Some(field) = message.split('`').nth(1) else {
        return false;
    };
    // serde_path_to_error's path ends with the unknown field itself.
    let parent: Vec<&str> = match path.rsplit_once('.') {
        Some((parent, last)) if last == field => parent.split('.').collect(),
        None if path == field => Vec::new(),
        _ => path.split('.').collect(),
    };
    let mut current = table;
    for segment in parent {
        let (name, index) = match segment.split_once('[') {
            Some((name, rest)) => (name, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (segment, None),
        };
        let next = match current.get_mut(name) {
            Some(toml::Value::Table(t)) if index.is_none() => t,
            Some(toml::Value::Array(items)) => match index.and_then(|i| items.get_mut(i)) {
                Some(toml::Value::Table(t)) => t,
                _ => return false,
            },
            _ => return false,
        };
        current = next;
    }
    current.remove(field).is_some()
}

/// Reads and parses a file (and its `merchants_dir`).
pub fn load(path: &Path) -> Result<RawConfig, ConfigErrors> {
    parse_all(read_tables(path)?).map_err(|(problems, _)| ConfigErrors(problems))
}

fn read(path: &Path) -> Result<String, ConfigErrors> {
    std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![problem("(file)", format!("{}: {e}", path.display()))]))
}

/// Reads, parses and builds a file, reporting in one run every unknown key and every problem
/// of the values (as far as the file reads), each with its key path.
pub fn load_and_build(path: &Path) -> Result<Config, ConfigErrors> {
    let tables = read_all(path)?;
    if !tables.file_problems.is_empty() {
        return Err(ConfigErrors(tables.file_problems));
    }
    let mut config = build_table(path, tables.table)?;
    config.merchant_files = tables.files;
    Ok(config)
}

fn build_table(path: &Path, table: toml::Table) -> Result<Config, ConfigErrors> {
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    match parse_all(table) {
        Ok(raw) => raw.build(&base),
        Err((mut problems, Some(raw))) => {
            if let Err(ConfigErrors(more)) = raw.build(&base) {
                problems.extend(more);
            }
            Err(ConfigErrors(problems))
        }
        Err((problems, None)) => Err(ConfigErrors(problems)),
    }
}

/// The merchant a problem is about (`merchants.<id>…`).
fn file_merchant(problem: &ConfigProblem) -> Option<&str> {
    problem
        .path
        .strip_prefix("merchants.")?
        .split(['.', '['])
        .next()
}

/// A reload that takes `merchants_dir` files one by one: when only some merchant files are at
/// fault (they do not read, or their merchants do not validate or build), those merchants keep
/// serving as `old` declared them (or stay out, if new) and the rest of the config applies.
/// `Ok` carries the problems of the files refused; `Err` every problem, when anything else is
/// at fault.
pub fn reload_build(
    path: &Path,
    old: &Config,
) -> Result<(Config, Vec<ConfigProblem>), ConfigErrors> {
    let Tables {
        table,
        files,
        file_problems,
    } = read_all(path)?;
    let mut refused = file_problems;
    // The files that read, as they are (the others' merchants left out). The table is not
    // kept for a second try (10,000 merchants' tables are worth not copying): a second try
    // reads the files again.
    let problems = match build_table(path, table) {
        Ok(mut config) if refused.is_empty() => {
            config.merchant_files = files;
            return Ok((config, Vec::new()));
        }
        Ok(_) => Vec::new(),
        Err(ConfigErrors(problems)) => problems,
    };
    let mut known: BTreeSet<String> = files.iter().map(|(id, _)| id.to_owned()).collect();
    drop(files);
    // Every problem must be a merchant file's (its merchants, or the files that did not read).
    let mut bad: BTreeSet<String> = BTreeSet::new();
    for p in &refused {
        if let Some(id) = file_merchant(p) {
            bad.insert(id.to_owned());
            known.insert(id.to_owned());
        } else {
            return Err(ConfigErrors([refused, problems].concat()));
        }
    }
    for p in &problems {
        match file_merchant(p).filter(|id| known.contains(*id)) {
            Some(id) => {
                bad.insert(id.to_owned());
            }
            None => return Err(ConfigErrors([refused, problems].concat())),
        }
    }
    refused.extend(problems);
    let Tables {
        mut table,
        files: read_files,
        file_problems,
    } = read_all(path)?;
    // A file that stopped reading since is left out too.
    bad.extend(
        file_problems
            .iter()
            .filter_map(file_merchant)
            .map(str::to_owned),
    );
    let mut files = MerchantFiles::default();
    for (id, text) in read_files.iter() {
        if !bad.contains(id) {
            files.push(id, text);
        }
    }
    if let Some(toml::Value::Table(merchants)) = table.get_mut("merchants") {
        for id in &bad {
            merchants.remove(id);
            // The version in force, as it was read.
            if let Some(text) = old.merchant_files.get(id)
                && let Ok(previous) = toml_table(text)
            {
                merchants.insert(id.clone(), toml::Value::Table(previous));
                files.push(id, text);
            }
        }
    }
    match build_table(path, table) {
        Ok(mut config) => {
            config.merchant_files = files;
            Ok((config, refused))
        }
        Err(ConfigErrors(more)) => Err(ConfigErrors([refused, more].concat())),
    }
}
