//! Reconciliation: provider statements against the ledger.
//!
//! - [`matcher`] is pure: ledger records of a statement day (plus a drift window either side)
//!   go in, statement lines stream through, classified results come out.
//! - [`report`] renders a run as JSON, a CSV of breaks and a self-contained HTML page.
//! - [`run`] drives one run: fetch the statement through the account's adapter (or import a
//!   file), store the raw file with its SHA-256 before parsing, stream it through the matcher,
//!   and store the run with its breaks. A statement that fails its own control totals is
//!   refused whole: no run and no break is stored from it.
//!
//! Statement days are Beijing calendar days (UTC+8), as both providers cut them.

pub mod cli;
pub mod matcher;
pub mod repair;
pub mod report;
pub mod run;
pub mod schedule;
pub use crate::ledger::reconciliation::{
    Break, BreakStatus, Category, LedgerPayment, LedgerRefund, StatementRecord,
};
