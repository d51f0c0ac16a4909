//! The conformance kit: one generic suite every adapter runs against its strict sandbox, through
//! the real gateway. What a provider offers comes from its declared facts (methods, payer
//! needs, payment-code formats, cashier methods) and its account's capabilities, never from
//! this file: a new provider, or a new mode of one (certificates, partner), joins with one line
//! in `conformance!` below (and its sandbox and account in the harness, `Harness::provider`).
//!
//! Per provider: create with every method it declares, query, close, refund and refund query;
//! notifications accepted, duplicated, forged, for an unknown order and with another amount;
//! a statement round trip; and every sandbox fault mode left `unknown`, never paid or failed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Harness;
use moongate::reconcile::Category;
use moongate::reconcile::run::{RunRequest, Source, reconcile};
use moongate::registry;
use moongate_contract::statement::format_day;
use moongate_contract::{
    CallContext, CreatePayment, HttpResponse, Money, Operation, Payer, PayerField, PaymentMethod,
    Prepared, ProviderKind,
};
use serde_json::{Value, json};
use time::OffsetDateTime;

/// One line per provider.
macro_rules! conformance {
    ($($name:ident => $mode:expr),+ $(,)?) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test]
                async fn creates_queries_and_closes_with_every_declared_method() {
                    create_query_close($mode).await;
                }

                #[tokio::test]
                async fn notifications_accepted_once_and_forgeries_refused() {
                    notifications($mode).await;
                }

                #[tokio::test]
                async fn notifications_for_unknown_orders_or_other_amounts_are_refused() {
                    unknown_order_and_other_amount($mode).await;
                }

                #[tokio::test]
                async fn a_lost_notification_is_made_good_by_the_query() {
                    lost_notification($mode).await;
                }

                #[tokio::test]
                async fn refunds_and_refund_queries() {
                    refunds($mode).await;
                }

                #[tokio::test]
                async fn a_statement_round_trip_matches_the_ledger() {
                    statement_round_trip($mode).await;
                }

                #[tokio::test]
                async fn every_sandbox_fault_leaves_the_outcome_unknown() {
                    faults($mode).await;
                }
            }
        )+

        #[test]
        fn every_provider_is_in_the_kit() {
            let covered = [$($mode.kind),+];
            for kind in ProviderKind::ALL {
                assert!(covered.contains(kind), "{kind} is not in the conformance kit");
            }
        }
    };
}

/// What the kit runs against: a provider, in one of its modes, as one harness account.
#[derive(Clone, Copy, Debug)]
struct Mode {
    kind: ProviderKind,
    merchant: &'static str,
    account: &'static str,
}

const fn mode(kind: ProviderKind, merchant: &'static str, account: &'static str) -> Mode {
    Mode {
        kind,
        merchant,
        account,
    }
}

conformance! {
    // Alipay: public-key mode; certificate mode (公钥证书模式); an ISV-authorised merchant.
    alipay => mode(ProviderKind::Alipay, "shop_a", "alipay_main"),
    alipay_certificates => mode(ProviderKind::Alipay, "shop_e", "alipay_main"),
    alipay_isv => mode(ProviderKind::Alipay, "shop_f", "alipay_isv"),
    // WeChat Pay: public key and platform certificate (migrating); certificate mode only; a
    // service provider's sub-merchant.
    wechatpay => mode(ProviderKind::WechatPay, "shop_a", "wechat_main"),
    wechatpay_certificates => mode(ProviderKind::WechatPay, "shop_b", "wechat_main"),
    wechatpay_partner => mode(ProviderKind::WechatPay, "shop_f", "wechat_sub"),
    unionpay => mode(ProviderKind::UnionPay, "shop_a", "unionpay_main"),
}

/// Whether the provider's harness account declares `operation`. An operation it leaves out
/// must be refused by the API before any provider call (the kit checks that instead).
fn declares(h: &Harness, mode: Mode, operation: Operation) -> bool {
    h.gateway.gateway.config().merchants[mode.merchant]
        .account(mode.account)
        .unwrap()
        .adapter
        .capabilities()
        .supports(operation)
}

/// A code in the provider's declared payment-code format that the sandboxes pay at once (they
/// keep codes ending in 0000 and 9999 for the password and no-funds cases).
fn payment_code(kind: ProviderKind, method: PaymentMethod) -> String {
    let format = registry::facts(kind)
        .method(method)
        .and_then(|m| m.payment_code)
        .unwrap();
    let mut code = format!("{:02}", format.prefix_from);
    let mut digit = 1;
    while code.len() < format.min_len {
        code.push(char::from(b'0' + digit));
        digit = digit % 9 + 1;
    }
    assert!(format.matches(&code), "{code}");
    code
}

/// A create body for `method`, with every payer detail its provider says it needs.
fn create_body(
    kind: ProviderKind,
    account: &str,
    method: PaymentMethod,
    amount: i64,
    reference: &str,
) -> Value {
    let facts = registry::facts(kind).method(method).unwrap();
    let mut payer = serde_json::Map::new();
    for (field, _) in facts.payer {
        let value = match field {
            // The payer's id under the app, in the shape its wallet gives (the Alipay
            // harness apps are of the 2088 user-id generation).
            PayerField::Openid if kind == ProviderKind::Alipay => "2088102177846875".to_owned(),
            PayerField::Openid => "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".to_owned(),
            PayerField::ClientIp => "203.0.113.7".to_owned(),
            PayerField::PaymentCode => payment_code(kind, method),
        };
        payer.insert(
            field.param().trim_start_matches("payer.").to_owned(),
            value.into(),
        );
    }
    let mut body = json!({
        "amount": amount, "currency": "CNY", "method": method.as_str(),
        "merchant_reference": reference, "description": "Conformance tea",
        "account": account,
    });
    if !payer.is_empty() {
        body["payer"] = Value::Object(payer);
    }
    if facts.needs_return_url {
        body["return_url"] = json!("https://shop.example/back");
    }
    body
}

/// The methods the provider declares that its harness account serves.
fn served_methods(h: &Harness, mode: Mode) -> Vec<PaymentMethod> {
    let kind = mode.kind;
    let config = h.gateway.gateway.config();
    let capabilities = config.merchants[mode.merchant]
        .account(mode.account)
        .unwrap()
        .adapter
        .capabilities();
    let methods: Vec<PaymentMethod> = registry::facts(kind)
        .methods
        .iter()
        .map(|m| m.method)
        .filter(|m| capabilities.supports_method(*m))
        .collect();
    assert!(!methods.is_empty(), "{kind} serves no method");
    methods
}

/// A method the shopper pays by scanning a code (the provider's first desktop cashier method).
fn scan_method(kind: ProviderKind) -> PaymentMethod {
    registry::facts(kind).wallet.cashier.desktop[0]
}

async fn create(h: &Harness, mode: Mode, method: PaymentMethod, amount: i64, key: &str) -> Value {
    let (kind, account) = (mode.kind, mode.account);
    let (status, payment) = h
        .create_with(
            h.merchant(mode.merchant),
            create_body(kind, account, method, amount, key),
            key,
        )
        .await;
    assert_eq!(status, 201, "{kind} {method:?}: {payment}");
    assert_eq!(payment["provider"]["account"], account, "{payment}");
    payment
}

fn id_of(payment: &Value) -> String {
    payment["id"].as_str().unwrap().to_owned()
}

async fn pay(h: &Harness, mode: Mode, id: &str, notify: bool) {
    let (sandbox, _) = h.provider(mode.kind);
    let paid = h
        .control(
            sandbox,
            "/sandbox/pay",
            json!({"out_trade_no": id, "notify": notify}),
        )
        .await;
    assert_eq!(paid.status, 200, "{}", String::from_utf8_lossy(&paid.body));
}

async fn attempts(h: &Harness, id: &str) -> Vec<(String, String)> {
    h.gateway
        .gateway
        .store
        .attempts_for(id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.operation.to_owned(), a.outcome))
        .collect()
}

/// The notifications the sandbox sent for an order, once `count` have had an answer.
async fn sent(h: &Harness, sandbox: SocketAddr, order: &str, count: usize) -> Vec<Value> {
    for _ in 0..100 {
        let sent = h.sent(sandbox, order).await;
        if sent.len() >= count && sent.iter().all(|n| n["attempts"].as_u64() >= Some(1)) {
            return sent;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the sandbox never delivered {count} notification(s) for {order}");
}

async fn recheck(h: &Harness) {
    h.gateway
        .gateway
        .recheck_once(Duration::ZERO)
        .await
        .unwrap();
}

async fn create_query_close(mode: Mode) {
    let h = Harness::start().await;
    for (index, method) in served_methods(&h, mode).into_iter().enumerate() {
        let key = format!("c{index}");
        let payment = create(&h, mode, method, 1200 + i64::try_from(index).unwrap(), &key).await;
        let id = id_of(&payment);
        assert_eq!(payment["method"], method.as_str());
        if registry::is_payment_code(method) {
            // A code the sandbox pays at once: the charge itself says paid, or (where the
            // provider only accepts the charge, as UnionPay does) the payment follows it to paid.
            if payment["status"] != "succeeded" {
                assert_eq!(payment["status"], "pending", "{method:?}: {payment}");
                h.wait_for(h.merchant(mode.merchant), &id, "succeeded")
                    .await;
            }
            continue;
        }
        assert_eq!(
            payment["status"], "requires_action",
            "{method:?}: {payment}"
        );
        assert!(payment["next_action"].is_object(), "{method:?}: {payment}");
        // Query: the provider still waits for the shopper.
        recheck(&h).await;
        let (_, queried) = h
            .get(h.merchant(mode.merchant), &format!("/v1/payments/{id}"))
            .await;
        assert_eq!(
            queried["status"], "requires_action",
            "{method:?}: {queried}"
        );
        let calls = attempts(&h, &id).await;
        assert!(
            calls
                .iter()
                .any(|(op, outcome)| op == "query" && outcome.starts_with("answered")),
            "{method:?}: {calls:?}"
        );
        // Close, or a refusal where the provider has none, which leaves the payment as it is.
        let (status, canceled) = h
            .post(
                h.merchant(mode.merchant),
                &format!("/v1/payments/{id}/cancel"),
                "",
                &format!("{key}-x"),
            )
            .await;
        if !declares(&h, mode, Operation::Close) {
            assert_eq!(status, 400, "{method:?}: {canceled}");
            assert_eq!(canceled["error"]["code"], "payment_not_cancelable");
            let (_, after) = h
                .get(h.merchant(mode.merchant), &format!("/v1/payments/{id}"))
                .await;
            assert_eq!(after["status"], "requires_action", "{after}");
            continue;
        }
        assert_eq!(status, 200, "{method:?}: {canceled}");
        assert_eq!(canceled["status"], "canceled", "{method:?}: {canceled}");
    }
}

async fn notifications(mode: Mode) {
    let kind = mode.kind;
    let h = Harness::start().await;
    let (sandbox, _) = h.provider(mode.kind);
    let payment = create(&h, mode, scan_method(kind), 880, "n1").await;
    let id = id_of(&payment);
    pay(&h, mode, &id, true).await;
    h.wait_for(h.merchant(mode.merchant), &id, "succeeded")
        .await;
    let delivered = sent(&h, sandbox, &id, 1).await;
    assert_eq!(delivered[0]["acknowledged"], true, "{delivered:?}");
    let succeeded = |kinds: Vec<String>| kinds.iter().filter(|k| *k == "payment.succeeded").count();
    assert_eq!(succeeded(h.event_kinds(&id).await), 1);
    // A duplicate is acknowledged and changes nothing.
    let resent = h
        .control(sandbox, "/sandbox/resend", json!({"out_trade_no": id}))
        .await;
    assert_eq!(resent.status, 200);
    assert_eq!(succeeded(h.event_kinds(&id).await), 1);
    // A forgery (altered after signing) is not acknowledged.
    let events = h.event_kinds(&id).await;
    let forged = h
        .control(sandbox, "/sandbox/forge", json!({"out_trade_no": id}))
        .await;
    assert_eq!(
        forged.status,
        200,
        "{}",
        String::from_utf8_lossy(&forged.body)
    );
    let answer: Value = serde_json::from_slice(&forged.body).unwrap();
    assert_eq!(answer["acknowledged"], false, "a forgery was acknowledged");
    assert_eq!(h.event_kinds(&id).await, events);
}

/// Creates an order at the sandbox behind the gateway's back, through the account's own
/// adapter, notifying the gateway's notification URL for that account.
async fn order_at_sandbox(h: &Harness, mode: Mode, order_id: &str, amount: i64) {
    let kind = mode.kind;
    let gateway = &h.gateway.gateway;
    let config = gateway.config();
    let account = config.merchants[mode.merchant]
        .account(mode.account)
        .unwrap();
    let request = CreatePayment {
        provider_order_id: order_id.to_owned(),
        amount: Money::new(amount, moongate_contract::Currency::CNY),
        method: scan_method(kind),
        subject: "Conformance tea".to_owned(),
        description: None,
        return_url: None,
        notify_url: gateway.notify_url(mode.merchant, account),
        expires_at: OffsetDateTime::now_utc() + time::Duration::hours(1),
        payer: Payer::default(),
        created_at: OffsetDateTime::now_utc(),
    };
    let cx = CallContext {
        now: OffsetDateTime::now_utc(),
        nonce: "conformance0000000000000000000000"
            .chars()
            .take(32)
            .collect(),
    };
    let Prepared::Send(call) = account.adapter.prepare_create(&cx, &request).unwrap() else {
        panic!("a scanned code is created at the provider");
    };
    let answer: HttpResponse = h.http.send(&call).await.unwrap();
    account
        .adapter
        .parse_create(&cx, &request, &answer)
        .unwrap();
}

async fn unknown_order_and_other_amount(mode: Mode) {
    let kind = mode.kind;
    let h = Harness::start().await;
    let (sandbox, _) = h.provider(mode.kind);
    // An order the ledger has never seen: verified, not recorded, not acknowledged.
    let stranger = format!("pay_conformance{}", kind.as_str());
    order_at_sandbox(&h, mode, &stranger, 500).await;
    pay(&h, mode, &stranger, true).await;
    let delivered = sent(&h, sandbox, &stranger, 1).await;
    assert_eq!(delivered[0]["acknowledged"], false, "{delivered:?}");
    assert!(h.event_kinds(&stranger).await.is_empty());

    // A payment whose create never reached the provider (a 500 before it acted), then an
    // order under its number for another amount, paid: the notification is not recorded.
    let fault = h
        .control(
            sandbox,
            "/sandbox/fault",
            json!({"mode": "http_500", "count": 1}),
        )
        .await;
    assert_eq!(fault.status, 204);
    let payment = create(&h, mode, scan_method(kind), 700, "m1").await;
    assert_eq!(payment["status"], "unknown", "{payment}");
    let id = id_of(&payment);
    order_at_sandbox(&h, mode, &id, 701).await;
    pay(&h, mode, &id, true).await;
    let delivered = sent(&h, sandbox, &id, 1).await;
    assert_eq!(delivered[0]["acknowledged"], false, "{delivered:?}");
    let (_, after) = h
        .get(h.merchant(mode.merchant), &format!("/v1/payments/{id}"))
        .await;
    assert_eq!(after["status"], "unknown", "{after}");
}

async fn lost_notification(mode: Mode) {
    let kind = mode.kind;
    let h = Harness::start().await;
    let payment = create(&h, mode, scan_method(kind), 990, "l1").await;
    let id = id_of(&payment);
    pay(&h, mode, &id, false).await;
    let (_, before) = h
        .get(h.merchant(mode.merchant), &format!("/v1/payments/{id}"))
        .await;
    assert_eq!(before["status"], "requires_action");
    recheck(&h).await;
    h.wait_for(h.merchant(mode.merchant), &id, "succeeded")
        .await;
}

async fn refunds(mode: Mode) {
    let kind = mode.kind;
    let h = Harness::start().await;
    let payment = create(&h, mode, scan_method(kind), 1000, "r1").await;
    let id = id_of(&payment);
    pay(&h, mode, &id, true).await;
    h.wait_for(h.merchant(mode.merchant), &id, "succeeded")
        .await;
    let (status, refund) = h
        .post(
            h.merchant(mode.merchant),
            &format!("/v1/payments/{id}/refunds"),
            r#"{"amount": 300}"#,
            "r1-refund",
        )
        .await;
    if !declares(&h, mode, Operation::Refund) {
        assert_eq!(status, 400, "{refund}");
        assert_eq!(refund["error"]["code"], "payment_not_refundable");
        return;
    }
    assert_eq!(status, 201, "{refund}");
    assert!(
        ["pending", "succeeded"].contains(&refund["status"].as_str().unwrap()),
        "{refund}"
    );
    let refund_id = refund["id"].as_str().unwrap().to_owned();
    // The refund query (the janitor's) settles it.
    let mut last = Value::Null;
    for _ in 0..100 {
        recheck(&h).await;
        let (_, current) = h
            .get(
                h.merchant(mode.merchant),
                &format!("/v1/refunds/{refund_id}"),
            )
            .await;
        if current["status"] == "succeeded" {
            last = current;
            break;
        }
        last = current;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last["status"], "succeeded", "{last}");
    // More than what is left is refused before the provider is asked.
    let (status, refused) = h
        .post(
            h.merchant(mode.merchant),
            &format!("/v1/payments/{id}/refunds"),
            r#"{"amount": 701}"#,
            "r1-over",
        )
        .await;
    assert_eq!(status, 400, "{refused}");
}

/// The provider's statement day of now (UnionPay's turns at 23:00 Beijing time).
fn statement_day(kind: ProviderKind) -> time::Date {
    registry::facts(kind)
        .wallet
        .statement_day
        .day_of(OffsetDateTime::now_utc())
}

async fn statement_round_trip(mode: Mode) {
    let kind = mode.kind;
    let h = Harness::start().await;
    let (sandbox, account) = (h.provider(mode.kind).0, mode.account);
    if !declares(&h, mode, Operation::Statement) {
        let refused = reconcile(
            &h.gateway.gateway,
            RunRequest {
                merchant_id: mode.merchant.to_owned(),
                account_id: account.to_owned(),
                day: statement_day(kind),
                source: Source::Download,
            },
            None,
        )
        .await;
        assert!(
            refused.is_err(),
            "{kind}: a statement without the operation"
        );
        return;
    }
    let payment = create(&h, mode, scan_method(kind), 1800, "s1").await;
    let id = id_of(&payment);
    pay(&h, mode, &id, true).await;
    h.wait_for(h.merchant(mode.merchant), &id, "succeeded")
        .await;
    // The sandboxes refuse the current day, as the providers do: let the day end.
    let today = statement_day(kind);
    let tomorrow = format_day(today.next_day().unwrap());
    let clock = h
        .control(
            sandbox,
            "/sandbox/statement-clock",
            json!({"today": tomorrow}),
        )
        .await;
    assert_eq!(clock.status, 204);
    let report = reconcile(
        &h.gateway.gateway,
        RunRequest {
            merchant_id: mode.merchant.to_owned(),
            account_id: account.to_owned(),
            day: today,
            source: Source::Download,
        },
        None,
    )
    .await
    .unwrap();
    assert_eq!(report.count(Category::Matched), 1, "{:?}", report.summary);
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
}

async fn faults(mode: Mode) {
    let kind = mode.kind;
    // A short call timeout, so that unanswered calls end quickly.
    let h = Harness::start_with_timeout(600).await;
    let (sandbox, _) = h.provider(mode.kind);
    let faults = [
        ("garbage", "unknown"),
        ("http_500", "unknown"),
        ("timeout", "unknown"),
        ("bad_signature", "unknown"),
        ("drop_after_create", "unknown"),
        ("slow", "requires_action"),
    ];
    for (index, (fault_mode, expected)) in faults.into_iter().enumerate() {
        let fault = h
            .control(
                sandbox,
                "/sandbox/fault",
                json!({"mode": fault_mode, "count": 1, "delay_ms": 100}),
            )
            .await;
        assert_eq!(fault.status, 204, "{fault_mode}");
        let key = format!("f{index}");
        let payment = create(&h, mode, scan_method(kind), 600, &key).await;
        assert_eq!(payment["status"], expected, "{fault_mode}: {payment}");
        let calls = attempts(&h, &id_of(&payment)).await;
        let (operation, outcome) = &calls[0];
        assert_eq!(operation, "create");
        if expected == "unknown" {
            // Sent, and the provider may have acted: never "not sent", never a refusal.
            assert!(
                !outcome.contains("not sent") && !outcome.starts_with("answered"),
                "{fault_mode}: {outcome}"
            );
        }
    }
}
