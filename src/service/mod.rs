//! The service layer: the work behind the HTTP handlers (validation, routing, idempotency,
//! checkouts). Payments, refunds, notifications and the janitor are driven by
//! [`crate::gateway::Gateway`]; reconciliation by [`crate::reconcile`].

pub mod checkouts;
pub mod codes;
pub mod idempotency;
pub mod payments;
pub mod reconciliation;
