//! Moongate's clock: the one time every ledger stamp, schedule, lease and claim is taken from.
//!
//! The system clock can step (an NTP correction, an operator, a VM resumed), and instances
//! sharing a database can disagree. Schedules kept in the ledger (webhook retries, janitor
//! checks, leases, deadlines) compare stored stamps with "now", so a step back would leave
//! them waiting for as long as the step, and a step forward would make them due early. So
//! Moongate's time is a monotonic duration added to a base:
//!
//! - **SQLite** (one instance): the base is the system clock at start, never earlier than the
//!   latest time the ledger recorded ([`crate::store::ClockStore::mark_clock`], written by each
//!   janitor pass); from then on only monotonic time passes. A step of the system clock while
//!   Moongate runs changes nothing (it is logged); a step back while it was stopped does not
//!   hold back what was due.
//! - **PostgreSQL** (several instances): the base is the database's clock, read at start and
//!   again at every janitor pass, so every instance keeps the same time whatever its own clock
//!   says, and leases are never taken early by an instance that runs ahead.
//!
//! Times compared with another party's clock stay on the system clock ([`Clock::wall`]): the
//! signature timestamps sent to providers and to webhook receivers, and the window a signed
//! request's timestamp must fall in.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Instant;

use time::OffsetDateTime;

/// Moongate's clock (cheap to clone; clones share one time).
#[derive(Clone, Debug)]
pub struct Clock(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// The monotonic instant the base is counted from.
    origin: Instant,
    /// Moongate's time at `origin`, unix nanoseconds.
    base_ns: AtomicI64,
    /// Added to the system clock by [`Clock::wall`]: zero in service; tests set it to play a
    /// step of the system clock.
    wall_shift_ns: AtomicI64,
}

/// Unix nanoseconds of a time (saturating far outside the years Moongate runs in).
fn nanos(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

fn at(ns: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns)).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn duration_ns(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Clock {
    /// A clock starting at the system clock.
    pub fn system() -> Clock {
        Clock::with_wall_shift(time::Duration::ZERO)
    }

    /// A clock whose system clock reads `shift` off the real one from the start (a test's
    /// machine whose clock is wrong, or a restart after a step).
    pub fn with_wall_shift(shift: time::Duration) -> Clock {
        let shift_ns = i64::try_from(shift.whole_nanoseconds()).unwrap_or(0);
        let origin = Instant::now();
        let base = nanos(OffsetDateTime::now_utc()).saturating_add(shift_ns);
        Clock(Arc::new(Inner {
            origin,
            base_ns: AtomicI64::new(base),
            wall_shift_ns: AtomicI64::new(shift_ns),
        }))
    }

    /// Moongate's time now: for the ledger, schedules and leases.
    pub fn now(&self) -> OffsetDateTime {
        let elapsed = duration_ns(self.0.origin.elapsed());
        at(self
            .0
            .base_ns
            .load(Ordering::Acquire)
            .saturating_add(elapsed))
    }

    /// The system clock: for timestamps another party compares with its own clock.
    pub fn wall(&self) -> OffsetDateTime {
        at(nanos(OffsetDateTime::now_utc())
            .saturating_add(self.0.wall_shift_ns.load(Ordering::Acquire)))
    }

    /// How far the system clock is ahead of Moongate's time (negative when behind).
    pub fn wall_ahead(&self) -> time::Duration {
        self.wall() - self.now()
    }

    /// Steps what [`Clock::wall`] reads by `by`, as a step of the system clock would; Moongate's
    /// time is not moved. For tests.
    pub fn step_wall(&self, by: time::Duration) {
        let by = i64::try_from(by.whole_nanoseconds()).unwrap_or(0);
        self.0.wall_shift_ns.fetch_add(by, Ordering::AcqRel);
    }

    /// Moves Moongate's time forward to `reached` if it is behind it (never back).
    pub fn not_before(&self, reached: OffsetDateTime) {
        let elapsed = duration_ns(self.0.origin.elapsed());
        let base = nanos(reached).saturating_sub(elapsed);
        self.0.base_ns.fetch_max(base, Ordering::AcqRel);
    }

    /// Sets Moongate's time to a reference clock that read `reference` at `read_at`, forward or
    /// back (the database's clock, which every instance follows).
    pub fn follow(&self, reference: OffsetDateTime, read_at: Instant) {
        let since_origin = read_at
            .checked_duration_since(self.0.origin)
            .map(duration_ns)
            .unwrap_or(0);
        self.0.base_ns.store(
            nanos(reference).saturating_sub(since_origin),
            Ordering::Release,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_of_the_system_clock_do_not_move_moongates_time() {
        let clock = Clock::system();
        let before = clock.now();
        clock.step_wall(time::Duration::hours(-1));
        let after_back = clock.now();
        assert!(after_back >= before, "never goes back");
        assert!(after_back - before < time::Duration::seconds(5));
        assert!(clock.wall_ahead() < time::Duration::minutes(-59));
        clock.step_wall(time::Duration::hours(2));
        assert!(clock.now() - before < time::Duration::seconds(5));
        assert!(clock.wall_ahead() > time::Duration::minutes(59));
    }

    #[test]
    fn a_restart_never_starts_before_what_the_ledger_reached() {
        let reached = OffsetDateTime::now_utc() + time::Duration::hours(1);
        // The system clock stepped back an hour while Moongate was stopped.
        let clock = Clock::with_wall_shift(time::Duration::ZERO);
        clock.not_before(reached);
        assert!(clock.now() >= reached);
        // And never moves back for an earlier mark.
        clock.not_before(reached - time::Duration::hours(5));
        assert!(clock.now() >= reached);
    }

    #[test]
    fn instances_following_one_reference_agree_whatever_their_own_clocks() {
        let ahead = Clock::with_wall_shift(time::Duration::hours(1));
        let behind = Clock::with_wall_shift(time::Duration::minutes(-30));
        let reference = OffsetDateTime::now_utc();
        let read_at = Instant::now();
        ahead.follow(reference, read_at);
        behind.follow(reference, read_at);
        let gap = ahead.now() - behind.now();
        assert!(gap.abs() < time::Duration::seconds(1), "{gap}");
        // Following goes back as well as forward.
        assert!((ahead.now() - reference).abs() < time::Duration::seconds(5));
    }
}
