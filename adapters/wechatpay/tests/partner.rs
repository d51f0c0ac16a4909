//! Partner mode (服务商, more-wallets.md §7): a sub-merchant's calls name the service provider
//! (`sp_appid`/`sp_mchid`) and the sub-merchant (`sub_mchid`, `sub_appid`) on the partner
//! paths, its answers and notifications must name that sub-merchant, and a provider's bill is
//! split by `特约商户号`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod support;
use support::*;

use moongate_adapter_wechatpay::{AccountKeys, SubMerchant, WechatPayAdapter, sign, v2};
use moongate_contract::crypto::RsaVerifier;
use moongate_contract::{
    AdapterError, Currency, HttpRequest, HttpResponse, Money, NextAction, NotificationError,
    NotificationEvent, PaymentAdapter, PaymentMethod, PaymentRef, PaymentStatus, Prepared,
    RefundRequest, StatementLimits,
};
use serde_json::{Value, json};

const GO_PUBLIC: &str = include_str!("../../../fixtures/keys/wechatpay-go-merchant-public-key.pem");
const SP_MCHID: &str = "1900009191";
const SP_APPID: &str = "wx8888888888888888";
const SUB_MCHID: &str = "1900000201";
const SIBLING: &str = "1900000202";
const SUB_APPID: &str = "wxd678efh567hg6999";
const SP_APIV3: &str = "5p5p5p5p0123456789abcdef5p5p5p5p";
const SP_V2: &str = "5pv25pv2192006250b4c09247ec02edc";
const ORDER: &str = "pay_0123456789abcdef";

fn sub_merchant(sub_appid: Option<&str>) -> WechatPayAdapter {
    WechatPayAdapter::new(&AccountKeys {
        mchid: SP_MCHID,
        appid: SP_APPID,
        merchant_serial_no: "F5765756002FDD77",
        merchant_private_key: GO_KEY,
        apiv3_key: SP_APIV3,
        api_v2_key: Some(SP_V2),
        wechatpay_public_key: Some((PUB_KEY_ID, SANDBOX_PUBLIC)),
        platform_certificates: &[],
        api_base_url: "https://api.mch.weixin.qq.com",
        oauth: None,
    })
    .unwrap()
    .for_sub_merchant(SubMerchant {
        sub_mchid: SUB_MCHID,
        sub_appid,
    })
}

fn sent(prepared: Prepared<impl std::fmt::Debug>) -> HttpRequest {
    match prepared {
        Prepared::Send(request) => request,
        other => panic!("expected a request, got {other:?}"),
    }
}

fn path(request: &HttpRequest) -> &str {
    request
        .url
        .strip_prefix("https://api.mch.weixin.qq.com")
        .unwrap()
}

fn body(request: &HttpRequest) -> Value {
    serde_json::from_slice(&request.body).unwrap()
}

fn reference() -> PaymentRef {
    PaymentRef {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: ORDER.to_owned(),
        amount: Money::new(100, Currency::CNY),
    }
}

fn refund() -> RefundRequest {
    RefundRequest {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: ORDER.to_owned(),
        provider_refund_id: "re_0123456789abcdef".to_owned(),
        amount: Money::new(40, Currency::CNY),
        payment_amount: Money::new(100, Currency::CNY),
        reason: None,
        notify_url: Some("https://shop.example/notify".to_owned()),
        payment_created_at: time::OffsetDateTime::UNIX_EPOCH,
        payment_provider_ref: None,
    }
}

fn order(method: PaymentMethod) -> moongate_contract::CreatePayment {
    moongate_contract::CreatePayment {
        provider_order_id: ORDER.to_owned(),
        ..create(method)
    }
}

#[test]
fn every_call_names_the_provider_and_the_sub_merchant() {
    let adapter = sub_merchant(None);
    let native = sent(
        adapter
            .prepare_create(&cx(), &order(PaymentMethod::WechatNative))
            .unwrap(),
    );
    assert_eq!(path(&native), "/v3/pay/partner/transactions/native");
    // The provider's ids in place of appid/mchid, in the documented order, and no payer.
    let text = String::from_utf8(native.body.clone()).unwrap();
    assert!(
        text.starts_with(&format!(
            r#"{{"sp_appid":"{SP_APPID}","sp_mchid":"{SP_MCHID}","sub_mchid":"{SUB_MCHID}","description":"#
        )),
        "{text}"
    );
    assert!(
        !text.contains("\"appid\"") && !text.contains("\"mchid\""),
        "{text}"
    );
    // Signed by the provider: its mchid in the Authorization.
    let authorization = header_value(&native.headers, "authorization");
    assert_eq!(
        sign::parse_authorization(authorization).unwrap().mchid,
        SP_MCHID
    );

    let jsapi = sent(
        adapter
            .prepare_create(&cx(), &order(PaymentMethod::WechatJsapi))
            .unwrap(),
    );
    assert_eq!(path(&jsapi), "/v3/pay/partner/transactions/jsapi");
    assert_eq!(
        body(&jsapi)["payer"],
        json!({"sp_openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"})
    );
    let h5 = sent(
        adapter
            .prepare_create(&cx(), &order(PaymentMethod::WechatH5))
            .unwrap(),
    );
    assert_eq!(path(&h5), "/v3/pay/partner/transactions/h5");
    assert_eq!(body(&h5)["scene_info"]["payer_client_ip"], "203.0.113.7");

    let query = sent(adapter.prepare_query(&cx(), &reference()).unwrap());
    assert_eq!(
        path(&query),
        format!(
            "/v3/pay/partner/transactions/out-trade-no/{ORDER}?sp_mchid={SP_MCHID}&sub_mchid={SUB_MCHID}"
        )
    );
    let close = sent(adapter.prepare_close(&cx(), &reference()).unwrap());
    assert_eq!(
        path(&close),
        format!("/v3/pay/partner/transactions/out-trade-no/{ORDER}/close")
    );
    assert_eq!(
        String::from_utf8(close.body).unwrap(),
        format!(r#"{{"sp_mchid":"{SP_MCHID}","sub_mchid":"{SUB_MCHID}"}}"#)
    );
    let refund_call = sent(adapter.prepare_refund(&cx(), &refund()).unwrap());
    assert_eq!(path(&refund_call), "/v3/refund/domestic/refunds");
    let text = String::from_utf8(refund_call.body).unwrap();
    assert!(
        text.starts_with(&format!(
            r#"{{"sub_mchid":"{SUB_MCHID}","out_trade_no":"{ORDER}""#
        )),
        "{text}"
    );
    let refund_query = sent(adapter.prepare_refund_query(&cx(), &refund()).unwrap());
    assert_eq!(
        path(&refund_query),
        format!("/v3/refund/domestic/refunds/re_0123456789abcdef?sub_mchid={SUB_MCHID}")
    );
    let day = time::macros::date!(2026 - 12 - 02);
    let bill = adapter.prepare_statement(&cx(), day).unwrap();
    assert_eq!(
        path(&bill),
        format!("/v3/bill/tradebill?bill_date=2026-12-02&bill_type=ALL&sub_mchid={SUB_MCHID}")
    );

    // Payment codes through v2: the provider's appid and mch_id, the sub-merchant's
    // sub_mch_id (and sub_appid when it has one), signed with the provider's v2 key.
    for (adapter, sub_appid) in [
        (adapter, None),
        (sub_merchant(Some(SUB_APPID)), Some(SUB_APPID)),
    ] {
        let micropay = sent(
            adapter
                .prepare_create(&cx(), &order(PaymentMethod::WechatPaymentCode))
                .unwrap(),
        );
        let fields = v2::from_xml(&micropay.body).unwrap();
        assert_eq!(fields["appid"], SP_APPID);
        assert_eq!(fields["mch_id"], SP_MCHID);
        assert_eq!(fields["sub_mch_id"], SUB_MCHID);
        assert_eq!(fields.get("sub_appid").map(String::as_str), sub_appid);
        assert!(v2::verify_hmac_sha256(&fields, SP_V2));
    }
}

#[test]
fn a_sub_merchant_with_its_own_app_pays_its_own_openids_and_signs_for_its_app() {
    for (sub_appid, payer_key, app_id) in [
        (None, "sp_openid", SP_APPID),
        (Some(SUB_APPID), "sub_openid", SUB_APPID),
    ] {
        let adapter = sub_merchant(sub_appid);
        let request = order(PaymentMethod::WechatJsapi);
        let jsapi = body(&sent(adapter.prepare_create(&cx(), &request).unwrap()));
        assert_eq!(
            jsapi["payer"],
            json!({payer_key: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"})
        );
        assert_eq!(jsapi.get("sub_appid").and_then(Value::as_str), sub_appid);
        let answer = signed(
            200,
            r#"{"prepay_id":"wx201410272009395522657a690389285100"}"#,
            PUB_KEY_ID,
            TS,
        );
        let status = adapter.parse_create(&cx(), &request, &answer).unwrap();
        let PaymentStatus::AwaitingPayment {
            next_action: Some(NextAction::WechatJsapi { parameters }),
        } = status
        else {
            panic!("{status:?}");
        };
        // The pay-sign names the app the openid belongs to, and verifies over it.
        assert_eq!(parameters.app_id, app_id);
        let message = sign::jsapi_message(
            app_id,
            &parameters.time_stamp,
            &parameters.nonce_str,
            &parameters.package,
        );
        let verifier = RsaVerifier::from_pem(GO_PUBLIC).unwrap();
        assert!(verifier.verify_base64(message.as_bytes(), &parameters.pay_sign));
    }
}

fn partner_transaction(sub_mchid: &str) -> String {
    json!({
        "sp_appid": SP_APPID, "sp_mchid": SP_MCHID, "sub_mchid": sub_mchid,
        "out_trade_no": ORDER, "transaction_id": "4200000000000000000000000001",
        "trade_type": "NATIVE", "trade_state": "SUCCESS", "trade_state_desc": "支付成功",
        "success_time": "2026-12-02T10:00:00+08:00",
        "payer": {"sp_openid": "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o"},
        "amount": {"total": 100, "payer_total": 100, "currency": "CNY", "payer_currency": "CNY"},
    })
    .to_string()
}

fn wrong_account(adapter: &WechatPayAdapter, event: &str, original: &str, plain: &str) -> bool {
    let (headers, body) = notification(event, original, plain, SP_APIV3, PUB_KEY_ID);
    match adapter.parse_notification(&raw(&headers, &body)) {
        Err(NotificationError::WrongAccount) => true,
        Ok(_) => false,
        Err(other) => panic!("{other:?}"),
    }
}

#[test]
fn answers_and_notifications_must_name_this_sub_merchant() {
    let adapter = sub_merchant(None);
    // A query answer about the sibling's order is not ours.
    let ours = signed(200, &partner_transaction(SUB_MCHID), PUB_KEY_ID, TS);
    assert!(matches!(
        adapter.parse_query(&reference(), &ours).unwrap(),
        PaymentStatus::Succeeded { .. }
    ));
    let sibling = signed(200, &partner_transaction(SIBLING), PUB_KEY_ID, TS);
    assert!(matches!(
        adapter.parse_query(&reference(), &sibling),
        Err(AdapterError::Protocol(m)) if m.contains("sub_mchid")
    ));

    // Every sub-merchant's notifications verify and decrypt with the provider's keys: only the
    // one naming this sub-merchant is accepted.
    let (headers, body) = notification(
        "TRANSACTION.SUCCESS",
        "transaction",
        &partner_transaction(SUB_MCHID),
        SP_APIV3,
        PUB_KEY_ID,
    );
    let note = adapter.parse_notification(&raw(&headers, &body)).unwrap();
    assert_eq!(note.provider_order_id, ORDER);
    assert!(!wrong_account(
        &adapter,
        "TRANSACTION.SUCCESS",
        "transaction",
        &partner_transaction(SUB_MCHID)
    ));
    for plain in [
        partner_transaction(SIBLING),
        partner_transaction(SUB_MCHID).replace(SP_MCHID, "1900009999"),
        partner_transaction(SUB_MCHID).replace(SP_APPID, "wx0000000000000000"),
        partner_transaction(SUB_MCHID).replace(&format!(r#""sub_mchid":"{SUB_MCHID}","#), ""),
        // A direct merchant's notification with the provider's ids as its own.
        partner_transaction(SUB_MCHID)
            .replace("sp_appid", "appid")
            .replace("sp_mchid", "mchid")
            .replace(&format!(r#""sub_mchid":"{SUB_MCHID}","#), ""),
    ] {
        assert!(
            wrong_account(&adapter, "TRANSACTION.SUCCESS", "transaction", &plain),
            "{plain}"
        );
    }
    let refund_notice = |sub_mchid: &str| {
        json!({
            "sp_mchid": SP_MCHID, "sub_mchid": sub_mchid, "out_trade_no": ORDER,
            "transaction_id": "4200000000000000000000000001", "out_refund_no": "re_0123456789abcdef",
            "refund_id": "50300000000000000000000000001", "refund_status": "SUCCESS",
            "amount": {"total": 100, "refund": 40, "payer_total": 100, "payer_refund": 40},
        })
        .to_string()
    };
    let (headers, body) = notification(
        "REFUND.SUCCESS",
        "refund",
        &refund_notice(SUB_MCHID),
        SP_APIV3,
        PUB_KEY_ID,
    );
    let note = adapter.parse_notification(&raw(&headers, &body)).unwrap();
    assert!(matches!(note.event, NotificationEvent::Refund { .. }));
    assert!(wrong_account(
        &adapter,
        "REFUND.SUCCESS",
        "refund",
        &refund_notice(SIBLING)
    ));

    // A payment-code answer for the sibling is refused too.
    let request = order(PaymentMethod::WechatPaymentCode);
    let answer = |sub_mchid: &str| {
        let mut fields = std::collections::BTreeMap::new();
        for (k, v) in [
            ("return_code", "SUCCESS"),
            ("result_code", "SUCCESS"),
            ("appid", SP_APPID),
            ("mch_id", SP_MCHID),
            ("sub_mch_id", sub_mchid),
            ("nonce_str", "5K8264ILTKCH16CQ"),
            ("out_trade_no", ORDER),
            ("transaction_id", "4200000000000000000000000002"),
            ("total_fee", "100"),
            ("fee_type", "CNY"),
            ("time_end", "20261202100000"),
        ] {
            fields.insert(k.to_owned(), v.to_owned());
        }
        let sign = v2::hmac_sha256_sign(&fields, SP_V2);
        fields.insert("sign".to_owned(), sign);
        HttpResponse {
            status: 200,
            headers: vec![],
            body: v2::to_xml(fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))).into_bytes(),
            received_at: at(TS),
        }
    };
    assert!(matches!(
        adapter
            .parse_create(&cx(), &request, &answer(SUB_MCHID))
            .unwrap(),
        PaymentStatus::Succeeded { .. }
    ));
    assert!(matches!(
        adapter.parse_create(&cx(), &request, &answer(SIBLING)),
        Err(AdapterError::Protocol(_))
    ));
}

const HEADER: &str = "交易时间,公众账号ID,商户号,特约商户号,设备号,微信订单号,商户订单号,用户标识,交易类型,交易状态,付款银行,货币种类,应结订单金额,代金券金额,微信退款单号,商户退款单号,退款金额,充值券退款金额,退款类型,退款状态,商品名称,商户数据包,手续费,费率,订单金额,申请退款金额,费率备注";

fn record(sub_mchid: &str, order: &str, yuan: &str, fee: &str) -> String {
    format!(
        "`2026-12-02 10:00:00,`{SP_APPID},`{SP_MCHID},`{sub_mchid},`,`4200{order},`{order},`oUpF8uMuAJO_M2pxb1Q9zNjWeS6o,`NATIVE,`SUCCESS,`OTHERS,`CNY,`{yuan},`0.00,`0,`0,`0.00,`0.00,`,`,`Tea,`,`{fee},`0.60%,`{yuan},`0.00,`"
    )
}

fn read(adapter: &WechatPayAdapter, bill: &str) -> Result<Vec<String>, String> {
    let mut source = std::io::Cursor::new(bill.as_bytes().to_vec());
    let mut orders = Vec::new();
    adapter
        .read_statement(&mut source, &StatementLimits::DEFAULT, &mut |line| {
            orders.push(line.payment_id);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    Ok(orders)
}

#[test]
fn a_providers_combined_bill_gives_each_sub_merchant_only_its_own_records() {
    let bill = format!(
        "\u{feff}{HEADER}\r\n{}\r\n{}\r\n{}\r\n总交易单数,应结订单总金额,退款总金额,充值券退款总金额,手续费总金额,订单总金额,申请退款总金额\r\n`3,`6.00,`0.00,`0.00,`0.03600,`6.00,`0.00\r\n",
        record(SUB_MCHID, "pay_ours_1", "1.00", "0.00600"),
        record(SIBLING, "pay_sibling", "2.00", "0.01200"),
        record(SUB_MCHID, "pay_ours_2", "3.00", "0.01800"),
    );
    assert_eq!(
        read(&sub_merchant(None), &bill).unwrap(),
        vec!["pay_ours_1", "pay_ours_2"]
    );
    // The summary still covers every record: a sibling's record cut out is noticed.
    let cut = bill.replace(
        &format!("{}\r\n", record(SIBLING, "pay_sibling", "2.00", "0.01200")),
        "",
    );
    assert!(
        read(&sub_merchant(None), &cut)
            .unwrap_err()
            .contains("summary")
    );
    // A bill that cannot tell whose records it holds is refused, not read as ours.
    let anonymous = bill
        .replace("商户号,特约商户号,", "商户号,")
        .replace(
            &format!("`{SP_MCHID},`{SUB_MCHID},"),
            &format!("`{SP_MCHID},"),
        )
        .replace(
            &format!("`{SP_MCHID},`{SIBLING},"),
            &format!("`{SP_MCHID},"),
        );
    assert!(
        read(&sub_merchant(None), &anonymous)
            .unwrap_err()
            .contains("特约商户号")
    );
}
