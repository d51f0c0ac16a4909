//! Repairing a `missing_in_ledger` break: the provider collected money for an order the ledger
//! does not have (a lost write, a restored backup, an order placed around Moongate). The
//! provider is asked for the order; only if it says the order is paid is a `succeeded` payment
//! inserted, with the provider's amount and transaction number, and a `payment.succeeded`
//! event so the merchant hears of it. The break is then resolved with a note.

use moongate_contract::{Money, PaymentRef, PaymentStatus as ProviderStatus};
use tracing::info;

use super::{BreakStatus, Category};
use crate::gateway::Gateway;
use crate::ledger::{Payment, PaymentStatus};
use crate::port::Caller;
use crate::store::{StoreError, StoredBreak};

/// Why a repair was refused.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// No such break.
    #[error("no break {0}")]
    UnknownBreak(String),
    /// Only open `missing_in_ledger` payment breaks can be repaired.
    #[error(
        "break {id} is {category} ({kind}, {status}); only open missing_in_ledger payment breaks are repaired"
    )]
    NotRepairable {
        /// Break.
        id: String,
        /// Its category.
        category: &'static str,
        /// Payment or refund.
        kind: String,
        /// Its status.
        status: &'static str,
    },
    /// The account is no longer configured.
    #[error("account {0} is not in the config")]
    UnknownAccount(String),
    /// The provider does not confirm the payment.
    #[error("the provider does not report order {id} as paid ({answer}); nothing inserted")]
    NotPaid {
        /// Order.
        id: String,
        /// What it said.
        answer: String,
    },
    /// The provider could not be asked.
    #[error("provider query failed: {0}")]
    Provider(String),
    /// The ledger already has the payment (repaired before, or recorded since).
    #[error("payment {0} is already in the ledger")]
    AlreadyInLedger(String),
    /// The ledger failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Repairs one break; returns the inserted payment and the resolved break.
pub async fn repair_break(
    gateway: &Gateway,
    merchant_id: Option<&str>,
    break_id: &str,
) -> Result<(Payment, StoredBreak), RepairError> {
    let found = gateway
        .store
        .break_by_id(merchant_id, break_id)
        .await?
        .ok_or_else(|| RepairError::UnknownBreak(break_id.to_owned()))?;
    let record = &found.record;
    if record.category != Category::MissingInLedger
        || record.kind != "payment"
        || record.status != BreakStatus::Open
    {
        return Err(RepairError::NotRepairable {
            id: record.id.clone(),
            category: record.category.as_str(),
            kind: record.kind.clone(),
            status: record.status.as_str(),
        });
    }
    let config = gateway.config();
    let label = format!("{}/{}", found.merchant_id, found.account_id);
    let account = config
        .merchants
        .get(&found.merchant_id)
        .and_then(|m| m.accounts.iter().find(|a| a.id == found.account_id))
        .ok_or_else(|| RepairError::UnknownAccount(label.clone()))?;
    let currency = moongate_contract::Currency::parse(&record.currency)
        .map_err(|_| RepairError::Provider(format!("currency {}", record.currency)))?;
    let reference = PaymentRef {
        provider_order_id: record.payment_id.clone(),
        amount: Money::new(record.provider_amount.unwrap_or(0), currency),
        // The ledger never saw this order, so its creation time is unknown. UnionPay names an
        // order by the `txnTime` it was sent with, so its query finds nothing at this time
        // (`34`) and such a break is not repaired: nothing is inserted, the break stays open.
        created_at: gateway.now(),
    };
    let adapter = &account.adapter;
    let caller = Caller {
        merchant_id: &found.merchant_id,
        account,
        subject: &record.payment_id,
        refund_id: None,
    };
    let prepared = adapter.prepare_query(&gateway.call_context(), &reference);
    let status = gateway
        .port()
        .exchange(caller, "query", prepared, |answer| {
            adapter.parse_query(&reference, answer)
        })
        .await
        .into_answer()
        .map_err(RepairError::Provider)?;
    let ProviderStatus::Succeeded {
        provider_ref,
        amount,
        paid_at,
    } = status
    else {
        return Err(RepairError::NotPaid {
            id: record.payment_id.clone(),
            answer: format!("{status:?}"),
        });
    };
    let now = gateway.now();
    let mut metadata = serde_json::Map::new();
    metadata.insert(
        "moongate_repair".to_owned(),
        serde_json::json!({
            "break": record.id,
            "statement_day": found.day,
            "note": "rebuilt from the provider's record; the original request (method, reference, description) was never in the ledger",
        }),
    );
    let payment = Payment {
        id: record.payment_id.clone(),
        merchant_id: found.merchant_id.clone(),
        account_id: found.account_id.clone(),
        provider: account.kind,
        // The provider's record does not say which product was used; the account's first
        // method stands in, and the metadata says the payment was rebuilt.
        method: adapter
            .capabilities()
            .methods
            .first()
            .copied()
            .ok_or_else(|| RepairError::Provider("the adapter has no methods".to_owned()))?,
        amount: amount.minor,
        currency: amount.currency,
        merchant_reference: record.payment_id.clone(),
        description: "Repaired from the provider's record".to_owned(),
        return_url: None,
        metadata,
        provider_order_id: record.payment_id.clone(),
        provider_ref: Some(provider_ref.clone()),
        status: PaymentStatus::Succeeded,
        next_action: None,
        failure: None,
        amount_refunded: 0,
        expires_at: now,
        created_at: paid_at.unwrap_or(now),
        updated_at: now,
        payer: Default::default(),
        route: None,
        channel: None,
    };
    if !gateway
        .store
        .insert_repaired_payment(payment.clone(), now)
        .await?
    {
        return Err(RepairError::AlreadyInLedger(payment.id));
    }
    let note = format!(
        "repaired {}: payment inserted from the provider's record ({} {}, transaction {provider_ref})",
        now.date(),
        amount.to_decimal_string(),
        amount.currency.code()
    );
    let resolved = gateway
        .store
        .set_break_status(None, &record.id, BreakStatus::Resolved, Some(note), now)
        .await?
        .ok_or_else(|| RepairError::UnknownBreak(record.id.clone()))?;
    info!(payment = %payment.id, r#break = %record.id, "missing_in_ledger payment repaired");
    Ok((payment, resolved))
}
