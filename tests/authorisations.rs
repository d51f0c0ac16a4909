#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
//! Moongate's side of Alipay's application authorisation: shop H configures no token; an
//! operator asks for a link, the merchant's browser goes through the sandbox's consent page
//! and back, Moongate exchanges the code, keeps the tokens sealed in the ledger, pays with the
//! token at once, refreshes it before it lapses, and reports the authorisation once the
//! merchant revokes it. Replayed, foreign-browser and other-merchant answers are refused.

mod common;

use common::{Harness, ISV_MERCHANT_APP_ID, ISV_MERCHANT_APP_ID_H, header};
use moongate::store::AuthorisationStatus;
use moongate_contract::{HttpMethod, HttpRequest, HttpResponse};
use serde_json::{Value, json};

on_both_ledgers!(a_merchant_authorises_through_moongate_pays_refreshes_and_is_revoked);

async fn admin(h: &Harness, method: HttpMethod, body: Option<Value>) -> (u16, Value) {
    let request = HttpRequest {
        method,
        url: format!("http://{}/authorisations", h.gateway.admin_addr.unwrap()),
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
    };
    let answer = h.http.send(&request).await.unwrap();
    let json = serde_json::from_slice(&answer.body).unwrap_or(Value::Null);
    (answer.status, json)
}

async fn get(h: &Harness, url: &str, cookie: Option<&str>) -> HttpResponse {
    let request = HttpRequest {
        method: HttpMethod::Get,
        url: url.to_owned(),
        headers: cookie
            .map(|c| vec![("cookie".to_owned(), c.to_owned())])
            .unwrap_or_default(),
        body: vec![],
    };
    h.http.send(&request).await.unwrap()
}

fn text(response: &HttpResponse) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

/// Shop H's authorisation as `GET /authorisations` reports it.
async fn shop_h(h: &Harness) -> Value {
    let (status, list) = admin(h, HttpMethod::Get, None).await;
    assert_eq!(status, 200, "{list}");
    assert!(!list.to_string().contains("202612BB"), "a token in {list}");
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["merchant"] == "shop_h")
        .cloned()
        .unwrap()
}

/// A link, opened: the consent page's URL (with the state) and the binding cookie.
async fn open_link(h: &Harness) -> (String, String) {
    let (status, started) = admin(
        h,
        HttpMethod::Post,
        Some(json!({"merchant": "shop_h", "account": "alipay_isv"})),
    )
    .await;
    assert_eq!(status, 201, "{started}");
    let link = started["url"].as_str().unwrap();
    assert!(link.starts_with(&format!("http://{}/authorise/", h.gateway.addr)));
    let opened = get(h, link, None).await;
    assert_eq!(opened.status, 302, "{}", text(&opened));
    let consent = header(&opened, "location").unwrap().to_owned();
    let cookie = header(&opened, "set-cookie").unwrap();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_owned();
    (consent, cookie)
}

/// The merchant consents on the sandbox's page as `merchant_app`: the callback URL it is
/// sent back to.
async fn consent(h: &Harness, consent: &str, merchant_app: &str) -> String {
    let url = url::Url::parse(consent).unwrap();
    assert_eq!(url.path(), "/oauth2/appToAppAuth.htm");
    let query: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(
        query["redirect_uri"],
        format!("http://{}/authorise/callback", h.gateway.addr)
    );
    let mut form = form_urlencoded::Serializer::new(String::new());
    for key in ["app_id", "redirect_uri", "state"] {
        form.append_pair(key, &query[key]);
    }
    form.append_pair("merchant_app_id", merchant_app);
    let request = HttpRequest {
        method: HttpMethod::Post,
        url: format!("http://{}/oauth2/appToAppAuth.htm", h.sandbox_addr),
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: form.finish().into_bytes(),
    };
    let back = h.http.send(&request).await.unwrap();
    assert_eq!(back.status, 302, "{}", text(&back));
    header(&back, "location").unwrap().to_owned()
}

/// A QR payment of shop H, and its status and failure code.
async fn pay(h: &Harness, key: &str) -> (String, String, Value) {
    let (status, payment) = h.create(&h.shop_h, 1_200, key).await;
    assert_eq!(status, 201, "{payment}");
    (
        payment["id"].as_str().unwrap().to_owned(),
        payment["status"].as_str().unwrap().to_owned(),
        payment["failure"]["code"].clone(),
    )
}

async fn a_merchant_authorises_through_moongate_pays_refreshes_and_is_revoked(h: Harness) {
    let gateway = &h.gateway.gateway;
    // Not authorised yet: reported so, and a payment fails before anything is sent.
    assert_eq!(shop_h(&h).await["status"], "not_authorised");
    let (_, status, code) = pay(&h, "h-before").await;
    assert_eq!(
        (status.as_str(), code.as_str()),
        ("failed", Some("not_authorised"))
    );
    // Only a managed account gets a link.
    let (status, refused) = admin(
        &h,
        HttpMethod::Post,
        Some(json!({"merchant": "shop_f", "account": "alipay_isv"})),
    )
    .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("parameter_invalid"))
    );

    // A state is spent by its first use, even one whose code the provider refuses: the
    // merchant opens the link again for a new one.
    let (consent_url, cookie) = open_link(&h).await;
    let callback = consent(&h, &consent_url, ISV_MERCHANT_APP_ID_H).await;
    let mut tampered = url::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = tampered.query_pairs().into_owned().collect();
    tampered
        .query_pairs_mut()
        .clear()
        .extend_pairs(pairs.iter().map(|(k, v)| {
            let v = if k == "app_auth_code" {
                "not-a-code-alipay-issued"
            } else {
                v.as_str()
            };
            (k.as_str(), v)
        }));
    let refused = get(&h, tampered.as_str(), Some(&cookie)).await;
    assert_eq!(refused.status, 502, "{}", text(&refused));
    let spent = get(&h, &callback, Some(&cookie)).await;
    assert_eq!(spent.status, 400, "{}", text(&spent));

    // The merchant's browser: link → consent → back with a code.
    let (consent_url, cookie) = open_link(&h).await;
    let callback = consent(&h, &consent_url, ISV_MERCHANT_APP_ID_H).await;
    assert!(callback.contains("app_auth_code="), "{callback}");
    // The answer without the browser's cookie (another browser) is refused and spends nothing.
    let elsewhere = get(&h, &callback, None).await;
    assert_eq!(elsewhere.status, 400, "{}", text(&elsewhere));
    let elsewhere = get(&h, &callback, Some("moongate_authorise=someone-else")).await;
    assert_eq!(elsewhere.status, 400);
    let done = get(&h, &callback, Some(&cookie)).await;
    assert_eq!(done.status, 200, "{}", text(&done));
    assert!(text(&done).contains("shop_h"));
    // The state is single-use.
    let replayed = get(&h, &callback, Some(&cookie)).await;
    assert_eq!(replayed.status, 400, "{}", text(&replayed));

    let view = shop_h(&h).await;
    assert_eq!(view["status"], "active", "{view}");
    assert_eq!(view["identity"], ISV_MERCHANT_APP_ID_H);
    // The ledger holds the tokens sealed only.
    let stored = gateway.store.authorisations(Some("shop_h")).await.unwrap();
    assert_eq!(stored.len(), 1);
    let first = stored[0].clone();
    assert!(first.token_sealed.starts_with("v1.") && !first.token_sealed.contains("202612BB"));
    assert!(!first.refresh_sealed.contains("202612BB"));

    // The token works at once: a payment through the ISV app, paid and notified.
    let (id, status, _) = pay(&h, "h-1").await;
    assert_eq!(status, "requires_action");
    let answer = h.sandbox("/sandbox/pay", json!({"out_trade_no": id})).await;
    assert_eq!(answer.status, 200);
    h.wait_for(&h.shop_h, &id, "succeeded").await;

    // Another merchant's consent through shop H's link is refused; shop H's stays as it was.
    let (consent_url, cookie) = open_link(&h).await;
    let callback = consent(&h, &consent_url, ISV_MERCHANT_APP_ID).await;
    let foreign = get(&h, &callback, Some(&cookie)).await;
    assert_eq!(foreign.status, 409, "{}", text(&foreign));
    let stored = gateway.store.authorisations(Some("shop_h")).await.unwrap();
    assert_eq!(stored[0].version, first.version);

    // Not due yet: nothing refreshed. Within 30 days of the end (a year's token): refreshed,
    // and payments go on with the new token (the sandbox ended the old one at the refresh).
    let now = gateway.now();
    assert_eq!(gateway.refresh_authorisations(now).await.unwrap(), 0);
    let late = now + time::Duration::days(340);
    assert_eq!(gateway.refresh_authorisations(late).await.unwrap(), 1);
    let stored = gateway.store.authorisations(Some("shop_h")).await.unwrap();
    assert!(stored[0].version > first.version);
    assert_ne!(stored[0].token_sealed, first.token_sealed);
    assert_eq!(stored[0].status, AuthorisationStatus::Active);
    let (id, status, _) = pay(&h, "h-2").await;
    assert_eq!(status, "requires_action");
    h.sandbox("/sandbox/pay", json!({"out_trade_no": id})).await;
    h.wait_for(&h.shop_h, &id, "succeeded").await;

    // The merchant revokes it in Alipay's console: the next call is refused, and Moongate
    // reports it: refused, then revoked once the refresh token is refused too.
    let revoked = h
        .sandbox(
            "/sandbox/revoke-authorisation",
            json!({"auth_app_id": ISV_MERCHANT_APP_ID_H}),
        )
        .await;
    assert_eq!(revoked.status, 200);
    let (_, status, code) = pay(&h, "h-3").await;
    assert_eq!(
        (status.as_str(), code.as_str()),
        ("failed", Some("aop.invalid-app-auth-token"))
    );
    // The server's task takes the port's refusals as they come; this takes any it left.
    gateway.take_refusals().await.unwrap();
    let mut view = shop_h(&h).await;
    for _ in 0..100 {
        if view["status"] == "refused" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        view = shop_h(&h).await;
    }
    assert_eq!(view["status"], "refused", "{view}");
    assert_eq!(view["status_code"], "aop.invalid-app-auth-token", "{view}");
    gateway.refresh_authorisations(gateway.now()).await.unwrap();
    let view = shop_h(&h).await;
    assert_eq!(view["status"], "revoked", "{view}");
    assert_eq!(view["status_code"], "isv.refresh-token-invalid", "{view}");
    // Its token is out of the adapter: calls fail before they are sent.
    let (_, status, code) = pay(&h, "h-4").await;
    assert_eq!(
        (status.as_str(), code.as_str()),
        ("failed", Some("not_authorised"))
    );
    let metrics = h
        .http_get(&format!("http://{}/metrics", h.gateway.admin_addr.unwrap()))
        .await;
    let metrics = text(&metrics);
    assert!(
        metrics.contains(
            "moongate_authorisation_refusals_total{merchant=\"shop_h\",account=\"alipay_isv\"}"
        ),
        "{metrics}"
    );
}

/// `moongate authorise` makes the same link on the ledger's machine: the running gateway
/// opens it; an account that does not authorise through Moongate gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_prints_a_link_the_gateway_opens() {
    let h = Harness::start().await;
    let run = |merchant: &str, account: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_moongate"))
            .args(["authorise", "-c"])
            .arg(&h.config_path)
            .args(["--merchant", merchant, "--account", account])
            .output()
            .unwrap()
    };
    let output = run("shop_h", "alipay_isv");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let link = stdout.lines().next().unwrap();
    assert!(
        link.starts_with(&format!("http://{}/authorise/", h.gateway.addr)),
        "{stdout}"
    );
    let opened = get(&h, link, None).await;
    assert_eq!(opened.status, 302, "{}", text(&opened));
    assert!(
        header(&opened, "location")
            .unwrap()
            .contains("/oauth2/appToAppAuth.htm?app_id=")
    );
    // A configured token: nothing to authorise.
    let output = run("shop_f", "alipay_isv");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("not authorised through Moongate"),
        "{stderr}"
    );
    // A link that does not exist opens nothing.
    let unknown = get(
        &h,
        &format!("http://{}/authorise/nope", h.gateway.addr),
        None,
    )
    .await;
    assert_eq!(unknown.status, 400);
}
