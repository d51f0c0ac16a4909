//! Rate limits on governor's GCRA: per merchant on requests to Moongate, per provider account on
//! calls Moongate makes (protecting the provider's own quotas).
//!
//! A limit is a rate and a burst. Inbound, a request over the limit is refused at once with
//! `429`, `Retry-After` and `RateLimit` headers. Outbound, a call waits for its turn up to a
//! configured bound and is otherwise not sent (and says so): never silently dropped.
//!
//! Limiters are one per merchant and one per account, built from the config, so their number
//! is bounded by the config. The one keyed limiter, [`CodeLimits`] (scans of payment codes), is
//! pruned by the janitor.

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use serde::Deserialize;

/// A limit as written in the config.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    /// Sustained rate.
    pub requests_per_second: u32,
    /// How many may come at once.
    pub burst: u32,
    /// Outbound only: how long a call may wait for its turn, milliseconds (default 1000).
    #[serde(default)]
    pub max_wait_ms: Option<u64>,
}

impl RawLimit {
    /// Pure checks: `(key suffix, message)`.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if self.requests_per_second == 0 {
            problems.push(("requests_per_second", "must be positive".to_owned()));
        }
        if self.burst == 0 {
            problems.push(("burst", "must be positive".to_owned()));
        }
        if self.max_wait_ms.is_some_and(|ms| ms > 60_000) {
            problems.push(("max_wait_ms", "must be at most 60000".to_owned()));
        }
        problems
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, DefaultClock, StateInformationMiddleware>;

/// Scans of each payment code: a scan opens a checkout, so a code (printed, so anyone may
/// hold it) opens at most [`CodeLimits::PER_MINUTE`] a minute, in bursts of
/// [`CodeLimits::BURST`].
pub struct CodeLimits(RateLimiter<String, HashMapStateStore<String>, DefaultClock>);

impl std::fmt::Debug for CodeLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CodeLimits({} codes)", self.0.len())
    }
}

impl Default for CodeLimits {
    fn default() -> CodeLimits {
        let quota = Quota::per_minute(NonZeroU32::new(Self::PER_MINUTE).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(Self::BURST).unwrap_or(NonZeroU32::MIN));
        CodeLimits(RateLimiter::hashmap(quota))
    }
}

impl CodeLimits {
    /// Sustained scans a minute per code.
    pub const PER_MINUTE: u32 = 30;
    /// Scans at once.
    pub const BURST: u32 = 10;

    /// Counts a scan of `code_id`: `Err` with how long to wait when it is over its limit.
    pub fn check(&self, code_id: &str) -> Result<(), Duration> {
        self.0
            .check_key(&code_id.to_owned())
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    /// Forgets codes whose limit is back to full (the janitor, every pass).
    pub fn prune(&self) {
        self.0.retain_recent();
    }
}

/// One GCRA limiter with its quota.
pub struct Limit {
    limiter: Limiter,
    per_second: u32,
    burst: u32,
    window_secs: u64,
    max_wait: Duration,
}

impl std::fmt::Debug for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Limit({}/s, burst {})", self.per_second, self.burst)
    }
}

/// Over the limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    /// When one more request would be allowed.
    pub retry_after: Duration,
}

impl Limit {
    /// Builds a limiter; zero values (refused by validation) are treated as 1.
    pub fn new(raw: &RawLimit) -> Limit {
        let per_second = NonZeroU32::new(raw.requests_per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(raw.burst).unwrap_or(NonZeroU32::MIN);
        Limit::of(
            Quota::per_second(per_second).allow_burst(burst),
            per_second.get(),
            Duration::from_millis(raw.max_wait_ms.unwrap_or(1_000)),
        )
    }

    /// A slow limit: one more every `period`, `burst` at once (inbound only; its
    /// [`Limit::per_second`] is 0).
    pub fn every(period: Duration, burst: u32) -> Limit {
        let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Limit::of(quota, 0, Duration::ZERO)
    }

    fn of(quota: Quota, per_second: u32, max_wait: Duration) -> Limit {
        let burst = quota.burst_size().get();
        // The time a full burst takes to refill, in whole seconds (at least one).
        let refill = quota.replenish_interval().as_nanos() * u128::from(burst);
        let window_secs = u64::try_from(refill.div_ceil(1_000_000_000))
            .unwrap_or(u64::MAX)
            .max(1);
        Limit {
            limiter: RateLimiter::direct(quota).with_middleware::<StateInformationMiddleware>(),
            per_second,
            burst,
            window_secs,
            max_wait,
        }
    }

    /// Sustained rate per second.
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Burst.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Takes one request now: `Ok(remaining burst)` or how long until it would pass.
    pub fn check(&self) -> Result<u32, Limited> {
        match self.limiter.check() {
            Ok(snapshot) => Ok(snapshot.remaining_burst_capacity()),
            Err(not_until) => Err(Limited {
                retry_after: not_until.wait_time_from(self.limiter.clock().now()),
            }),
        }
    }

    /// Waits for a turn, up to the configured bound; `Err` when the turn is further away.
    pub async fn acquire(&self) -> Result<(), Limited> {
        let deadline = tokio::time::Instant::now() + self.max_wait;
        loop {
            match self.check() {
                Ok(_) => return Ok(()),
                Err(limited) => {
                    let wake = tokio::time::Instant::now() + limited.retry_after;
                    if wake > deadline {
                        return Err(limited);
                    }
                    tokio::time::sleep_until(wake).await;
                }
            }
        }
    }

    /// The draft-ietf-httpapi-ratelimit-headers policy: `"<name>";q=<burst>;w=<seconds to refill>`.
    pub fn policy_header(&self, name: &str) -> String {
        format!("\"{name}\";q={};w={}", self.burst, self.window_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: u32, burst: u32, max_wait_ms: Option<u64>) -> Limit {
        Limit::new(&RawLimit {
            requests_per_second: per_second,
            burst,
            max_wait_ms,
        })
    }

    #[test]
    fn a_burst_passes_then_the_next_is_told_when_to_retry() {
        let l = limit(1, 3, None);
        assert_eq!(l.check(), Ok(2));
        assert_eq!(l.check(), Ok(1));
        assert_eq!(l.check(), Ok(0));
        let limited = l.check().unwrap_err();
        assert!(
            limited.retry_after > Duration::from_millis(900),
            "{limited:?}"
        );
        assert!(limited.retry_after <= Duration::from_secs(1), "{limited:?}");
        assert_eq!(l.policy_header("merchant"), "\"merchant\";q=3;w=3");
    }

    #[test]
    fn a_slow_limit_refills_one_per_period() {
        let l = Limit::every(Duration::from_secs(6), 2);
        assert_eq!(l.check(), Ok(1));
        assert_eq!(l.check(), Ok(0));
        let limited = l.check().unwrap_err();
        assert!(limited.retry_after > Duration::from_secs(5), "{limited:?}");
        assert!(limited.retry_after <= Duration::from_secs(6), "{limited:?}");
        assert_eq!(
            l.policy_header("reconciliations"),
            "\"reconciliations\";q=2;w=12"
        );
    }

    #[tokio::test]
    async fn outbound_waits_within_its_bound_and_refuses_beyond() {
        let l = limit(20, 1, Some(200));
        l.acquire().await.unwrap();
        // The next turn is 50 ms away: waited for.
        let started = tokio::time::Instant::now();
        l.acquire().await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(30));
        let strict = limit(1, 1, Some(100));
        strict.acquire().await.unwrap();
        // The next turn is a second away, beyond the 100 ms bound: refused, with the wait.
        let refused = strict.acquire().await.unwrap_err();
        assert!(
            refused.retry_after > Duration::from_millis(100),
            "{refused:?}"
        );
    }
}
