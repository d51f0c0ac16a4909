//! Merchant rate limits shared by every Moongate instance, through Redis.
//!
//! The same GCRA as governor's, run as one Lua script inside Redis on the **Redis server's
//! clock** (`TIME`), so instances with skewed clocks agree: a key holds the merchant's
//! theoretical arrival time (TAT) in microseconds; a request is allowed when `TAT + interval -
//! burst × interval <= now`, which lets `burst` requests through at once and then one per
//! interval. It sits in front of the local governor limiter: Redis decides first, the local
//! limiter still counts (it never binds tighter, since it sees a subset of what Redis allowed)
//! and takes over alone whenever Redis cannot answer within `redis_timeout_ms`. Moongate then
//! keeps serving with per-instance limits and says so in the log (at most every 10 s) and in
//! `moongate_shared_limit_checks_total{outcome="unavailable"}` / `moongate_shared_limit_up`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

/// The GCRA script. KEYS[1]: the limit's key. ARGV[1]: emission interval (µs). ARGV[2]: burst.
/// Returns `{1, 0}` when allowed, `{0, µs until allowed}` when not.
const GCRA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if allow_at > now then
  return {0, allow_at - now}
end
redis.call('SET', KEYS[1], new_tat, 'PX', math.ceil((new_tat - now) / 1000) + 1000)
return {1, 0}
";

/// Redis's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SharedDecision {
    /// Within the shared limit.
    Allowed,
    /// Over it; one more request would pass after this long.
    Limited(Duration),
    /// Redis did not answer in time or failed: the local limiter decides alone.
    Unavailable(String),
}

/// One connection (re-established on demand) to the Redis holding the shared limits.
pub struct SharedLimiter {
    client: redis::Client,
    script: redis::Script,
    timeout: Duration,
    prefix: String,
    conn: tokio::sync::Mutex<Option<ConnectionManager>>,
    /// When a connection was last attempted (so a dead Redis costs one attempt a second).
    last_connect: Mutex<Option<Instant>>,
    /// When the last "Redis unavailable" warning was logged.
    last_warning: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for SharedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("SharedLimiter")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SharedLimiter {
    /// A limiter on the Redis at `url` (nothing is connected yet).
    pub fn new(url: &str, timeout: Duration, prefix: &str) -> Result<SharedLimiter, String> {
        let client =
            redis::Client::open(url).map_err(|e| format!("redis URL: {}", e.category()))?;
        Ok(SharedLimiter {
            client,
            script: redis::Script::new(GCRA),
            timeout,
            prefix: prefix.to_owned(),
            conn: tokio::sync::Mutex::new(None),
            last_connect: Mutex::new(None),
            last_warning: Mutex::new(None),
        })
    }

    async fn connection(&self) -> Result<ConnectionManager, String> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        {
            let mut last = self
                .last_connect
                .lock()
                .map_err(|_| "limiter lock poisoned".to_owned())?;
            if last.is_some_and(|at| at.elapsed() < Duration::from_secs(1)) {
                return Err("not connected (next attempt within a second)".to_owned());
            }
            *last = Some(Instant::now());
        }
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            self.timeout * 2,
            self.client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| format!("connect: {}", e.category()))?;
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Checks one request against the shared limit `key` (`per_second`, `burst`).
    pub async fn check(&self, key: &str, per_second: u32, burst: u32) -> SharedDecision {
        let interval_us = 1_000_000 / u64::from(per_second.max(1));
        let mut conn = match self.connection().await {
            Ok(conn) => conn,
            Err(reason) => return self.unavailable(reason),
        };
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("{}:rl:{key}", self.prefix))
            .arg(interval_us)
            .arg(burst.max(1));
        let call = invocation.invoke_async::<(i64, i64)>(&mut conn);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok((1, _))) => SharedDecision::Allowed,
            Ok(Ok((_, wait_us))) => {
                SharedDecision::Limited(Duration::from_micros(u64::try_from(wait_us).unwrap_or(0)))
            }
            Ok(Err(error)) => self.unavailable(format!("script: {}", error.category())),
            Err(_) => self.unavailable("no answer in time".to_owned()),
        }
    }

    fn unavailable(&self, reason: String) -> SharedDecision {
        if let Ok(mut last) = self.last_warning.lock()
            && !last.is_some_and(|at| at.elapsed() < Duration::from_secs(10))
        {
            *last = Some(Instant::now());
            tracing::warn!(
                %reason,
                "Redis unavailable: merchant rate limits are enforced per instance only"
            );
        }
        SharedDecision::Unavailable(reason)
    }
}
