//! One reconciliation run: statement in, stored report and breaks out.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use moongate_contract::{
    Currency, Operation, PaymentAdapter, Prepared, StatementError, StatementLimits, StatementLine,
    StatementLocation, StatementTotals,
};
use time::{Date, OffsetDateTime};
use tracing::{Instrument, info, info_span, warn};

use super::matcher::{CategoryTally, MatchSettings, Matcher};
use super::report::{Control, Report, Resources, StatementSide};
use super::{BreakStatus, Category, StatementRecord};
use crate::config::Account;
use crate::gateway::Gateway;
use crate::port::Caller;
use crate::registry;
use crate::store::{ReconRun, StoreError};

/// Largest statement file downloaded or imported (a million-line bill is about 250 MB): the
/// text limit of [`StatementLimits::DEFAULT`], since WeChat Pay's bill comes uncompressed.
pub const MAX_STATEMENT_BYTES: u64 = StatementLimits::DEFAULT.max_bytes;

/// How long a statement download may take.
const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Where the statement comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Ask the provider through the account's adapter.
    Download,
    /// A file already downloaded (offline use), in the provider's own format.
    File(PathBuf),
}

/// What to reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRequest {
    /// Merchant.
    pub merchant_id: String,
    /// Provider account of that merchant.
    pub account_id: String,
    /// Statement day (Beijing).
    pub day: Date,
    /// Statement source.
    pub source: Source,
}

/// Why a run did not produce a report.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// No such merchant or account in the config.
    #[error("no account {0} in the config")]
    UnknownAccount(String),
    /// The adapter cannot fetch statements.
    #[error("the {0} adapter does not fetch statements")]
    Unsupported(&'static str),
    /// The provider has not generated the statement yet.
    #[error(
        "the statement is not ready yet ({0}); bills are generated the next day from about 10:00 Beijing time"
    )]
    NotReady(String),
    /// The provider refused or failed the statement request.
    #[error("the provider did not give the statement: {0}")]
    Provider(String),
    /// The download failed.
    #[error("statement download failed: {0}")]
    Download(String),
    /// The downloaded file's SHA-1 differs from the one the provider stated.
    #[error("statement file SHA-1 {actual} differs from the stated {expected}: nothing imported")]
    HashMismatch {
        /// Stated.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// The statement did not parse or did not add up: refused whole.
    #[error("statement refused, nothing imported: {0}")]
    Refused(StatementError),
    /// Local file trouble.
    #[error("statement file: {0}")]
    Io(String),
    /// The ledger failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReconcileError {
    /// Stable code for the API.
    pub fn code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode as C;
        match self {
            ReconcileError::UnknownAccount(_) => C::AccountNotFound,
            ReconcileError::Unsupported(_) => C::StatementUnsupported,
            ReconcileError::NotReady(_) => C::StatementNotReady,
            ReconcileError::Provider(_) => C::StatementUnavailable,
            ReconcileError::Download(_) => C::StatementDownloadFailed,
            ReconcileError::HashMismatch { .. } => C::StatementHashMismatch,
            ReconcileError::Refused(_) => C::StatementRefused,
            ReconcileError::Io(_) => C::StatementFileError,
            ReconcileError::Store(_) => C::InternalError,
        }
    }
}

/// Called with (bytes read, file size) as the statement is read.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

pub use moongate_contract::statement::format_day;

/// Parses `yyyy-MM-dd` as typed by a person (surrounding spaces ignored).
pub fn parse_day(text: &str) -> Option<Date> {
    moongate_contract::statement::parse_day(text.trim())
}

/// The statement day before today in Beijing: the latest one providers have.
pub fn yesterday_beijing(now: OffsetDateTime) -> Date {
    let today = moongate_contract::statement::beijing_day(now);
    today.previous_day().unwrap_or(today)
}

/// Peak resident memory of this process (Linux), bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A reader that reports progress.
struct Counting<R> {
    inner: R,
    position: u64,
    total: u64,
    last_reported: u64,
    progress: Option<Progress>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.position += n as u64;
        if let Some(progress) = &self.progress
            && (self.position - self.last_reported >= 1 << 20 || n == 0)
        {
            self.last_reported = self.position;
            progress(self.position.min(self.total), self.total);
        }
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        let at = self.inner.seek(pos)?;
        self.position = at;
        Ok(at)
    }
}

/// Copies a file into the statement store while hashing it.
fn import_file(from: &Path, to: &Path) -> Result<(u64, String), ReconcileError> {
    let mut input = std::fs::File::open(from)
        .map_err(|e| ReconcileError::Io(format!("{}: {e}", from.display())))?;
    store_hashed(&mut input, &from.display().to_string(), "file", to)
}

/// Writes a statement the provider sent inline into the statement store and hashes it.
fn store_inline(bytes: &[u8], to: &Path) -> Result<(u64, String), ReconcileError> {
    store_hashed(&mut &bytes[..], "the provider's answer", "statement", to)
}

/// Writes `input` (named `source` in errors, a `what` in the size error) to `to`, durably,
/// within [`MAX_STATEMENT_BYTES`]; its size and SHA-256.
fn store_hashed(
    input: &mut dyn Read,
    source: &str,
    what: &str,
    to: &Path,
) -> Result<(u64, String), ReconcileError> {
    let io = |e: std::io::Error| ReconcileError::Io(format!("{source}: {e}"));
    let mut output = crate::private_fs::create(to)
        .map_err(|e| ReconcileError::Io(format!("{}: {e}", to.display())))?;
    let mut sha = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0_u8; 1 << 16];
    let mut bytes = 0_u64;
    loop {
        let n = input.read(&mut buffer).map_err(io)?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        if bytes > MAX_STATEMENT_BYTES {
            return Err(ReconcileError::Io(format!(
                "{what} larger than {MAX_STATEMENT_BYTES} bytes"
            )));
        }
        let chunk = buffer.get(..n).unwrap_or_default();
        sha.update(chunk);
        std::io::Write::write_all(&mut output, chunk)
            .map_err(|e| ReconcileError::Io(format!("{}: {e}", to.display())))?;
    }
    output
        .sync_all()
        .map_err(|e| ReconcileError::Io(format!("{}: {e}", to.display())))?;
    Ok((bytes, hex::encode(sha.finish())))
}

/// Fetches (or imports) the statement and stores the raw file with its SHA-256.
async fn obtain(
    gateway: &Gateway,
    account: &Account,
    request: &RunRequest,
    dir: &Path,
) -> Result<(StatementRecord, Option<PathBuf>), ReconcileError> {
    let kind = account.kind;
    let day = format_day(request.day);
    let nonce = crate::ledger::new_id("part");
    let staging = dir.join(format!(".{day}-{nonce}.part"));
    let (source, bytes, sha256) = match &request.source {
        Source::File(path) => {
            let path = path.clone();
            let target = staging.clone();
            let (bytes, sha) = tokio::task::spawn_blocking(move || import_file(&path, &target))
                .await
                .map_err(|e| ReconcileError::Io(format!("import task: {e}")))??;
            ("import", bytes, Some(sha))
        }
        Source::Download => {
            let adapter = &account.adapter;
            let subject = format!("statement:{day}");
            let caller = Caller {
                merchant_id: &request.merchant_id,
                account,
                subject: &subject,
                refund_id: None,
            };
            let prepared = adapter
                .prepare_statement(&gateway.call_context(), request.day)
                .map(Prepared::Send);
            let location = gateway
                .port()
                .exchange(caller, "statement", prepared, |answer| {
                    adapter.parse_statement(answer)
                })
                .await
                .into_answer()
                .map_err(|error| {
                    // Today's bill does not exist yet: a refusal of it means "not ready".
                    let today = registry::facts(kind)
                        .wallet
                        .statement_day
                        .day_of(gateway.now());
                    if request.day >= today {
                        ReconcileError::NotReady(format!("the day is not over yet ({error})"))
                    } else {
                        ReconcileError::Provider(error)
                    }
                })?;
            match location {
                StatementLocation::NotReady { code } => return Err(ReconcileError::NotReady(code)),
                StatementLocation::Empty => ("empty", 0, None),
                StatementLocation::Inline { bytes } => {
                    let target = staging.clone();
                    let (size, sha) =
                        tokio::task::spawn_blocking(move || store_inline(&bytes, &target))
                            .await
                            .map_err(|e| ReconcileError::Io(format!("store task: {e}")))??;
                    ("download", size, Some(sha))
                }
                StatementLocation::Download { url, sha1 } => {
                    let download = adapter
                        .prepare_statement_download(&gateway.call_context(), &url)
                        .map_err(|e| ReconcileError::Provider(e.to_string()))?;
                    let got = gateway
                        .port()
                        .download(
                            caller,
                            "statement_download",
                            &download,
                            &staging,
                            MAX_STATEMENT_BYTES,
                            DOWNLOAD_TIMEOUT,
                        )
                        .await
                        .into_answer()
                        .map_err(|e| {
                            let _ = std::fs::remove_file(&staging);
                            ReconcileError::Download(e)
                        })?;
                    if got.status != 200 {
                        let _ = std::fs::remove_file(&staging);
                        return Err(ReconcileError::Download(format!(
                            "HTTP {}: {}",
                            got.status,
                            String::from_utf8_lossy(&got.head)
                                .chars()
                                .take(200)
                                .collect::<String>()
                        )));
                    }
                    if let Some(expected) = sha1
                        && !expected.eq_ignore_ascii_case(&got.sha1)
                    {
                        let _ = std::fs::remove_file(&staging);
                        return Err(ReconcileError::HashMismatch {
                            expected,
                            actual: got.sha1,
                        });
                    }
                    ("download", got.bytes, Some(got.sha256))
                }
            }
        }
    };
    let (sha256, path) = match sha256 {
        Some(sha) => {
            let name = format!(
                "{day}-{}.{}",
                sha.get(..16).unwrap_or(&sha),
                registry::facts(kind).wallet.statement_extension
            );
            let path = dir.join(name);
            std::fs::rename(&staging, &path)
                .map_err(|e| ReconcileError::Io(format!("{}: {e}", path.display())))?;
            (sha, Some(path))
        }
        None => (
            hex::encode(ring::digest::digest(&ring::digest::SHA256, b"")),
            None,
        ),
    };
    let record = StatementRecord {
        id: crate::ledger::new_id("stm"),
        merchant_id: request.merchant_id.clone(),
        account_id: request.account_id.clone(),
        provider: kind.as_str().to_owned(),
        day,
        source: source.to_owned(),
        sha256,
        path: path.as_ref().map(|p| p.display().to_string()),
        bytes,
        fetched_at: crate::ledger::rfc3339(gateway.now()),
    };
    gateway.store.save_statement(record.clone()).await?;
    Ok((record, path))
}

/// Runs one reconciliation and stores its report and breaks.
pub async fn reconcile(
    gateway: &Gateway,
    request: RunRequest,
    progress: Option<Progress>,
) -> Result<Report, ReconcileError> {
    let span = info_span!(
        "reconcile",
        merchant = %request.merchant_id,
        account = %request.account_id,
        day = %format_day(request.day)
    );
    reconcile_inner(gateway, request, progress)
        .instrument(span)
        .await
}

async fn reconcile_inner(
    gateway: &Gateway,
    request: RunRequest,
    progress: Option<Progress>,
) -> Result<Report, ReconcileError> {
    let started = Instant::now();
    let config = gateway.config();
    let label = format!("{}/{}", request.merchant_id, request.account_id);
    let merchant = config
        .merchants
        .get(&request.merchant_id)
        .ok_or_else(|| ReconcileError::UnknownAccount(label.clone()))?;
    let account = merchant
        .accounts
        .iter()
        .find(|a| a.id == request.account_id)
        .ok_or_else(|| ReconcileError::UnknownAccount(label.clone()))?;
    let adapter = Arc::clone(&account.adapter);
    let kind = adapter.kind();
    if !adapter
        .capabilities()
        .operations
        .contains(&Operation::Statement)
    {
        return Err(ReconcileError::Unsupported(kind.as_str()));
    }
    let dir = config
        .reconciliation
        .statement_dir
        .join(&request.merchant_id)
        .join(&request.account_id);
    crate::private_fs::create_dir_all(&dir)
        .map_err(|e| ReconcileError::Io(format!("{}: {e}", dir.display())))?;
    let ms_since = |t: Instant| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut phases = super::report::Phases::default();
    let drift_secs = config.reconciliation.drift_secs;
    let settings = MatchSettings {
        day: request.day,
        day_rule: registry::facts(account.kind).wallet.statement_day,
        drift_secs: i64::try_from(drift_secs).unwrap_or(86_400),
        fee_rate_ppm: account.fee_rate_ppm,
        max_held: super::matcher::MAX_HELD_LINES,
    };
    let (from, to) = settings.window();
    // The statement (download or import, with its SHA-256) and the ledger window at once: they
    // do not depend on each other, and each keeps one core busy. Each phase is its own time.
    let statement_phase = async {
        let phase = Instant::now();
        let obtained = obtain(gateway, account, &request, &dir).await?;
        Ok::<_, ReconcileError>((obtained, ms_since(phase)))
    };
    let ledger_phase = async {
        let phase = Instant::now();
        let (payments, refunds) = gateway
            .store
            .recon_ledger(&request.merchant_id, &request.account_id, from, to)
            .await?;
        let matcher = Matcher::new(settings, payments, refunds);
        Ok::<_, ReconcileError>((matcher, ms_since(phase)))
    };
    let (((statement, path), obtain_ms), (matcher, ledger_ms)) =
        tokio::try_join!(statement_phase, ledger_phase)?;
    phases.obtain = obtain_ms;
    phases.ledger = ledger_ms;
    let phase = Instant::now();
    let (matcher, totals) = match path {
        None => (matcher, StatementTotals::default()),
        Some(path) => {
            let reader_adapter = Arc::clone(&adapter);
            tokio::task::spawn_blocking(move || read_into(reader_adapter, &path, matcher, progress))
                .await
                .map_err(|e| ReconcileError::Io(format!("reader task: {e}")))??
        }
    };
    phases.parse_and_match = ms_since(phase);
    let phase = Instant::now();
    let (payment_ids, refund_ids) = matcher.deferred_ids();
    let (found_payments, found_refunds) = gateway
        .store
        .recon_lookup(
            &request.merchant_id,
            &request.account_id,
            payment_ids,
            refund_ids,
        )
        .await?;
    let outcome = matcher.finish(found_payments, found_refunds);
    phases.lookup = ms_since(phase);
    let currency = Currency::CNY;
    let mut summary: Vec<CategoryTally> = Vec::new();
    for category in Category::ALL {
        let mut any = false;
        for tally in outcome
            .tallies
            .iter()
            .filter(|t| t.category == Some(category))
        {
            summary.push(tally.clone());
            any = true;
        }
        if !any {
            summary.push(CategoryTally {
                category: Some(category),
                currency: currency.code().to_owned(),
                ..CategoryTally::default()
            });
        }
    }
    let statement_net = totals.payment_total - totals.refund_total;
    let ledger_net = outcome.ledger.payment_total - outcome.ledger.refund_total;
    let finished = gateway.now();
    let run_id = crate::ledger::new_id("rec");
    let mut report = Report {
        run_id: run_id.clone(),
        merchant_id: request.merchant_id.clone(),
        account_id: request.account_id.clone(),
        provider: kind.as_str().to_owned(),
        day: format_day(request.day),
        timezone: "UTC+08:00".to_owned(),
        currency: currency.code().to_owned(),
        generated_at: crate::ledger::rfc3339(finished),
        drift_secs,
        statement: statement.clone(),
        statement_totals: StatementSide {
            lines: totals.lines,
            payments: totals.payments,
            payment_total: totals.payment_total,
            refunds: totals.refunds,
            refund_total: totals.refund_total,
        },
        ledger_totals: outcome.ledger.clone(),
        control: Control {
            statement_net,
            ledger_net,
            difference: statement_net - ledger_net,
        },
        summary,
        fees: outcome.fees.clone(),
        break_count: outcome.breaks.len() as u64,
        open_breaks: 0,
        resources: Resources::default(),
        breaks: Vec::new(),
    };
    // The stored run keeps the phases known before it is stored.
    report.resources.phases_ms = phases.clone();
    let phase = Instant::now();
    let stored_summary =
        serde_json::to_string(&report).map_err(|e| ReconcileError::Io(format!("report: {e}")))?;
    let breaks = gateway
        .store
        .save_recon_run(
            ReconRun {
                id: run_id,
                merchant_id: request.merchant_id.clone(),
                account_id: request.account_id.clone(),
                day: report.day.clone(),
                statement_id: statement.id.clone(),
                finished_at: finished,
                report: stored_summary,
            },
            outcome.breaks,
        )
        .await?;
    report.open_breaks = breaks
        .iter()
        .filter(|b| b.status == BreakStatus::Open)
        .count() as u64;
    report.breaks = breaks;
    phases.store = ms_since(phase);
    report.resources = Resources {
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        peak_rss_bytes: peak_rss_bytes(),
        phases_ms: phases,
    };
    if report.break_count > 0 {
        warn!(
            breaks = report.break_count,
            difference = report.control.difference,
            "reconciliation found breaks"
        );
    } else {
        info!(
            lines = report.statement_totals.lines,
            "reconciliation balanced"
        );
    }
    Ok(report)
}

/// Lines handed from the parser to the matcher at a time.
const PIPE_BATCH: usize = 4_096;

/// Batches in flight between them: what the pipe holds is bounded (about 16,000 lines), so
/// memory stays flat in the statement's size.
const PIPE_DEPTH: usize = 4;

/// Streams the stored file through the matcher (blocking; runs on the blocking pool). The
/// adapter parses on a thread of its own and hands lines over in batches through a bounded
/// pipe, so parsing and matching each keep a core busy. A matcher that refuses the file stops
/// the parser (the pipe closes); a file the parser refuses (cut, altered, totals off) is
/// refused whatever the matcher made of its lines.
fn read_into(
    adapter: Arc<dyn PaymentAdapter>,
    path: &Path,
    mut matcher: Matcher,
    progress: Option<Progress>,
) -> Result<(Matcher, StatementTotals), ReconcileError> {
    let file = std::fs::File::open(path)
        .map_err(|e| ReconcileError::Io(format!("{}: {e}", path.display())))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = Counting {
        inner: file,
        position: 0,
        total,
        last_reported: 0,
        progress,
    };
    let (pipe, batches) = std::sync::mpsc::sync_channel::<Vec<StatementLine>>(PIPE_DEPTH);
    let parser = std::thread::Builder::new()
        .name("moongate-statement-parser".to_owned())
        .spawn(move || {
            let mut batch = Vec::with_capacity(PIPE_BATCH);
            let parsed =
                adapter.read_statement(&mut reader, &StatementLimits::DEFAULT, &mut |line| {
                    let number = line.line;
                    batch.push(line);
                    if batch.len() >= PIPE_BATCH {
                        let full = std::mem::replace(&mut batch, Vec::with_capacity(PIPE_BATCH));
                        pipe.send(full).map_err(|_| {
                            StatementError::at(number, "the matcher stopped reading")
                        })?;
                    }
                    Ok(())
                });
            if parsed.is_ok() && !batch.is_empty() {
                let _ = pipe.send(batch);
            }
            parsed
        })
        .map_err(|e| ReconcileError::Io(format!("statement parser thread: {e}")))?;
    let mut refused = None;
    'batches: for batch in batches {
        for line in batch {
            if let Err(error) = matcher.line(line) {
                refused = Some(error);
                break 'batches;
            }
        }
    }
    let parsed = parser
        .join()
        .map_err(|_| ReconcileError::Io("the statement parser panicked".into()))?;
    if let Some(error) = refused {
        return Err(ReconcileError::Refused(error));
    }
    let totals = parsed.map_err(ReconcileError::Refused)?;
    Ok((matcher, totals))
}

/// A stored run as a full report (summary plus its breaks as they stand now).
pub async fn load_report(
    gateway: &Gateway,
    merchant_id: Option<&str>,
    run_id: &str,
) -> Result<Option<Report>, StoreError> {
    let Some((run, breaks)) = gateway.store.recon_run(merchant_id, run_id).await? else {
        return Ok(None);
    };
    let mut report: Report = serde_json::from_str(&run.report)
        .map_err(|e| StoreError::Corrupt(format!("report: {e}")))?;
    report.open_breaks = breaks
        .iter()
        .filter(|b| b.status == BreakStatus::Open)
        .count() as u64;
    report.breaks = breaks;
    Ok(Some(report))
}
