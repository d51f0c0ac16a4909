//! Group commit: one thread owns the write connection and commits the writes of concurrent
//! requests together, one transaction and one fsync for all of them; reads use connections of
//! their own (WAL lets them read the last commit while the writer works) and never wait for an
//! fsync.
//!
//! Each write is a job: a closure over the connection, run inside the batch's transaction in a
//! savepoint of its own, so a job that fails (or panics) is rolled back alone and the others
//! still commit. A job's caller is answered only after the `COMMIT` that holds its writes has
//! returned (with `synchronous=FULL`, after the fsync): no answer leaves before its write is
//! durable, and when the commit fails every job of the batch gets the error.
//!
//! A batch of write-ahead jobs only (a read's nonce, a provider attempt's log line) waits up to
//! [`LINGER`] for a durable write to commit with: the write a request makes next (its status
//! change after its attempt) then shares that commit. A create is three jobs in two commits:
//! its claim with its nonce and payment, its attempt (queued, not awaited), its status change
//! with its stored answer.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use rusqlite::Connection;

use super::db;
use crate::store::StoreError;

/// Jobs taken into one transaction at most (a bound on how long one commit holds others).
const MAX_BATCH: usize = 256;

/// How long a batch of write-ahead jobs only stays open for a durable write to join it. Longer
/// than a create takes from its nonce to its payment (validation and one RSA signature, about
/// a millisecond) or from a provider's answer to its status change; short enough that what a
/// crash in that window loses is only the write-ahead jobs themselves (a GET's nonce, an attempt
/// log line), never anything answered as durable.
const LINGER: std::time::Duration = std::time::Duration::from_millis(10);

/// What a job leaves for after the commit: sends the caller its result.
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

/// One write: run in a batch, or refused without running when no transaction could start.
trait Job: Send {
    fn run(self: Box<Self>, conn: &Connection) -> Reply;
    fn refuse(self: Box<Self>, message: String);
    /// Answered before its commit ([`Writer::write_ahead`]).
    fn early(&self) -> bool;
}

struct Write<T, F> {
    work: F,
    answer: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
    /// Answer as soon as the work ran, before its commit (see [`Writer::write_ahead`]).
    early: bool,
}

impl<T, F> Job for Write<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Reply {
        let Write {
            work,
            answer,
            early,
        } = *self;
        let outcome = in_savepoint(conn, work);
        if early {
            let _ = answer.send(outcome);
            return Box::new(|_| {});
        }
        Box::new(move |committed: Result<(), String>| {
            let result = match committed {
                Ok(()) => outcome,
                // The work's own error says more than the failed commit it caused.
                Err(message) => outcome.and(Err(StoreError::Database(message))),
            };
            let _ = answer.send(result);
        })
    }

    fn refuse(self: Box<Self>, message: String) {
        let _ = self.answer.send(Err(StoreError::Database(message)));
    }

    fn early(&self) -> bool {
        self.early
    }
}

/// A write-ahead job nobody waits for ([`Writer::queue`]): its failure is logged.
struct Queued<F> {
    work: F,
    what: &'static str,
}

impl<F> Job for Queued<F>
where
    F: FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Reply {
        let Queued { work, what } = *self;
        if let Err(error) = in_savepoint(conn, work) {
            tracing::warn!(%error, "could not record {what}");
        }
        Box::new(|_| {})
    }

    fn refuse(self: Box<Self>, message: String) {
        tracing::warn!(error = %message, "could not record {}", self.what);
    }

    fn early(&self) -> bool {
        true
    }
}

/// What the writer thread shares with its handles: the counters, and a test hook that, while
/// set, makes every commit fail as on a full disk (`tests/` use it to show that a job whose
/// commit failed is never answered with success, and what readiness says).
#[derive(Debug, Default)]
pub(super) struct Shared {
    failing: std::sync::atomic::AtomicBool,
    /// Transactions committed (or tried) so far.
    commits: std::sync::atomic::AtomicU64,
    /// Jobs run so far.
    jobs: std::sync::atomic::AtomicU64,
}

/// How many writes shared how many commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteStats {
    /// Writes run.
    pub jobs: u64,
    /// Commits made for them.
    pub commits: u64,
}

/// The write side: the queue to the writer thread.
pub(super) struct Writer {
    queue: mpsc::Sender<Box<dyn Job>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Writer {
    /// Starts the writer thread on `conn`. It ends when the last `Writer` is dropped.
    pub(super) fn start(conn: Connection) -> Result<Writer, StoreError> {
        let (queue, jobs) = mpsc::channel::<Box<dyn Job>>();
        let shared = Arc::new(Shared::default());
        let thread_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("moongate-ledger-writer".to_owned())
            .spawn(move || run(conn, jobs, thread_shared))
            .map_err(|e| StoreError::Database(format!("ledger writer thread: {e}")))?;
        Ok(Writer { queue, shared })
    }

    /// Runs `work` in the next batch and answers once that batch's commit is durable.
    pub(super) async fn write<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(work, false).await
    }

    /// Runs `work` in the next batch and answers as soon as it ran, before the batch commits.
    /// Only for writes that need no durability of their own because whatever they guard is
    /// written after them: the queue is in order, so any later write of the same request
    /// commits in the same batch or a later one, and its answer waits for that. (A request
    /// nonce: the effects it protects against replaying are all later writes.)
    pub(super) async fn write_ahead<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(work, true).await
    }

    /// Queues `work` as a write-ahead job and returns at once, without waiting for it to run:
    /// for a log line whose caller has nothing to do with the outcome (a provider attempt). The
    /// queue is in order, so the caller's next write runs after it, in the same batch or a
    /// later one; a failure is logged as `could not record {what}`.
    pub(super) fn queue<F>(&self, what: &'static str, work: F) -> Result<(), StoreError>
    where
        F: FnOnce(&Connection) -> Result<(), StoreError> + Send + 'static,
    {
        self.queue
            .send(Box::new(Queued { work, what }))
            .map_err(|_| StoreError::Database("the ledger writer has stopped".into()))
    }

    async fn submit<T, F>(&self, work: F, early: bool) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel::<Result<T, StoreError>>();
        let job: Box<dyn Job> = Box::new(Write {
            work,
            answer,
            early,
        });
        self.queue
            .send(job)
            .map_err(|_| StoreError::Database("the ledger writer has stopped".into()))?;
        answered
            .await
            .map_err(|_| StoreError::Database("the ledger writer dropped a write".into()))?
    }

    /// Writes and commits so far.
    pub(super) fn stats(&self) -> WriteStats {
        use std::sync::atomic::Ordering::Relaxed;
        WriteStats {
            jobs: self.shared.jobs.load(Relaxed),
            commits: self.shared.commits.load(Relaxed),
        }
    }

    /// Makes every commit fail, or not (tests).
    pub(super) fn fail_commits(&self, failing: bool) {
        self.shared
            .failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Runs one job between `SAVEPOINT` and `RELEASE`, rolled back to the savepoint when it fails
/// or panics.
fn in_savepoint<T>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let run = |sql: &str| execute_cached(conn, sql);
    run("SAVEPOINT job").map_err(db)?;
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| work(conn))).unwrap_or_else(|_| {
        Err(StoreError::Database(
            "a ledger write panicked; it was rolled back".into(),
        ))
    });
    if outcome.is_err() {
        run("ROLLBACK TO job").map_err(db)?;
    }
    run("RELEASE job").map_err(db)?;
    outcome
}

/// Runs one of the statements every batch or job runs (`BEGIN`, `SAVEPOINT`, `COMMIT`…) from
/// the statement cache, not parsed again each time.
fn execute_cached(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]).map(drop))
}

fn run(conn: Connection, jobs: mpsc::Receiver<Box<dyn Job>>, shared: Arc<Shared>) {
    use std::sync::atomic::Ordering::{Relaxed, SeqCst};
    while let Ok(first) = jobs.recv() {
        if let Err(error) = execute_cached(&conn, "BEGIN IMMEDIATE") {
            let message = format!("ledger transaction: {error}");
            first.refuse(message.clone());
            while let Ok(job) = jobs.try_recv() {
                job.refuse(message.clone());
            }
            continue;
        }
        shared.commits.fetch_add(1, Relaxed);
        let mut replies: Vec<Reply> = Vec::new();
        let mut durable = false;
        let mut linger_until = None;
        let mut next = Some(first);
        loop {
            while replies.len() < MAX_BATCH {
                let Some(job) = next.take().or_else(|| jobs.try_recv().ok()) else {
                    break;
                };
                durable |= !job.early();
                shared.jobs.fetch_add(1, Relaxed);
                replies.push(job.run(&conn));
            }
            if durable || replies.len() >= MAX_BATCH {
                break;
            }
            // Write-ahead jobs only: wait a little for a write to share the commit with.
            let deadline = *linger_until.get_or_insert_with(|| std::time::Instant::now() + LINGER);
            match jobs.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok(job) => next = Some(job),
                Err(_) => break,
            }
        }
        let committed = if shared.failing.load(SeqCst) {
            Err("ledger commit failed (injected fault)".to_owned())
        } else {
            execute_cached(&conn, "COMMIT").map_err(|e| format!("ledger commit: {e}"))
        };
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        for reply in replies {
            reply(committed.clone());
        }
    }
}

/// Read connections: each read takes a free one (or waits for the first), in `spawn_blocking`.
pub(super) struct Readers {
    pool: Vec<Arc<Mutex<Connection>>>,
    next: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Readers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Readers({})", self.pool.len())
    }
}

impl Readers {
    pub(super) fn new(pool: Vec<Connection>) -> Readers {
        Readers {
            pool: pool.into_iter().map(|c| Arc::new(Mutex::new(c))).collect(),
            next: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    pub(super) async fn read<T, F>(&self, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let count = self.pool.len().max(1);
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || {
            // A free connection if there is one, else the one this read was dealt.
            for offset in 0..count {
                if let Some(conn) = pool.get((start + offset) % count)
                    && let Ok(guard) = conn.try_lock()
                {
                    return work(&guard);
                }
            }
            let conn = pool
                .get(start % count)
                .ok_or_else(|| StoreError::Database("no ledger read connection".into()))?;
            let guard = conn
                .lock()
                .map_err(|_| StoreError::Database("ledger read lock poisoned".into()))?;
            work(&guard)
        })
        .await
        .map_err(|e| StoreError::Database(format!("ledger read task failed: {e}")))?
    }
}
