//! Per-account circuit breakers: an account whose calls fail too often is given a rest, so
//! payments go to the next account of a priority list instead of waiting on a sick provider.
//!
//! Closed: calls flow; outcomes are kept for a window. When at least `min_calls` outcomes are
//! in the window and `error_percent` of them are failures (the call's fate unknown or unusable:
//! transport errors, timeouts, 5xx, garbage), the circuit opens for `open_ms`: calls are not
//! sent. Then one probe is let through (half-open): success closes the circuit, failure opens it
//! again. A provider's definite refusal (bad parameter, decline) is a healthy provider.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// `[providers.circuit]`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CircuitSettings {
    /// Failure share that opens the circuit, percent (default 50).
    #[serde(default = "default_percent")]
    pub error_percent: u32,
    /// Outcomes needed in the window before the share counts (default 10).
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    /// Window, milliseconds (default 30000).
    #[serde(default = "default_window")]
    pub window_ms: u64,
    /// Rest before a probe, milliseconds (default 15000).
    #[serde(default = "default_open")]
    pub open_ms: u64,
}

fn default_percent() -> u32 {
    50
}
fn default_min_calls() -> u32 {
    10
}
fn default_window() -> u64 {
    30_000
}
fn default_open() -> u64 {
    15_000
}

impl Default for CircuitSettings {
    fn default() -> Self {
        CircuitSettings {
            error_percent: default_percent(),
            min_calls: default_min_calls(),
            window_ms: default_window(),
            open_ms: default_open(),
        }
    }
}

impl CircuitSettings {
    /// Pure checks: `(key, message)`.
    pub fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if !(1..=100).contains(&self.error_percent) {
            problems.push(("error_percent", "must be 1 to 100".to_owned()));
        }
        if self.min_calls == 0 {
            problems.push(("min_calls", "must be positive".to_owned()));
        }
        if self.window_ms == 0 || self.open_ms == 0 {
            problems.push((
                "window_ms",
                "window_ms and open_ms must be positive".to_owned(),
            ));
        }
        problems
    }
}

/// How a call was let through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    /// The circuit is closed.
    Flow,
    /// The one probe of a half-open circuit.
    Probe,
}

/// Where a circuit stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// One probe may go.
    HalfOpen,
    /// Resting; calls are not sent.
    Open,
}

impl CircuitState {
    /// Stable name.
    pub fn as_str(&self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::HalfOpen => "half_open",
            CircuitState::Open => "open",
        }
    }
}

#[derive(Debug)]
enum Inner {
    Closed { outcomes: Outcomes },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// The outcomes of a closed circuit's window, oldest first, with their failures counted as they
/// come and go (a call's bookkeeping costs the same however many calls the window holds).
#[derive(Debug, Default)]
struct Outcomes {
    window: VecDeque<(Instant, bool)>,
    failures: usize,
}

impl Outcomes {
    /// Adds one outcome and drops those older than `window` before `now`.
    fn push(&mut self, now: Instant, success: bool, window: Duration) {
        self.window.push_back((now, success));
        self.failures += usize::from(!success);
        while let Some(&(at, ok)) = self.window.front() {
            if now.saturating_duration_since(at) <= window {
                break;
            }
            self.window.pop_front();
            self.failures -= usize::from(!ok);
        }
    }
}

/// One account's breaker.
#[derive(Debug)]
pub struct Circuit {
    settings: CircuitSettings,
    inner: Mutex<Inner>,
}

impl Circuit {
    /// A closed circuit.
    pub fn new(settings: CircuitSettings) -> Circuit {
        Circuit {
            settings,
            inner: Mutex::new(Inner::Closed {
                outcomes: Outcomes::default(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The state now (an open circuit whose rest is over reads as half-open).
    pub fn state(&self, now: Instant) -> CircuitState {
        match &*self.lock() {
            Inner::Closed { .. } => CircuitState::Closed,
            Inner::Open { until } if now >= *until => CircuitState::HalfOpen,
            Inner::Open { .. } => CircuitState::Open,
            Inner::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }

    /// May a call be sent now? In half-open, only one probe at a time.
    pub fn allow(&self, now: Instant) -> bool {
        self.pass(now).is_some()
    }

    /// [`Circuit::allow`], saying whether the call is the half-open probe: a caller that is
    /// let through but then does not send (another breaker on its way refused it) hands the
    /// probe back with [`Circuit::unused`].
    pub fn pass(&self, now: Instant) -> Option<Pass> {
        let mut inner = self.lock();
        match &mut *inner {
            Inner::Closed { .. } => Some(Pass::Flow),
            Inner::Open { until } if now >= *until => {
                *inner = Inner::HalfOpen { probing: true };
                Some(Pass::Probe)
            }
            Inner::Open { .. } => None,
            Inner::HalfOpen { probing } if !*probing => {
                *probing = true;
                Some(Pass::Probe)
            }
            Inner::HalfOpen { .. } => None,
        }
    }

    /// A pass that was not used: a probe may go again.
    pub fn unused(&self, pass: Pass) {
        if pass == Pass::Probe
            && let Inner::HalfOpen { probing } = &mut *self.lock()
        {
            *probing = false;
        }
    }

    /// Records the outcome of a call that was sent.
    pub fn record(&self, now: Instant, success: bool) {
        let settings = self.settings;
        let mut inner = self.lock();
        match &mut *inner {
            Inner::Closed { outcomes } => {
                outcomes.push(now, success, Duration::from_millis(settings.window_ms));
                let (calls, failures) = (outcomes.window.len(), outcomes.failures);
                let over = calls >= settings.min_calls as usize
                    && failures * 100 >= calls * settings.error_percent as usize;
                if over {
                    *inner = Inner::Open {
                        until: now + Duration::from_millis(settings.open_ms),
                    };
                }
            }
            Inner::HalfOpen { .. } => {
                *inner = if success {
                    Inner::Closed {
                        outcomes: Outcomes::default(),
                    }
                } else {
                    Inner::Open {
                        until: now + Duration::from_millis(settings.open_ms),
                    }
                };
            }
            // A call sent before the circuit opened: its outcome changes nothing.
            Inner::Open { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit() -> Circuit {
        Circuit::new(CircuitSettings {
            error_percent: 50,
            min_calls: 4,
            window_ms: 10_000,
            open_ms: 5_000,
        })
    }

    #[test]
    fn opens_on_failures_rests_probes_and_recovers() {
        let c = circuit();
        let t0 = Instant::now();
        // Three failures are not enough calls yet.
        for i in 0..3 {
            assert!(c.allow(t0));
            c.record(t0 + Duration::from_millis(i), false);
        }
        assert_eq!(c.state(t0), CircuitState::Closed);
        c.record(t0 + Duration::from_millis(4), true);
        // 3 of 4 failed: open.
        assert_eq!(c.state(t0 + Duration::from_millis(5)), CircuitState::Open);
        assert!(!c.allow(t0 + Duration::from_secs(1)));
        // After the rest, one probe; others wait for it.
        let later = t0 + Duration::from_secs(6);
        assert_eq!(c.state(later), CircuitState::HalfOpen);
        assert!(c.allow(later));
        assert!(!c.allow(later));
        // The probe fails: open again.
        c.record(later, false);
        assert_eq!(c.state(later), CircuitState::Open);
        // Next probe succeeds: closed.
        let later = later + Duration::from_secs(6);
        assert!(c.allow(later));
        c.record(later, true);
        assert_eq!(c.state(later), CircuitState::Closed);
        assert!(c.allow(later));
    }

    #[test]
    fn an_unused_probe_is_handed_back() {
        let c = circuit();
        let t0 = Instant::now();
        for i in 0..4 {
            c.record(t0 + Duration::from_millis(i), false);
        }
        let later = t0 + Duration::from_secs(6);
        assert_eq!(c.pass(later), Some(Pass::Probe));
        assert_eq!(c.pass(later), None);
        c.unused(Pass::Probe);
        assert_eq!(c.pass(later), Some(Pass::Probe));
        // A closed circuit's pass changes nothing when unused.
        c.record(later, true);
        assert_eq!(c.pass(later), Some(Pass::Flow));
        c.unused(Pass::Flow);
        assert_eq!(c.state(later), CircuitState::Closed);
    }

    #[test]
    fn old_outcomes_leave_the_window_and_successes_keep_it_closed() {
        let c = circuit();
        let t0 = Instant::now();
        for i in 0..3 {
            c.record(t0 + Duration::from_millis(i), false);
        }
        // Eleven seconds later the old failures no longer count.
        let later = t0 + Duration::from_secs(11);
        c.record(later, false);
        assert_eq!(c.state(later), CircuitState::Closed);
        for i in 0..10 {
            c.record(later + Duration::from_millis(i), true);
        }
        c.record(later + Duration::from_millis(20), false);
        assert_eq!(
            c.state(later + Duration::from_millis(21)),
            CircuitState::Closed
        );
    }

    #[test]
    fn only_the_failures_still_in_the_window_count() {
        let c = circuit();
        let t0 = Instant::now();
        // Three failures in seven calls: never half.
        for (i, ok) in [true, true, false, true, false, true, false]
            .into_iter()
            .enumerate()
        {
            c.record(t0 + Duration::from_millis(i as u64), ok);
        }
        assert_eq!(c.state(t0 + Duration::from_millis(8)), CircuitState::Closed);
        // Eleven seconds later: one failure in four calls (the seven before have left).
        let later = t0 + Duration::from_secs(11);
        c.record(later, false);
        for i in 1..4 {
            c.record(later + Duration::from_millis(i), true);
        }
        assert_eq!(
            c.state(later + Duration::from_millis(5)),
            CircuitState::Closed
        );
        // One more failure: two of five, still under half; a third: three of six, half.
        c.record(later + Duration::from_millis(6), false);
        assert_eq!(
            c.state(later + Duration::from_millis(7)),
            CircuitState::Closed
        );
        c.record(later + Duration::from_millis(8), false);
        assert_eq!(
            c.state(later + Duration::from_millis(9)),
            CircuitState::Open
        );
    }
}
