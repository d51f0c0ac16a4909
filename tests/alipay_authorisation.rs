//! Application authorisation against the strict Alipay sandbox, with the adapter's own calls:
//! the merchant's consent page and its single-use `app_auth_code`, the token exchange and
//! refresh (`alipay.open.auth.token.app`), and a revoked authorisation refusing every call.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{APP_ID, Harness, fixtures};
use moongate_adapter_alipay::{AccountKeys, AlipayAdapter, AlipayKeys, Authorisation};
use moongate_contract::{
    AdapterError, Authorising, CallContext, CreatePayment, Currency, Grant, Granted, HttpMethod,
    HttpRequest, Money, Payer, PaymentAdapter, PaymentMethod, PaymentStatus, Prepared,
};
use time::OffsetDateTime;

const MERCHANT_APP: &str = "2021000122677777";

fn isv(h: &Harness) -> AlipayAdapter {
    let keys = fixtures().join("keys");
    let read = |name: &str| std::fs::read_to_string(keys.join(name)).unwrap();
    let public = read("sandbox-alipay-public-key.pem");
    AlipayAdapter::new(&AccountKeys {
        app_id: APP_ID,
        gateway_url: &format!("http://{}/gateway.do", h.sandbox_addr),
        consent_url: Some(&format!(
            "http://{}/oauth2/appToAppAuth.htm",
            h.sandbox_addr
        )),
        seller_id: None,
        app_private_key: &read("nodejs-sdk-app-private-key.pem"),
        alipay: AlipayKeys::PublicKey(&public),
    })
    .unwrap()
}

fn cx() -> CallContext {
    CallContext {
        now: OffsetDateTime::now_utc(),
        nonce: "00000000000000000000000000000000".to_owned(),
    }
}

async fn exchange(
    h: &Harness,
    isv: &AlipayAdapter,
    grant: Grant<'_>,
) -> Result<Granted, AdapterError> {
    let request = isv.prepare_grant(&cx(), grant).unwrap();
    let answer = h.http.send(&request).await.unwrap();
    isv.parse_grant(&answer)
}

/// A QR order for the merchant, by the ISV with `token`.
async fn order(
    h: &Harness,
    isv: &AlipayAdapter,
    token: &str,
    no: &str,
) -> Result<PaymentStatus, AdapterError> {
    let merchant = isv.for_authorisation(
        &Authorisation {
            auth_app_id: MERCHANT_APP,
            app_auth_token: moongate_contract::TokenSlot::new(Some(
                moongate_contract::Secret::new(token.to_string()),
            )),
        },
        None,
    );
    let request = CreatePayment {
        provider_order_id: no.to_owned(),
        amount: Money::new(990, Currency::CNY),
        method: PaymentMethod::AlipayQr,
        subject: "Tea".to_owned(),
        description: None,
        return_url: None,
        notify_url: "http://127.0.0.1:9/notify".to_owned(),
        expires_at: OffsetDateTime::now_utc() + time::Duration::hours(1),
        payer: Payer::default(),
        created_at: OffsetDateTime::now_utc(),
    };
    let Prepared::Send(call) = merchant.prepare_create(&cx(), &request).unwrap() else {
        panic!("a QR order is sent");
    };
    let answer = h.http.send(&call).await.unwrap();
    merchant.parse_create(&cx(), &request, &answer)
}

fn refused_with(result: Result<impl std::fmt::Debug, AdapterError>, sub_code: &str) {
    match result {
        // A lost token is told apart (the core reports the authorisation); others are refusals.
        Err(AdapterError::Unauthorised { code, .. }) if sub_code.contains("app-auth-token") => {
            assert_eq!(code, sub_code)
        }
        Err(AdapterError::Rejected { code, .. }) if !sub_code.contains("app-auth-token") => {
            assert_eq!(code, sub_code)
        }
        other => panic!("expected a refusal {sub_code}, got {other:?}"),
    }
}

async fn get(h: &Harness, url: &str) -> (u16, String) {
    let answer = h.http_get(url).await;
    (
        answer.status,
        String::from_utf8_lossy(&answer.body).into_owned(),
    )
}

#[tokio::test]
async fn a_merchant_authorises_the_isv_which_exchanges_refreshes_and_loses_the_token() {
    let h = Harness::start().await;
    let isv = isv(&h);
    let consent = format!("http://{}/oauth2/appToAppAuth.htm", h.sandbox_addr);
    let callback = "http://127.0.0.1:9/authorised";
    let url = isv.consent_url(callback, "st-0123456789");
    assert!(
        url.starts_with(&format!("{consent}?app_id={APP_ID}&redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fauthorised&state=st-0123456789")),
        "{url}"
    );
    let (status, page) = get(&h, &url).await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("name=merchant_app_id"), "{page}");
    // An app the sandbox does not know, a redirect that is not https (nor loopback http).
    let (status, _) = get(&h, &url.replace(APP_ID, "2021000000000000")).await;
    assert_eq!(status, 400);
    let (status, _) = get(&h, &isv.consent_url("ftp://shop.example/cb", "s")).await;
    assert_eq!(status, 400);

    // The merchant consents: back to the callback with a code and the state.
    let form = format!(
        "app_id={APP_ID}&redirect_uri={}&state=st-0123456789&merchant_app_id={MERCHANT_APP}",
        "http%3A%2F%2F127.0.0.1%3A9%2Fauthorised"
    );
    let consented = h
        .http
        .send(&HttpRequest {
            method: HttpMethod::Post,
            url: consent.clone(),
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body: form.into_bytes(),
        })
        .await
        .unwrap();
    assert_eq!(consented.status, 302);
    let location = common::header(&consented, "location").unwrap().to_owned();
    let back = location.strip_prefix(&format!("{callback}?")).unwrap();
    let params: std::collections::HashMap<String, String> = form_urlencoded::parse(back.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(params["state"], "st-0123456789");
    assert_eq!(params["app_id"], APP_ID);
    let code = params["app_auth_code"].clone();

    // Exchanged once; the same code again is refused.
    let tokens = exchange(&h, &isv, Grant::Code(&code)).await.unwrap();
    assert_eq!(tokens.merchant, MERCHANT_APP);
    assert_eq!(tokens.expires_in_secs, 31_536_000);
    refused_with(
        exchange(&h, &isv, Grant::Code(&code)).await,
        "isv.code-invalid",
    );
    let first = tokens.token.expose().clone();
    assert!(matches!(
        order(&h, &isv, &first, "pay_auth_1").await.unwrap(),
        PaymentStatus::AwaitingPayment { .. }
    ));
    // A token the sandbox never issued is refused before anything happens.
    refused_with(
        order(&h, &isv, "202612BBnot-a-token", "pay_auth_2").await,
        "aop.invalid-app-auth-token",
    );

    // Refreshed: the new token works, the old one no longer does.
    let refreshed = exchange(&h, &isv, Grant::Refresh(tokens.refresh_token.expose()))
        .await
        .unwrap();
    let second = refreshed.token.expose().clone();
    assert_ne!(second, first);
    refused_with(
        order(&h, &isv, &first, "pay_auth_3").await,
        "aop.invalid-app-auth-token",
    );
    assert!(matches!(
        order(&h, &isv, &second, "pay_auth_4").await.unwrap(),
        PaymentStatus::AwaitingPayment { .. }
    ));
    // A spent refresh token is refused.
    refused_with(
        exchange(&h, &isv, Grant::Refresh(tokens.refresh_token.expose())).await,
        "isv.refresh-token-invalid",
    );

    // The merchant revokes the authorisation: calls and refreshes are refused.
    let revoked = h
        .sandbox(
            "/sandbox/revoke-authorisation",
            serde_json::json!({"auth_app_id": MERCHANT_APP}),
        )
        .await;
    assert_eq!(revoked.status, 200);
    refused_with(
        order(&h, &isv, &second, "pay_auth_5").await,
        "aop.invalid-app-auth-token",
    );
    refused_with(
        exchange(&h, &isv, Grant::Refresh(refreshed.refresh_token.expose())).await,
        "isv.refresh-token-invalid",
    );
    // The token call is the ISV's own: a served merchant's adapter does not make it.
    let served = isv.for_authorisation(
        &Authorisation {
            auth_app_id: MERCHANT_APP,
            app_auth_token: moongate_contract::TokenSlot::new(Some(
                moongate_contract::Secret::new(second.to_string()),
            )),
        },
        None,
    );
    assert!(matches!(
        served.prepare_grant(&cx(), Grant::Code("x")),
        Err(AdapterError::InvalidRequest(_))
    ));
}
