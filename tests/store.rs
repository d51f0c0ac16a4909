#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! The ledger's storage contract, one suite run on both backends: every scenario below runs
//! once on SQLite and once on PostgreSQL (a fresh schema per test). The PostgreSQL runs need
//! `MOONGATE_TEST_DATABASE_URL` (`.ci/run` sets it); without it they say they are skipped.
//!
//! Besides the single-writer behaviour, the races here are the ones several instances create:
//! the same idempotency key, the same notification, refunds of one payment and choices on one
//! checkout arriving at once, and workers claiming janitor checks, webhook deliveries and the
//! daily reconciliation side by side.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use moongate::cashier::Checkout;
use moongate::ledger::{Payment, PaymentChange, PaymentStatus, Refund, RefundStatus, new_id};
use moongate::reconcile::{Break, BreakStatus, Category, StatementRecord};
use moongate::store::postgres::PgStore;
use moongate::store::sqlite::SqliteStore;
use moongate::store::{
    Also, Attempt, Begin, CheckTarget, DailyClaim, IdemClaim, InboxKey, KeyStore, PaymentStore,
    ReconRun, RefundRefusal, Store, StoreError, Updated,
};
use moongate_contract::{Currency, PaymentMethod, ProviderKind};
use time::OffsetDateTime;
use time::macros::datetime;

/// Runs a scenario on SQLite and on PostgreSQL.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(super::sqlite()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                let Some(schema) = crate::common::pg_schema(concat!(stringify!($name), "::postgres")).await else {
                    return;
                };
                let store = super::PgStore::open(&schema.url, 8).await.unwrap();
                super::$name(std::sync::Arc::new(store)).await;
                schema.drop().await;
            }
        }
    )*};
}

both_backends!(
    idempotency_keys_replay_mismatch_and_release,
    one_payment_for_racing_requests_with_one_key,
    nonces_refuse_replays_until_they_lapse,
    one_notification_applies_once_under_a_race,
    payment_changes_follow_the_state_machine,
    refunds_never_exceed_the_payment_under_a_race,
    janitor_claims_are_disjoint_and_leased,
    webhook_claims_are_disjoint_and_logged,
    webhook_claims_reach_every_merchant_past_a_backlog,
    daily_reconciliation_is_claimed_once,
    reconciliation_runs_keep_break_identity,
    checkout_choices_race_to_one_payment,
    listing_switching_attempts_and_repairs,
    a_known_payment_changes_as_the_ledger_has_it,
);

fn sqlite() -> Arc<dyn Store> {
    Arc::new(SqliteStore::in_memory().unwrap())
}

const T0: OffsetDateTime = datetime!(2026-11-20 10:00 UTC);

fn payment(id: &str, amount: i64) -> Payment {
    Payment {
        id: id.to_owned(),
        merchant_id: "shop_a".to_owned(),
        account_id: "wechat_main".to_owned(),
        provider: ProviderKind::WechatPay,
        method: PaymentMethod::WechatNative,
        amount,
        currency: Currency::CNY,
        merchant_reference: format!("order-{id}"),
        description: "Jasmine tea 茉莉花茶".to_owned(),
        return_url: Some("https://shop.example/done".to_owned()),
        metadata: serde_json::from_str(r#"{"z":"last","a":"first"}"#).unwrap(),
        provider_order_id: format!("o{id}"),
        provider_ref: None,
        status: PaymentStatus::Pending,
        next_action: None,
        failure: None,
        amount_refunded: 0,
        expires_at: T0 + Duration::from_secs(900),
        created_at: T0,
        updated_at: T0,
        payer: Default::default(),
        route: Some("default".to_owned()),
        channel: None,
    }
}

fn refund(id: &str, payment_id: &str, amount: i64) -> Refund {
    Refund {
        id: id.to_owned(),
        payment_id: payment_id.to_owned(),
        merchant_id: "shop_a".to_owned(),
        amount,
        currency: Currency::CNY,
        reason: Some("broken cup".to_owned()),
        status: RefundStatus::Pending,
        failure: None,
        created_at: T0,
        updated_at: T0,
    }
}

fn claim(key: &str, hash: &str) -> IdemClaim {
    IdemClaim {
        merchant_id: "shop_a".to_owned(),
        key: key.to_owned(),
        request_hash: hash.to_owned(),
        now: T0,
        nonce: None,
    }
}

/// A signed POST's claim: it carries the request's nonce, kept until `keep_until`.
fn claim_with_nonce(key: &str, nonce: &str, keep_until: OffsetDateTime) -> IdemClaim {
    IdemClaim {
        nonce: Some(moongate::store::NonceClaim {
            nonce: nonce.to_owned(),
            keep_until,
        }),
        ..claim(key, "h")
    }
}

fn to(status: PaymentStatus) -> moongate::store::PaymentDecision {
    Box::new(move |_| {
        Some(PaymentChange {
            status: Some(status),
            next_action: None,
            provider_ref: Some("4200000001".to_owned()),
            failure: None,
            refunded_delta: 0,
        })
    })
}

/// The log line of one create call about `payment_id`.
fn attempt(payment_id: &str) -> Attempt {
    Attempt {
        payment_id: payment_id.to_owned(),
        account_id: "wechat_main".to_owned(),
        refund_id: None,
        operation: "create",
        started_at: T0,
        elapsed_ms: 2,
        outcome: "answered HTTP 200".to_owned(),
    }
}

async fn paid(store: &Arc<dyn Store>, id: &str, amount: i64) {
    let fresh = store
        .begin_payment(claim(&format!("k-{id}"), "h"), payment(id, amount))
        .await
        .unwrap();
    assert!(matches!(fresh, Begin::Fresh(_)));
    let done = store
        .update_payment(id, Also::Nothing, T0, to(PaymentStatus::Succeeded))
        .await
        .unwrap();
    assert!(matches!(done, Updated::Done { changed: true, .. }));
}

async fn event_kinds(store: &Arc<dyn Store>, id: &str) -> Vec<String> {
    store
        .events_for(id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

/// `update_known` (a create's second write): applied at once while the ledger still holds the
/// payment as the caller knows it, and decided on the ledger's row when another writer moved it
/// meanwhile.
async fn a_known_payment_changes_as_the_ledger_has_it(store: Arc<dyn Store>) {
    let answer = |key: &str| {
        Also::Answer(moongate::store::KeyAnswer {
            merchant_id: "shop_a".to_owned(),
            key: key.to_owned(),
            status: 201,
        })
    };
    let replayed = |store: Arc<dyn Store>, key: &'static str, id: &'static str| async move {
        match store.claim_key(claim(key, "h"), id).await.unwrap() {
            Begin::Replay { status, body } => (status, body),
            other => panic!("{other:?}"),
        }
    };
    let later = T0 + Duration::from_secs(1);
    let fresh = store
        .begin_payment(
            claim_with_nonce("kn1", "nonce-kn1", later),
            payment("pay_kn1", 100),
        )
        .await
        .unwrap();
    let Begin::Fresh(known) = fresh else {
        panic!("{fresh:?}")
    };
    let paid = PaymentChange {
        status: Some(PaymentStatus::Succeeded),
        provider_ref: Some("4200000009".to_owned()),
        ..PaymentChange::default()
    };
    let Updated::Done { record, changed } = store
        .update_known(&known, answer("kn1"), later, paid, vec![attempt("pay_kn1")])
        .await
        .unwrap()
    else {
        panic!("the payment is there");
    };
    assert!(changed);
    assert_eq!(record.status, PaymentStatus::Succeeded);
    assert_eq!(record.updated_at, later);
    assert_eq!(
        store.payment(None, "pay_kn1").await.unwrap(),
        Some(record.clone())
    );
    assert_eq!(
        event_kinds(&store, "pay_kn1").await,
        ["payment.created", "payment.succeeded"]
    );
    assert_eq!(
        replayed(Arc::clone(&store), "kn1", "pay_kn1").await,
        (201, moongate::store::answer_body(&record))
    );
    assert_eq!(store.attempts_for("pay_kn1").await.unwrap().len(), 1);

    // Paid by a notification after the create: the stale copy's failure is refused by the
    // state machine, and the answer stored is the payment as the ledger has it.
    let Begin::Fresh(stale) = store
        .begin_payment(claim("kn2", "h"), payment("pay_kn2", 100))
        .await
        .unwrap()
    else {
        panic!("a fresh key");
    };
    let Updated::Done { record: paid, .. } = store
        .update_payment("pay_kn2", Also::Nothing, T0, to(PaymentStatus::Succeeded))
        .await
        .unwrap()
    else {
        panic!("the payment is there");
    };
    let failed = PaymentChange {
        status: Some(PaymentStatus::Failed),
        ..PaymentChange::default()
    };
    let Updated::Done { record, changed } = store
        .update_known(
            &stale,
            answer("kn2"),
            later,
            failed,
            vec![attempt("pay_kn2")],
        )
        .await
        .unwrap()
    else {
        panic!("the payment is there");
    };
    assert!(!changed);
    assert_eq!(record, paid);
    assert_eq!(
        store.payment(None, "pay_kn2").await.unwrap(),
        Some(paid.clone())
    );
    assert_eq!(
        event_kinds(&store, "pay_kn2").await,
        ["payment.created", "payment.succeeded"]
    );
    assert_eq!(
        replayed(Arc::clone(&store), "kn2", "pay_kn2").await,
        (201, moongate::store::answer_body(&paid))
    );
    // The call's line is kept whatever the change came to.
    let lines = store.attempts_for("pay_kn2").await.unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].outcome, "answered HTTP 200");

    // A retry under a key already taken is answered by the key, and its own nonce is spent.
    let retry = store
        .begin_payment(
            claim_with_nonce("kn1", "nonce-kn1-retry", later),
            payment("pay_kn3", 100),
        )
        .await
        .unwrap();
    assert!(
        matches!(retry, Begin::Replay { status: 201, .. }),
        "{retry:?}"
    );
    assert!(
        !store
            .remember_nonce("shop_a", "nonce-kn1-retry", T0, later)
            .await
            .unwrap()
    );
    assert_eq!(store.payment(None, "pay_kn3").await.unwrap(), None);
}

async fn idempotency_keys_replay_mismatch_and_release(store: Arc<dyn Store>) {
    let first = store
        .begin_payment(claim("k1", "h1"), payment("pay_1", 880))
        .await
        .unwrap();
    let Begin::Fresh(stored) = first else {
        panic!("{first:?}")
    };
    // Everything a payment holds comes back as written (metadata order, Chinese text).
    assert_eq!(store.payment(None, "pay_1").await.unwrap(), Some(stored));
    assert_eq!(
        store.payment(Some("shop_b"), "pay_1").await.unwrap(),
        None,
        "another merchant's payment is invisible"
    );
    // Same key and request while the first is running: in flight, with its resource.
    match store
        .begin_payment(claim("k1", "h1"), payment("pay_2", 880))
        .await
        .unwrap()
    {
        Begin::InFlight {
            resource_id,
            claimed_at,
        } => {
            assert_eq!(resource_id.as_deref(), Some("pay_1"));
            assert_eq!(claimed_at, T0);
        }
        other => panic!("{other:?}"),
    }
    // Same key, another request: refused whatever its state.
    assert_eq!(
        store
            .begin_payment(claim("k1", "other"), payment("pay_3", 1))
            .await
            .unwrap(),
        Begin::Mismatch
    );
    store
        .complete_key("shop_a", "k1", 201, b"{\"id\":\"pay_1\"}".to_vec(), T0)
        .await
        .unwrap();
    assert_eq!(
        store.claim_key(claim("k1", "h1"), "pay_1").await.unwrap(),
        Begin::Replay {
            status: 201,
            body: b"{\"id\":\"pay_1\"}".to_vec()
        }
    );
    // A finished key is never released; an unfinished one is, and can be claimed again.
    store.release_key("shop_a", "k1").await.unwrap();
    assert!(matches!(
        store.claim_key(claim("k1", "h1"), "pay_1").await.unwrap(),
        Begin::Replay { .. }
    ));
    assert_eq!(
        store.claim_key(claim("k2", "h2"), "pay_1").await.unwrap(),
        Begin::Fresh(())
    );
    store.release_key("shop_a", "k2").await.unwrap();
    assert_eq!(
        store.claim_key(claim("k2", "h3"), "pay_1").await.unwrap(),
        Begin::Fresh(())
    );
    // Keys are per merchant.
    let mut other = claim("k1", "h9");
    other.merchant_id = "shop_b".to_owned();
    assert_eq!(store.claim_key(other, "x").await.unwrap(), Begin::Fresh(()));
    // Past its 48 hours a key is a new request: taken over when it comes back, and deleted by
    // the janitor's purge otherwise (never before).
    let day = Duration::from_secs(24 * 3600);
    assert_eq!(store.purge_keys(T0 + 2 * day).await.unwrap(), 0);
    let mut back = claim("k1", "h-new");
    back.now = T0 + 2 * day + Duration::from_secs(1);
    assert_eq!(
        store.claim_key(back, "pay_9").await.unwrap(),
        Begin::Fresh(())
    );
    assert_eq!(
        store
            .purge_keys(T0 + 2 * day + Duration::from_secs(1))
            .await
            .unwrap(),
        2,
        "k2 and shop_b's k1"
    );
    let mut again = claim("k2", "h-other");
    again.now = T0 + 2 * day + Duration::from_secs(1);
    assert_eq!(
        store.claim_key(again, "pay_8").await.unwrap(),
        Begin::Fresh(())
    );
    let mut replay = claim("k1", "h-new");
    replay.now = T0 + 2 * day + Duration::from_secs(2);
    assert!(matches!(
        store.claim_key(replay, "pay_9").await.unwrap(),
        Begin::InFlight { .. }
    ));
    // Only pay_1 was stored, with one creation event.
    assert_eq!(store.payment(None, "pay_2").await.unwrap(), None);
    assert_eq!(event_kinds(&store, "pay_1").await, ["payment.created"]);
}

async fn one_payment_for_racing_requests_with_one_key(store: Arc<dyn Store>) {
    let mut tasks = Vec::new();
    for i in 0..12 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .begin_payment(claim("race", "h"), payment(&format!("pay_r{i}"), 100))
                .await
                .unwrap()
        }));
    }
    let mut fresh = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Begin::Fresh(p) => fresh.push(p.id),
            Begin::InFlight { resource_id, .. } => assert!(resource_id.is_some()),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(fresh.len(), 1, "{fresh:?}");
    let (listed, more) = store.list_payments("shop_a", None, 50).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!more);
    assert_eq!(listed[0].id, fresh[0]);
    assert_eq!(event_kinds(&store, &fresh[0]).await, ["payment.created"]);
}

async fn nonces_refuse_replays_until_they_lapse(store: Arc<dyn Store>) {
    let until = T0 + Duration::from_secs(300);
    assert!(
        store
            .remember_nonce("shop_a", "n1", T0, until)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remember_nonce("shop_a", "n1", T0, until)
            .await
            .unwrap()
    );
    assert!(
        store
            .remember_nonce("shop_b", "n1", T0, until)
            .await
            .unwrap()
    );
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .remember_nonce("shop_a", "n2", T0, until)
                .await
                .unwrap()
        }));
    }
    let mut firsts = 0;
    for task in tasks {
        firsts += usize::from(task.await.unwrap());
    }
    assert_eq!(
        firsts, 1,
        "one of eight racing requests with one nonce passes"
    );
    // Past its window the nonce is forgotten (the signature's own time check refuses old
    // requests long before that).
    let later = until + Duration::from_secs(1);
    assert!(
        store
            .remember_nonce("shop_a", "n1", later, later + Duration::from_secs(300))
            .await
            .unwrap()
    );
    // The janitor's purge deletes every lapsed nonce, in slices (more than one slice here),
    // and none that is live.
    let (old, live) = (T0 + Duration::from_secs(10), T0 + Duration::from_secs(3600));
    for i in 0..4_500 {
        assert!(
            store
                .remember_nonce("shop_b", &format!("old-{i}"), T0, old)
                .await
                .unwrap()
        );
    }
    for i in 0..10 {
        assert!(
            store
                .remember_nonce("shop_b", &format!("live-{i}"), T0, live)
                .await
                .unwrap()
        );
    }
    let at = old + Duration::from_secs(1);
    let purged = store.purge_nonces(at).await.unwrap();
    assert!(purged >= 4_500, "{purged}");
    assert_eq!(store.purge_nonces(at).await.unwrap(), 0);
    for i in [0, 2_222, 4_499] {
        assert!(
            store
                .remember_nonce("shop_b", &format!("old-{i}"), at, live)
                .await
                .unwrap(),
            "a lapsed nonce is free again"
        );
    }
    assert!(
        !store
            .remember_nonce("shop_b", "live-3", at, live)
            .await
            .unwrap()
    );

    // A POST's nonce travels with its claim: remembered in the same write as the key, and a
    // claim whose nonce was seen before is refused with nothing written (its key stays free).
    let with_nonce = |key: &str, nonce: &str| claim_with_nonce(key, nonce, until);
    let begun = store
        .begin_payment(with_nonce("k-n3", "n3"), payment("pay_n3", 100))
        .await
        .unwrap();
    assert!(matches!(begun, Begin::Fresh(_)));
    assert!(
        !store
            .remember_nonce("shop_a", "n3", T0, until)
            .await
            .unwrap(),
        "the claim remembered its nonce"
    );
    let replayed = store
        .begin_payment(with_nonce("k-n3b", "n3"), payment("pay_n3b", 100))
        .await;
    assert!(
        matches!(replayed, Err(StoreError::NonceReused)),
        "{replayed:?}"
    );
    assert!(store.payment(None, "pay_n3b").await.unwrap().is_none());
    let replayed = store.claim_key(with_nonce("k-n3c", "n3"), "r").await;
    assert!(
        matches!(replayed, Err(StoreError::NonceReused)),
        "{replayed:?}"
    );
    assert!(matches!(
        store
            .claim_key(with_nonce("k-n3c", "n4"), "r")
            .await
            .unwrap(),
        Begin::Fresh(())
    ));
}

async fn one_notification_applies_once_under_a_race(store: Arc<dyn Store>) {
    store
        .begin_payment(claim("k", "h"), payment("pay_n", 500))
        .await
        .unwrap();
    let inbox = InboxKey {
        provider: "wechatpay".to_owned(),
        account: "shop_a/wechat_main".to_owned(),
        dedupe_id: "notify-1".to_owned(),
    };
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (store, inbox) = (Arc::clone(&store), inbox.clone());
        tasks.push(tokio::spawn(async move {
            store
                .update_payment(
                    "pay_n",
                    Also::Inbox(inbox),
                    T0,
                    to(PaymentStatus::Succeeded),
                )
                .await
                .unwrap()
        }));
    }
    let (mut applied, mut duplicates) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Updated::Done {
                changed: true,
                record,
            } => {
                assert_eq!(record.status, PaymentStatus::Succeeded);
                applied += 1;
            }
            Updated::Duplicate => duplicates += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((applied, duplicates), (1, 9));
    assert_eq!(
        event_kinds(&store, "pay_n").await,
        ["payment.created", "payment.succeeded"]
    );
    // A different notification with the same news changes nothing and appends nothing.
    let again = InboxKey {
        dedupe_id: "notify-2".to_owned(),
        ..inbox
    };
    assert!(matches!(
        store
            .update_payment(
                "pay_n",
                Also::Inbox(again),
                T0,
                to(PaymentStatus::Succeeded)
            )
            .await
            .unwrap(),
        Updated::Done { changed: false, .. }
    ));
    assert_eq!(
        store
            .update_payment("pay_none", Also::Nothing, T0, to(PaymentStatus::Succeeded))
            .await
            .unwrap(),
        Updated::Missing
    );
}

async fn payment_changes_follow_the_state_machine(store: Arc<dyn Store>) {
    store
        .begin_payment(claim("k", "h"), payment("pay_s", 500))
        .await
        .unwrap();
    let later = T0 + Duration::from_secs(5);
    let done = store
        .update_payment("pay_s", Also::Nothing, later, to(PaymentStatus::Failed))
        .await
        .unwrap();
    let Updated::Done { record, changed } = done else {
        panic!("{done:?}")
    };
    assert!(changed);
    assert_eq!(record.status, PaymentStatus::Failed);
    assert_eq!(record.updated_at, later);
    // Money that moved is always recorded: a late success overrides the failure, and then
    // nothing moves a succeeded payment.
    let late = store
        .update_payment("pay_s", Also::Nothing, later, to(PaymentStatus::Succeeded))
        .await
        .unwrap();
    assert!(
        matches!(late, Updated::Done { changed: true, record } if record.status == PaymentStatus::Succeeded)
    );
    let back = store
        .update_payment("pay_s", Also::Nothing, later, to(PaymentStatus::Failed))
        .await
        .unwrap();
    assert!(matches!(back, Updated::Done { changed: false, .. }));
    let stored = store.payment(None, "pay_s").await.unwrap().unwrap();
    assert_eq!(stored.status, PaymentStatus::Succeeded);
    assert_eq!(stored.provider_ref.as_deref(), Some("4200000001"));
    assert_eq!(
        event_kinds(&store, "pay_s").await,
        ["payment.created", "payment.failed", "payment.succeeded"]
    );
    // Paid in the ledger's window: reconciliation sees it as paid at the late success.
    let (paid, _) = store
        .recon_ledger("shop_a", "wechat_main", T0, later + Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(paid[0].paid_at_ms, Some(later.unix_timestamp() * 1000));
}

async fn refunds_never_exceed_the_payment_under_a_race(store: Arc<dyn Store>) {
    store
        .begin_payment(claim("k", "h"), payment("pay_u", 100))
        .await
        .unwrap();
    let early = store
        .begin_refund(claim("rk0", "h"), refund("re_0", "pay_u", 10))
        .await;
    assert!(matches!(
        early,
        Err(StoreError::RefundRefused(RefundRefusal::NotPaid))
    ));
    let missing = store
        .begin_refund(claim("rk0", "h"), refund("re_0", "pay_zz", 10))
        .await;
    assert!(matches!(
        missing,
        Err(StoreError::RefundRefused(RefundRefusal::PaymentMissing))
    ));
    store
        .update_payment("pay_u", Also::Nothing, T0, to(PaymentStatus::Succeeded))
        .await
        .unwrap();
    // Eight refunds of 60 on a payment of 100 race: one fits.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .begin_refund(
                    claim(&format!("rk{i}"), "h"),
                    refund(&format!("re_{i}"), "pay_u", 60),
                )
                .await
        }));
    }
    let mut accepted = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(Begin::Fresh(r)) => accepted.push(r.id),
            Err(StoreError::RefundRefused(RefundRefusal::ExceedsPayment)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(accepted.len(), 1, "{accepted:?}");
    // A refused refund left no key behind: the key is free for a corrected request.
    let id = &accepted[0];
    let done = store
        .update_refund(id, RefundStatus::Succeeded, None, T0)
        .await
        .unwrap();
    assert!(matches!(done, Updated::Done { changed: true, .. }));
    let again = store
        .update_refund(id, RefundStatus::Succeeded, None, T0)
        .await
        .unwrap();
    assert!(matches!(again, Updated::Done { changed: false, .. }));
    let paid = store.payment(None, "pay_u").await.unwrap().unwrap();
    assert_eq!(paid.amount_refunded, 60);
    assert_eq!(
        store
            .refund(Some("shop_a"), id)
            .await
            .unwrap()
            .unwrap()
            .status,
        RefundStatus::Succeeded
    );
    assert_eq!(store.refund(Some("shop_b"), id).await.unwrap(), None);
    assert_eq!(
        event_kinds(&store, "pay_u").await,
        ["payment.created", "payment.succeeded", "payment.refunded"]
    );
    assert_eq!(
        event_kinds(&store, id).await,
        ["refund.created", "refund.succeeded"]
    );
    // Exactly the rest still fits.
    assert!(matches!(
        store
            .begin_refund(claim("rk-rest", "h"), refund("re_rest", "pay_u", 40))
            .await
            .unwrap(),
        Begin::Fresh(_)
    ));
}

async fn janitor_claims_are_disjoint_and_leased(store: Arc<dyn Store>) {
    for i in 0..30 {
        store
            .begin_payment(
                claim(&format!("k{i}"), "h"),
                payment(&format!("pay_j{i:02}"), 100),
            )
            .await
            .unwrap();
    }
    paid(&store, "pay_done", 100).await;
    store
        .begin_refund(claim("rk", "h"), refund("re_j", "pay_done", 50))
        .await
        .unwrap();
    // Not due before the first check (30 s after creation).
    let lease = T0 + Duration::from_secs(600);
    assert!(store.payments_due(T0, lease, 100).await.unwrap().is_empty());
    let now = T0 + Duration::from_secs(31);
    // Two janitors (two instances) claim at once: disjoint, and together everything open.
    let (a, b) = tokio::join!(
        store.payments_due(now, lease, 20),
        store.payments_due(now, lease, 20)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let ids_a: BTreeSet<String> = a.iter().map(|(p, _)| p.id.clone()).collect();
    let ids_b: BTreeSet<String> = b.iter().map(|(p, _)| p.id.clone()).collect();
    assert!(ids_a.is_disjoint(&ids_b), "{ids_a:?} {ids_b:?}");
    assert_eq!(ids_a.len() + ids_b.len(), 30);
    assert!(!ids_a.contains("pay_done") && !ids_b.contains("pay_done"));
    assert!(a.iter().all(|(_, checks)| *checks == 0));
    // Leased: nothing is due again until the lease ends.
    assert!(
        store
            .payments_due(now, lease, 100)
            .await
            .unwrap()
            .is_empty()
    );
    // A checked one is scheduled; the rest come back when their lease lapses.
    store
        .schedule_check(
            CheckTarget::Payment,
            "pay_j00",
            lease + Duration::from_secs(60),
        )
        .await
        .unwrap();
    let lapsed = store
        .payments_due(lease, lease + Duration::from_secs(600), 100)
        .await
        .unwrap();
    assert_eq!(lapsed.len(), 29);
    assert!(lapsed.iter().all(|(p, _)| p.id != "pay_j00"));
    let rechecked = store
        .payments_due(
            lease + Duration::from_secs(60),
            lease + Duration::from_secs(900),
            100,
        )
        .await
        .unwrap();
    assert_eq!(rechecked.len(), 1);
    assert_eq!((rechecked[0].0.id.as_str(), rechecked[0].1), ("pay_j00", 1));
    // Refunds are claimed the same way.
    let (ra, rb) = tokio::join!(
        store.refunds_due(now, lease, 10),
        store.refunds_due(now, lease, 10)
    );
    let claimed: Vec<String> = ra
        .unwrap()
        .into_iter()
        .chain(rb.unwrap())
        .map(|(r, _)| r.id)
        .collect();
    assert_eq!(claimed, ["re_j"]);
    assert!(store.refunds_due(now, lease, 10).await.unwrap().is_empty());
    // The sweep on demand sees every open payment whatever its lease.
    assert_eq!(store.payments_in_doubt(now, 100).await.unwrap().len(), 30);
    assert_eq!(store.refunds_in_doubt(now, 100).await.unwrap().len(), 1);
}

async fn webhook_claims_are_disjoint_and_logged(store: Arc<dyn Store>) {
    for i in 0..10 {
        store
            .begin_payment(
                claim(&format!("k{i}"), "h"),
                payment(&format!("pay_w{i}"), 100),
            )
            .await
            .unwrap();
    }
    let now = T0 + Duration::from_secs(1);
    let lease = now + Duration::from_secs(120);
    let (a, b) = tokio::join!(
        store.due_webhooks(now, lease, 6, 1000, &[]),
        store.due_webhooks(now, lease, 6, 1000, &[])
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut seen: Vec<i64> = a.iter().chain(&b).map(|i| i.event_seq).collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), 10, "each event claimed by exactly one worker");
    assert_eq!(a.len() + b.len(), 10);
    assert!(
        store
            .due_webhooks(now, lease, 32, 1000, &[])
            .await
            .unwrap()
            .is_empty()
    );
    let first = a.first().or(b.first()).unwrap().clone();
    assert_eq!(first.merchant_id, "shop_a");
    assert_eq!(first.attempts, 0);
    let body: serde_json::Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(body["id"], first.event_id.as_str());
    // A failure schedules the next attempt; delivery ends it; both are logged.
    let retry_at = now + Duration::from_secs(5);
    store
        .webhook_attempted(
            first.event_seq,
            now,
            false,
            Some(retry_at),
            Some("HTTP 500".into()),
        )
        .await
        .unwrap();
    let again = store
        .due_webhooks(retry_at, retry_at + Duration::from_secs(120), 32, 1000, &[])
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts, 1);
    store
        .webhook_attempted(first.event_seq, now, true, None, None)
        .await
        .unwrap();
    let record = store
        .event("shop_a", &first.event_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.attempts, 2);
    assert!(record.delivered_at.is_some());
    assert_eq!(record.next_attempt_at, None);
    assert_eq!(record.deliveries.len(), 2);
    assert!(!record.deliveries[0].delivered);
    assert_eq!(record.deliveries[0].error.as_deref(), Some("HTTP 500"));
    assert!(record.deliveries[1].delivered);
    assert_eq!(store.event("shop_b", &first.event_id).await.unwrap(), None);
    // Resending queues it once more, now, with a fresh schedule.
    assert!(
        store
            .resend_event("shop_a", &first.event_id, lease)
            .await
            .unwrap()
    );
    assert!(
        !store
            .resend_event("shop_b", &first.event_id, lease)
            .await
            .unwrap()
    );
    let resent = store
        .due_webhooks(lease, lease + Duration::from_secs(60), 32, 1000, &[])
        .await
        .unwrap();
    assert!(
        resent
            .iter()
            .any(|i| i.event_seq == first.event_seq && i.attempts == 0)
    );
    // Events of a merchant without an endpoint are parked together, each attempt logged.
    let parked: Vec<_> = a.iter().chain(&b).skip(1).take(3).cloned().collect();
    store
        .park_undeliverable(
            parked.iter().map(|i| i.event_seq).collect(),
            now,
            "no webhook configured".into(),
        )
        .await
        .unwrap();
    for item in &parked {
        let record = store
            .event("shop_a", &item.event_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.attempts, 1);
        assert_eq!((record.next_attempt_at, record.delivered_at), (None, None));
        assert_eq!(record.deliveries.len(), 1);
        assert_eq!(
            record.deliveries[0].error.as_deref(),
            Some("no webhook configured")
        );
    }
    let later = lease + Duration::from_secs(3600);
    let due = store
        .due_webhooks(later, later + Duration::from_secs(60), 32, 1000, &[])
        .await
        .unwrap();
    assert!(
        due.iter()
            .all(|i| parked.iter().all(|p| p.event_seq != i.event_seq))
    );
}

async fn webhook_claims_reach_every_merchant_past_a_backlog(store: Arc<dyn Store>) {
    // Shop A has a backlog of 40 due events; shop B one, behind all of them.
    for i in 0..40 {
        store
            .begin_payment(
                claim(&format!("k{i}"), "h"),
                payment(&format!("pay_a{i}"), 100),
            )
            .await
            .unwrap();
    }
    let mut b = payment("pay_b0", 100);
    b.merchant_id = "shop_b".to_owned();
    let mut b_claim = claim("kb", "h");
    b_claim.merchant_id = "shop_b".to_owned();
    store.begin_payment(b_claim, b).await.unwrap();
    let now = T0 + Duration::from_secs(1);
    let lease = now + Duration::from_secs(120);
    let merchants = |items: &[moongate::store::OutboxItem]| {
        let mut m: Vec<String> = items.iter().map(|i| i.merchant_id.clone()).collect();
        m.sort();
        m
    };
    // At most 4 of shop A's, and shop B's is in the same claim.
    let first = store.due_webhooks(now, lease, 8, 4, &[]).await.unwrap();
    assert_eq!(
        merchants(&first),
        ["shop_a", "shop_a", "shop_a", "shop_a", "shop_b"]
    );
    // Oldest first within a merchant.
    let a: Vec<&str> = first
        .iter()
        .filter(|i| i.merchant_id == "shop_a")
        .map(|i| i.body.as_str())
        .collect();
    assert!(a[0].contains("pay_a0") && a[3].contains("pay_a3"), "{a:?}");
    // A merchant left out (all its slots busy) is not claimed.
    let skipped = store
        .due_webhooks(now, lease, 8, 4, &["shop_a".to_owned()])
        .await
        .unwrap();
    assert!(skipped.is_empty(), "shop B's one event is leased already");
    // Shop A loses its endpoint: everything of it that is due is parked in one write (not
    // what is leased), each with its attempt logged.
    let parked = store
        .park_merchants(
            vec!["shop_a".to_owned()],
            now,
            "no webhook configured".into(),
        )
        .await
        .unwrap();
    assert_eq!(parked, 36);
    let (parked_list, leased_list) = {
        let list = store
            .event_ids(
                "shop_a",
                moongate::store::EventFilter {
                    delivery: Some(moongate::store::DeliveryStatus::Parked),
                    ..Default::default()
                },
                100,
            )
            .await
            .unwrap();
        let pending = store
            .event_ids(
                "shop_a",
                moongate::store::EventFilter {
                    delivery: Some(moongate::store::DeliveryStatus::Pending),
                    ..Default::default()
                },
                100,
            )
            .await
            .unwrap();
        (list, pending)
    };
    assert_eq!((parked_list.len(), leased_list.len()), (36, 4));
    let record = store
        .event("shop_a", &parked_list[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        record.deliveries[0].error.as_deref(),
        Some("no webhook configured")
    );
    // The leased ones come back when their lease lapses.
    let later = lease + Duration::from_secs(1);
    let back = store
        .due_webhooks(later, later + Duration::from_secs(60), 8, 4, &[])
        .await
        .unwrap();
    assert_eq!(
        merchants(&back),
        ["shop_a", "shop_a", "shop_a", "shop_a", "shop_b"]
    );
}

async fn daily_reconciliation_is_claimed_once(store: Arc<dyn Store>) {
    let claim_by = |holder: &str| DailyClaim {
        merchant_id: "shop_a".to_owned(),
        account_id: "wechat_main".to_owned(),
        day: "2026-11-19".to_owned(),
        holder: holder.to_owned(),
    };
    let lease = T0 + Duration::from_secs(900);
    let (a, b, c) = tokio::join!(
        store.claim_daily_run(claim_by("ins_a"), T0, lease),
        store.claim_daily_run(claim_by("ins_b"), T0, lease),
        store.claim_daily_run(claim_by("ins_c"), T0, lease),
    );
    let winners = [a.unwrap(), b.unwrap(), c.unwrap()];
    assert_eq!(winners.iter().filter(|w| **w).count(), 1, "{winners:?}");
    let winner = ["ins_a", "ins_b", "ins_c"][winners.iter().position(|w| *w).unwrap()];
    let loser = if winner == "ins_a" { "ins_b" } else { "ins_a" };
    // The holder may renew; another instance waits for the lease or a release.
    assert!(
        store
            .claim_daily_run(claim_by(winner), T0, lease)
            .await
            .unwrap()
    );
    assert!(
        !store
            .claim_daily_run(claim_by(loser), T0, lease)
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_daily_run(claim_by(loser), lease, lease + Duration::from_secs(900))
            .await
            .unwrap()
    );
    // Releasing someone else's claim does nothing; releasing one's own frees it.
    store.release_daily_run(claim_by(winner)).await.unwrap();
    assert!(
        !store
            .claim_daily_run(claim_by(winner), lease, lease + Duration::from_secs(900))
            .await
            .unwrap()
    );
    store.release_daily_run(claim_by(loser)).await.unwrap();
    assert!(
        store
            .claim_daily_run(claim_by(winner), lease, lease + Duration::from_secs(900))
            .await
            .unwrap()
    );
    // Another day or account is another claim.
    let mut other = claim_by("ins_z");
    other.day = "2026-11-20".to_owned();
    assert!(store.claim_daily_run(other, T0, lease).await.unwrap());
}

fn a_break(category: Category, payment_id: &str) -> Break {
    Break {
        id: String::new(),
        category,
        kind: "payment".to_owned(),
        payment_id: payment_id.to_owned(),
        refund_id: None,
        provider_txn_id: Some(format!("4200{payment_id}")),
        currency: "CNY".to_owned(),
        ledger_amount: Some(100),
        provider_amount: Some(90),
        ledger_status: Some("succeeded".to_owned()),
        provider_status: Some("SUCCESS".to_owned()),
        statement_line: Some(2),
        drift_secs: None,
        detail: "amounts differ".to_owned(),
        status: BreakStatus::Open,
        note: None,
    }
}

async fn reconciliation_runs_keep_break_identity(store: Arc<dyn Store>) {
    paid(&store, "pay_c1", 100).await;
    let day_start = T0 - Duration::from_secs(3600);
    let (payments, refunds) = store
        .recon_ledger(
            "shop_a",
            "wechat_main",
            day_start,
            T0 + Duration::from_secs(1),
        )
        .await
        .unwrap();
    assert_eq!(payments.len(), 1);
    assert_eq!(&*payments[0].id, "pay_c1");
    assert_eq!(payments[0].paid_at_ms, Some(T0.unix_timestamp() * 1000));
    assert!(refunds.is_empty());
    let (found, _) = store
        .recon_lookup(
            "shop_a",
            "wechat_main",
            vec!["pay_c1".into(), "pay_nope".into()],
            vec!["re_nope".into()],
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    for id in ["st_1", "st_2"] {
        store
            .save_statement(StatementRecord {
                id: id.to_owned(),
                merchant_id: "shop_a".to_owned(),
                account_id: "wechat_main".to_owned(),
                provider: "wechatpay".to_owned(),
                day: "2026-11-19".to_owned(),
                source: "download".to_owned(),
                sha256: "00".repeat(32),
                path: None,
                bytes: 1234,
                fetched_at: "2026-11-20T10:30:00Z".to_owned(),
            })
            .await
            .unwrap();
    }
    let run = |id: &str, statement: &str, at: OffsetDateTime| ReconRun {
        id: id.to_owned(),
        merchant_id: "shop_a".to_owned(),
        account_id: "wechat_main".to_owned(),
        day: "2026-11-19".to_owned(),
        statement_id: statement.to_owned(),
        finished_at: at,
        report: "{}".to_owned(),
    };
    let first = store
        .save_recon_run(
            run("rec_1", "st_1", T0),
            vec![
                a_break(Category::AmountMismatch, "pay_c1"),
                a_break(Category::MissingInLedger, "pay_x"),
            ],
        )
        .await
        .unwrap();
    let kept = first
        .iter()
        .find(|b| b.payment_id == "pay_c1")
        .unwrap()
        .id
        .clone();
    let gone = first
        .iter()
        .find(|b| b.payment_id == "pay_x")
        .unwrap()
        .id
        .clone();
    let noted = store
        .set_break_status(
            Some("shop_a"),
            &kept,
            BreakStatus::Ignored,
            Some("fee taken at source".into()),
            T0,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(noted.record.status, BreakStatus::Ignored);
    assert_eq!(
        store
            .set_break_status(Some("shop_b"), &kept, BreakStatus::Resolved, None, T0)
            .await
            .unwrap(),
        None
    );
    // The second run finds the same mismatch (same id, status and note kept) but not the other.
    let later = T0 + Duration::from_secs(60);
    let second = store
        .save_recon_run(
            run("rec_2", "st_2", later),
            vec![a_break(Category::AmountMismatch, "pay_c1")],
        )
        .await
        .unwrap();
    assert_eq!(second[0].id, kept);
    assert_eq!(second[0].status, BreakStatus::Ignored);
    assert_eq!(second[0].note.as_deref(), Some("fee taken at source"));
    let resolved = store.break_by_id(None, &gone).await.unwrap().unwrap();
    assert_eq!(resolved.record.status, BreakStatus::Resolved);
    assert_eq!(
        resolved.record.note.as_deref(),
        Some("no longer found by run rec_2")
    );
    let (stored_run, breaks) = store
        .recon_run(Some("shop_a"), "rec_2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored_run.finished_at, later);
    assert_eq!(breaks.len(), 1);
    assert_eq!(
        store.recon_run(Some("shop_b"), "rec_2").await.unwrap(),
        None
    );
    assert_eq!(
        store
            .latest_recon_run("shop_a", "wechat_main", "2026-11-19")
            .await
            .unwrap()
            .unwrap()
            .id,
        "rec_2"
    );
    let runs = store.recon_runs(None, 10).await.unwrap();
    assert_eq!(
        runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
        ["rec_2", "rec_1"]
    );
    let open = store
        .breaks(Some("shop_a"), Some(BreakStatus::Open), 10)
        .await
        .unwrap();
    assert!(open.is_empty(), "{open:?}");
    assert_eq!(store.breaks(None, None, 10).await.unwrap().len(), 2);
}

fn a_checkout(id: &str) -> Checkout {
    Checkout {
        id: id.to_owned(),
        token_hash: moongate::cashier::key::token_hash(&new_id("tok")),
        merchant_id: "shop_a".to_owned(),
        amount: 8800,
        currency: Currency::CNY,
        merchant_reference: "order-77".to_owned(),
        description: "Oolong".to_owned(),
        return_url: "https://shop.example/orders/77".to_owned(),
        cancel_url: None,
        methods: vec![PaymentMethod::AlipayQr, PaymentMethod::WechatNative],
        openid: None,
        metadata: Default::default(),
        expires_at: T0 + Duration::from_secs(1800),
        created_at: T0,
        payment_id: None,
        legacy_token: None,
    }
}

async fn checkout_choices_race_to_one_payment(store: Arc<dyn Store>) {
    let checkout = a_checkout("co_1");
    assert_eq!(
        store
            .begin_checkout(claim("ck", "h"), checkout.clone())
            .await
            .unwrap(),
        Begin::Fresh(checkout.clone())
    );
    assert!(matches!(
        store
            .begin_checkout(claim("ck", "h"), a_checkout("co_2"))
            .await
            .unwrap(),
        Begin::InFlight { .. }
    ));
    assert_eq!(
        store
            .checkout_by_token_hash(&checkout.token_hash)
            .await
            .unwrap(),
        Some(checkout.clone())
    );
    // A checkout from before derived tokens keeps its clear token until it expires.
    let mut legacy = a_checkout("co_legacy");
    legacy.legacy_token = Some("L".repeat(43));
    store
        .begin_checkout(claim("ck-legacy", "h"), legacy.clone())
        .await
        .unwrap();
    assert_eq!(store.forget_legacy_tokens(T0).await.unwrap(), 0);
    assert_eq!(
        store.checkout(None, "co_legacy").await.unwrap(),
        Some(legacy.clone())
    );
    let ended = T0 + Duration::from_secs(1800);
    assert_eq!(store.forget_legacy_tokens(ended).await.unwrap(), 1);
    let forgotten = store.checkout(None, "co_legacy").await.unwrap().unwrap();
    assert_eq!(forgotten.legacy_token, None);
    assert_eq!(forgotten.token_hash, legacy.token_hash);
    assert_eq!(store.checkout(Some("shop_b"), "co_1").await.unwrap(), None);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .begin_checkout_payment("co_1", None, payment(&format!("pay_k{i}"), 8800), 10)
                .await
                .unwrap()
        }));
    }
    let mut won = 0;
    for task in tasks {
        won += usize::from(task.await.unwrap());
    }
    assert_eq!(won, 1);
    let current = store
        .checkout(None, "co_1")
        .await
        .unwrap()
        .unwrap()
        .payment_id
        .unwrap();
    let opened = store.checkout_payments("co_1").await.unwrap();
    assert_eq!(opened.len(), 1);
    assert_eq!(opened[0].id, current);
    // Switching needs the current one; the limit holds.
    assert!(
        !store
            .begin_checkout_payment("co_1", None, payment("pay_k_stale", 8800), 10)
            .await
            .unwrap()
    );
    assert!(
        store
            .begin_checkout_payment("co_1", Some(&current), payment("pay_k_next", 8800), 2)
            .await
            .unwrap()
    );
    assert!(
        !store
            .begin_checkout_payment("co_1", Some("pay_k_next"), payment("pay_k_third", 8800), 2)
            .await
            .unwrap()
    );
    assert_eq!(store.checkout_payments("co_1").await.unwrap().len(), 2);
    assert_eq!(event_kinds(&store, "pay_k_next").await, ["payment.created"]);
}

async fn listing_switching_attempts_and_repairs(store: Arc<dyn Store>) {
    for i in 0..5 {
        store
            .begin_payment(
                claim(&format!("k{i}"), "h"),
                payment(&format!("pay_l{i}"), 100),
            )
            .await
            .unwrap();
    }
    let (page, more) = store.list_payments("shop_a", None, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|p| p.id.as_str()).collect::<Vec<_>>(),
        ["pay_l4", "pay_l3"]
    );
    assert!(more);
    let (rest, more) = store
        .list_payments("shop_a", Some("pay_l3"), 10)
        .await
        .unwrap();
    assert_eq!(rest.len(), 3);
    assert!(!more);
    assert!(
        store
            .list_payments("shop_b", None, 10)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    // Failover moves a pending payment once.
    let moved = store
        .switch_account(
            "pay_l0",
            "wechat_main",
            "alipay_main",
            ProviderKind::Alipay,
            T0,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (moved.account_id.as_str(), moved.provider),
        ("alipay_main", ProviderKind::Alipay)
    );
    assert_eq!(
        store
            .switch_account(
                "pay_l0",
                "wechat_main",
                "alipay_main",
                ProviderKind::Alipay,
                T0
            )
            .await
            .unwrap(),
        None
    );
    for (operation, outcome) in [("create", "unknown"), ("query", "ok")] {
        store
            .record_attempt(Attempt {
                payment_id: "pay_l1".to_owned(),
                account_id: "wechat_main".to_owned(),
                refund_id: None,
                operation,
                started_at: T0,
                elapsed_ms: 12,
                outcome: outcome.to_owned(),
            })
            .await
            .unwrap();
    }
    let attempts = store.attempts_for("pay_l1").await.unwrap();
    assert_eq!(
        attempts
            .iter()
            .map(|a| (a.operation, a.outcome.as_str()))
            .collect::<Vec<_>>(),
        [("create", "unknown"), ("query", "ok")]
    );
    // A repaired payment is stored once, already succeeded, with its event.
    let mut found = payment("pay_rep", 300);
    found.status = PaymentStatus::Succeeded;
    assert!(
        store
            .insert_repaired_payment(found.clone(), T0)
            .await
            .unwrap()
    );
    assert!(!store.insert_repaired_payment(found, T0).await.unwrap());
    assert_eq!(event_kinds(&store, "pay_rep").await, ["payment.succeeded"]);
    assert!(
        store
            .payments_due(
                T0 + Duration::from_secs(3600),
                T0 + Duration::from_secs(4000),
                100
            )
            .await
            .unwrap()
            .iter()
            .all(|(p, _)| p.id != "pay_rep")
    );
}

// Issue 17: the SQLite writer commits concurrent writes together, and answers none before its
// commit is durable.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("ledger.db")).unwrap());
    let before = store.write_stats();
    // 64 creates in flight at once: the writer takes what is queued into one transaction.
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..64 {
        let store = Arc::clone(&store);
        creates.spawn(async move {
            store
                .begin_payment(
                    claim(&format!("gc-{i}"), "h"),
                    payment(&format!("pay_gc{i}"), 100),
                )
                .await
        });
    }
    for created in creates.join_all().await {
        assert!(matches!(created.unwrap(), Begin::Fresh(_)));
    }
    let after = store.write_stats();
    let (jobs, commits) = (after.jobs - before.jobs, after.commits - before.commits);
    assert_eq!(jobs, 64);
    assert!(commits <= 16, "64 writes took {commits} commits");
    // Every one of them is in the file, as a fresh reader sees it.
    let reader = SqliteStore::open(&dir.path().join("ledger.db")).unwrap();
    for i in 0..64 {
        assert!(
            reader
                .payment(None, &format!("pay_gc{i}"))
                .await
                .unwrap()
                .is_some()
        );
    }
}

// A create alone: its nonce is written with its claim and payment, its attempt log line waits
// for its status change, and the status change carries the request's stored answer: three
// jobs in two commits, each before the caller is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_takes_two_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let before = store.write_stats();
    let later = T0 + Duration::from_secs(300);
    let created = store
        .begin_payment(
            claim_with_nonce("two", "nonce-two-commits", later),
            payment("pay_two", 100),
        )
        .await
        .unwrap();
    let Begin::Fresh(known) = created else {
        panic!("{created:?}")
    };
    let answer = moongate::store::KeyAnswer {
        merchant_id: "shop_a".to_owned(),
        key: "two".to_owned(),
        status: 201,
    };
    let paid = PaymentChange {
        status: Some(PaymentStatus::Succeeded),
        provider_ref: Some("4200000001".to_owned()),
        ..PaymentChange::default()
    };
    // The call's attempt line rides in the second write.
    let Updated::Done { record, .. } = store
        .update_known(
            &known,
            Also::Answer(answer),
            T0,
            paid,
            vec![attempt("pay_two")],
        )
        .await
        .unwrap()
    else {
        panic!("the payment is there");
    };
    let after = store.write_stats();
    assert_eq!(after.jobs - before.jobs, 2);
    assert_eq!(after.commits - before.commits, 2, "{before:?} → {after:?}");
    // All of it is durable, and a retry replays the answer that commit stored.
    let reopened = SqliteStore::open(&path).unwrap();
    assert_eq!(reopened.attempts_for("pay_two").await.unwrap().len(), 1);
    assert!(
        !reopened
            .remember_nonce("shop_a", "nonce-two-commits", T0, later)
            .await
            .unwrap(),
        "the nonce committed with the payment"
    );
    match reopened
        .begin_payment(claim("two", "h"), payment("pay_other", 100))
        .await
        .unwrap()
    {
        Begin::Replay { status, body } => {
            assert_eq!(status, 201);
            assert_eq!(body, moongate::store::answer_body(&record));
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_write_is_answered_as_done_when_its_commit_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    store
        .begin_payment(claim("ok-0", "h"), payment("pay_kept", 100))
        .await
        .unwrap();
    // Commits fail (as on a full disk): the writes are all refused, and none of them is in
    // the ledger afterwards.
    store.fail_commits(true);
    let mut attempts = tokio::task::JoinSet::new();
    for i in 0..8 {
        let store = Arc::clone(&store);
        attempts.spawn(async move {
            let result = store
                .begin_payment(
                    claim(&format!("lost-{i}"), "h"),
                    payment(&format!("pay_lost{i}"), 100),
                )
                .await;
            (i, result)
        });
    }
    let mut results: Vec<_> = attempts.join_all().await;
    results.sort_by_key(|(i, _)| *i);
    let results: Vec<_> = results.into_iter().map(|(_, r)| r).collect();
    store.fail_commits(false);
    let refused = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(refused, 8, "a failed commit was answered as done");
    let reopened = SqliteStore::open(&path).unwrap();
    for (i, result) in results.iter().enumerate() {
        let stored = reopened
            .payment(None, &format!("pay_lost{i}"))
            .await
            .unwrap();
        // Answered done ⇔ durable.
        assert_eq!(result.is_ok(), stored.is_some(), "pay_lost{i}: {result:?}");
    }
    assert!(reopened.payment(None, "pay_kept").await.unwrap().is_some());
    // The writer goes on after a failed commit.
    store
        .begin_payment(claim("after", "h"), payment("pay_after", 100))
        .await
        .unwrap();
}
