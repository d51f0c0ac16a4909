//! The official account's web OAuth (`snsapi_base`): the authorisation URL exactly as WeChat's
//! page wants it, the code exchange, and its answers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;
use support::*;

use moongate_adapter_wechatpay::oauth::OAuth;
use moongate_adapter_wechatpay::{AccountKeys, SubMerchant, WechatPayAdapter};
use moongate_contract::{AdapterError, HttpMethod, HttpResponse, PaymentAdapter, Secret};

fn adapter(oauth: bool) -> WechatPayAdapter {
    WechatPayAdapter::new(&AccountKeys {
        mchid: "1230000109",
        appid: "wxd678efh567hg6787",
        merchant_serial_no: "F5765756002FDD77",
        merchant_private_key: GO_KEY,
        apiv3_key: "01234567890123456789012345678901",
        api_v2_key: None,
        wechatpay_public_key: Some((PUB_KEY_ID, SANDBOX_PUBLIC)),
        platform_certificates: &[],
        api_base_url: "https://api.mch.weixin.qq.com",
        oauth: oauth.then(|| OAuth {
            app_secret: Secret::new("0123456789abcdef0123456789abcdef".to_owned()),
            authorize_url: "https://open.weixin.qq.com/connect/oauth2/authorize".to_owned(),
            api_url: "https://api.weixin.qq.com".to_owned(),
        }),
    })
    .unwrap()
}

fn answer(body: &str) -> HttpResponse {
    HttpResponse {
        status: 200,
        headers: vec![],
        body: body.as_bytes().to_vec(),
        received_at: at(TS),
    }
}

#[test]
fn the_authorisation_url_and_the_exchange_are_wechats() {
    let wechat = adapter(true);
    let identity = wechat
        .payer_identity()
        .expect("with its secret, the account can");
    assert_eq!(
        identity.identity_url("https://pay.example.com/cashier/identity", "st_01"),
        "https://open.weixin.qq.com/connect/oauth2/authorize?appid=wxd678efh567hg6787\
         &redirect_uri=https%3A%2F%2Fpay.example.com%2Fcashier%2Fidentity&response_type=code\
         &scope=snsapi_base&state=st_01#wechat_redirect"
    );
    assert_eq!(identity.identity_code_parameter(), "code");
    let request = identity.prepare_identity(&cx(), "061Ab0ll2Yq1Ml4").unwrap();
    assert_eq!(request.method, HttpMethod::Get);
    assert_eq!(
        request.url,
        "https://api.weixin.qq.com/sns/oauth2/access_token?appid=wxd678efh567hg6787\
         &secret=0123456789abcdef0123456789abcdef&code=061Ab0ll2Yq1Ml4&grant_type=authorization_code"
    );
    let ok = answer(
        r#"{"access_token":"ACCESSTOKEN","expires_in":7200,"refresh_token":"REFRESHTOKEN","openid":"oUpF8uMuAJO_M2pxb1Q9zNjWeS6o","scope":"snsapi_base"}"#,
    );
    assert_eq!(
        identity.parse_identity(&ok).unwrap(),
        "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"
    );
    match identity.parse_identity(&answer(r#"{"errcode":40163,"errmsg":"code been used"}"#)) {
        Err(AdapterError::Rejected { code, .. }) => assert_eq!(code, "40163"),
        other => panic!("a spent code is a refusal: {other:?}"),
    }
    assert!(matches!(
        identity.parse_identity(&answer(r#"{"errcode":-1,"errmsg":"system error"}"#)),
        Err(AdapterError::Indeterminate { .. })
    ));
    assert!(matches!(
        identity.parse_identity(&answer("<html>")),
        Err(AdapterError::Protocol(_))
    ));
}

#[test]
fn without_a_secret_or_under_a_sub_merchants_own_app_there_is_no_identity() {
    assert!(adapter(false).payer_identity().is_none());
    let provider = adapter(true);
    let own_app = provider.for_sub_merchant(SubMerchant {
        sub_mchid: "1900000201",
        sub_appid: Some("wxd678efh567hg6999"),
    });
    assert!(own_app.payer_identity().is_none());
    let under_provider = provider.for_sub_merchant(SubMerchant {
        sub_mchid: "1900000201",
        sub_appid: None,
    });
    assert!(under_provider.payer_identity().is_some());
}
