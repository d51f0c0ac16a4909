//! The strict Alipay sandbox in certificate mode, driven with requests the adapter signs: the
//! SNs it insists on (with Alipay's own error codes), the certificate it names in answers, and
//! a rotation of Alipay's certificate as the adapter sees it. Also the ISV authorisation token
//! it insists on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{APP_ID, CERT_APP_ID, alipay_sn, fixtures};
use moongate::outbound::Outbound;
use moongate_adapter_alipay::{AccountKeys, AlipayAdapter, AlipayKeys};
use moongate_contract::{
    AdapterError, CallContext, CreatePayment, Currency, HttpRequest, HttpResponse, Money,
    PaymentAdapter, PaymentMethod, PaymentStatus, Prepared,
};
use moongate_testkit::sandbox::{self, standard::Standard};
use serde_json::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(fixtures().join(path)).unwrap()
}

const CERTS: &str = "alipay/certs/sandbox";

/// An adapter for `app_id` at `gateway`: certificate mode with `root` and the given Alipay
/// certificates, or public-key mode when `alipay_certs` is empty.
fn adapter(app_id: &str, gateway: &str, root: &str, alipay_certs: &[&str]) -> AlipayAdapter {
    let certs: Vec<String> = alipay_certs
        .iter()
        .map(|name| read(&format!("{CERTS}/{name}")))
        .collect();
    let app_cert = read(&format!("{CERTS}/app_cert_public_key.crt"));
    let root = read(root);
    let public = read("keys/sandbox-alipay-public-key.pem");
    AlipayAdapter::new(&AccountKeys {
        app_id,
        gateway_url: gateway,
        consent_url: None,
        seller_id: None,
        app_private_key: &read("keys/nodejs-sdk-app-private-key.pem"),
        alipay: if certs.is_empty() {
            AlipayKeys::PublicKey(&public)
        } else {
            AlipayKeys::Certificates {
                app_cert: &app_cert,
                alipay_certs: certs.iter().map(String::as_str).collect(),
                alipay_root_cert: &root,
            }
        },
    })
    .unwrap()
}

fn order(no: &str) -> CreatePayment {
    let now = time::OffsetDateTime::now_utc();
    CreatePayment {
        created_at: now,
        provider_order_id: no.into(),
        amount: Money::new(100, Currency::CNY),
        method: PaymentMethod::AlipayQr,
        subject: "Tea".into(),
        description: None,
        return_url: None,
        notify_url: "http://127.0.0.1:9/notify".into(),
        expires_at: now + time::Duration::minutes(30),
        payer: Default::default(),
    }
}

fn cx() -> CallContext {
    CallContext {
        now: time::OffsetDateTime::now_utc(),
        nonce: "n".repeat(32),
    }
}

struct Sandbox {
    base: String,
    http: Outbound,
}

impl Sandbox {
    async fn start() -> Sandbox {
        let standard = Standard::load(&fixtures(), 1000).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        sandbox::start_on(standard.alipay, listener).await.unwrap();
        Sandbox {
            base: format!("http://{addr}"),
            http: Outbound::new(Duration::from_secs(1), Duration::from_secs(10)).unwrap(),
        }
    }

    fn gateway(&self) -> String {
        format!("{}/gateway.do", self.base)
    }

    async fn send(&self, request: &HttpRequest) -> HttpResponse {
        self.http.send(request).await.unwrap()
    }

    /// Sends `adapter`'s precreate of `no`; returns the answer and its JSON.
    async fn precreate(&self, adapter: &AlipayAdapter, no: &str) -> (HttpResponse, Value) {
        let Prepared::Send(request) = adapter.prepare_create(&cx(), &order(no)).unwrap() else {
            panic!("a QR order is a server call")
        };
        let answer = self.send(&request).await;
        let json = serde_json::from_slice(&answer.body).unwrap();
        (answer, json)
    }

    async fn rotate(&self) -> u16 {
        let request = HttpRequest {
            method: moongate_contract::HttpMethod::Post,
            url: format!("{}/sandbox/rotate-certificate", self.base),
            headers: vec![],
            body: vec![],
        };
        self.send(&request).await.status
    }
}

fn sub_code(answer: &Value) -> &str {
    answer["alipay_trade_precreate_response"]["sub_code"]
        .as_str()
        .unwrap_or("")
}

#[tokio::test]
async fn certificate_mode_requests_must_carry_the_sns_alipay_knows() {
    let sb = Sandbox::start().await;
    let root = format!("{CERTS}/alipay_root_cert.crt");
    let current = ["alipay_cert_public_key_rsa2.crt"];

    let good = adapter(CERT_APP_ID, &sb.gateway(), &root, &current);
    let (answer, json) = sb.precreate(&good, "CERT_1").await;
    assert_eq!(
        json["alipay_trade_precreate_response"]["code"], "10000",
        "{json}"
    );
    assert_eq!(json["alipay_cert_sn"], alipay_sn("alipay"));
    assert!(matches!(
        good.parse_create(&cx(), &order("CERT_1"), &answer),
        Ok(PaymentStatus::AwaitingPayment { .. })
    ));

    // Public-key mode for an app in certificate mode: Alipay holds no key to check with.
    let no_sns = adapter(CERT_APP_ID, &sb.gateway(), &root, &[]);
    let (_, json) = sb.precreate(&no_sns, "CERT_2").await;
    assert_eq!(sub_code(&json), "isv.missing-signature-config", "{json}");

    // Alipay's real root bundle is not the one this app's certificate chains to.
    let other_root = adapter(
        CERT_APP_ID,
        &sb.gateway(),
        "alipay/certs/nodejs-sdk-alipayRootCert.crt",
        &current,
    );
    let (_, json) = sb.precreate(&other_root, "CERT_3").await;
    assert_eq!(sub_code(&json), "isv.invalid-alipay-root-cert-sn", "{json}");

    // An app in public-key mode has no certificate.
    let not_registered = adapter(APP_ID, &sb.gateway(), &root, &current);
    let (_, json) = sb.precreate(&not_registered, "CERT_4").await;
    assert_eq!(sub_code(&json), "isv.app-cert-not-exist", "{json}");

    // Another app certificate's SN.
    let Prepared::Send(mut request) = good.prepare_create(&cx(), &order("CERT_5")).unwrap() else {
        panic!()
    };
    request.url = request
        .url
        .replace(&alipay_sn("app"), "00000000000000000000000000000000");
    let json: Value = serde_json::from_slice(&sb.send(&request).await.body).unwrap();
    assert_eq!(sub_code(&json), "isv.app-cert-not-exist", "{json}");
}

#[tokio::test]
async fn after_a_rotation_only_an_app_holding_the_next_certificate_accepts_answers() {
    let sb = Sandbox::start().await;
    let root = format!("{CERTS}/alipay_root_cert.crt");
    let current_only = adapter(
        CERT_APP_ID,
        &sb.gateway(),
        &root,
        &["alipay_cert_public_key_rsa2.crt"],
    );
    let both = adapter(
        CERT_APP_ID,
        &sb.gateway(),
        &root,
        &[
            "alipay_cert_public_key_rsa2.crt",
            "alipay_cert_public_key_rsa2_next.crt",
        ],
    );
    assert_eq!(sb.rotate().await, 200);
    // There is no certificate after the next one.
    assert_eq!(sb.rotate().await, 409);

    let (answer, json) = sb.precreate(&both, "ROT_1").await;
    assert_eq!(json["alipay_cert_sn"], alipay_sn("alipay-next"));
    assert!(matches!(
        both.parse_create(&cx(), &order("ROT_1"), &answer),
        Ok(PaymentStatus::AwaitingPayment { .. })
    ));
    // The request was fine (Alipay created the order); the answer is what cannot be trusted.
    let (answer, json) = sb.precreate(&current_only, "ROT_2").await;
    assert_eq!(
        json["alipay_trade_precreate_response"]["code"], "10000",
        "{json}"
    );
    let refused = current_only.parse_create(&cx(), &order("ROT_2"), &answer);
    assert!(
        matches!(&refused, Err(AdapterError::Protocol(m)) if m.contains(&alipay_sn("alipay-next"))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn an_isv_call_with_a_token_no_merchant_granted_is_refused() {
    let sb = Sandbox::start().await;
    let isv = AlipayAdapter::new(&AccountKeys {
        app_id: APP_ID,
        gateway_url: &sb.gateway(),
        consent_url: None,
        seller_id: None,
        app_private_key: &read("keys/nodejs-sdk-app-private-key.pem"),
        alipay: AlipayKeys::PublicKey(&read("keys/sandbox-alipay-public-key.pem")),
    })
    .unwrap()
    .for_authorisation(
        &moongate_adapter_alipay::Authorisation {
            auth_app_id: "2021000122679999",
            app_auth_token: moongate_contract::TokenSlot::new(Some(
                moongate_contract::Secret::new("202612BBnot-granted".to_string()),
            )),
        },
        None,
    );
    let (answer, json) = sb.precreate(&isv, "ISV_1").await;
    assert_eq!(
        json["alipay_trade_precreate_response"]["code"], "20001",
        "{json}"
    );
    assert_eq!(sub_code(&json), "aop.invalid-app-auth-token", "{json}");
    assert!(matches!(
        isv.parse_create(&cx(), &order("ISV_1"), &answer),
        Err(AdapterError::Unauthorised { .. })
    ));
}
