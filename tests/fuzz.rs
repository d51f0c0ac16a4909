//! Mutation fuzzing of every parser that takes outside bytes, on the stable toolchain (no
//! cargo-fuzz here): seeds from real inputs, mutated (bit flips, byte edits, inserted tokens,
//! splices, truncations), fed to the parser. Nothing may panic; the API must answer every
//! request with a 4xx, never a 5xx. Where a signature guards a parser, the mutated input is
//! re-signed, so the code behind the signature is reached too.
//!
//! Statement files: the WeChat Pay trade bill parser (the Alipay bill parser, issue 5, joins
//! here when it exists).
//!
//! `MOONGATE_FUZZ_ITERS` sets the iterations per target (CI: the default, a few seconds in all;
//! `scripts/fuzz.sh` runs long). A failing input is printed in hex with the seed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeMap;

use common::{Harness, fixtures};
use moongate_adapter_alipay::sign::{SignRule, sign_content};
use moongate_adapter_alipay::{AccountKeys, AlipayAdapter, AlipayKeys};
use moongate_adapter_wechatpay::{WechatPayAdapter, aead, sign, v2};
use moongate_contract::crypto::RsaSigner;
use moongate_contract::{
    HttpMethod, HttpResponse, Money, PaymentAdapter, PaymentRef, RawNotification,
};
use time::OffsetDateTime;

fn iterations(default: usize) -> usize {
    std::env::var("MOONGATE_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Mutator {
    state: u64,
}

const TOKENS: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b"<",
    b">",
    b"]]>",
    b"<![CDATA[",
    b"&",
    b"&amp;",
    b"%",
    b"%zz",
    b"=",
    b"&&",
    b"\n",
    b"\r\n",
    b"\0",
    b"\xff\xfe",
    b"\xe4\xb8\xad",
    b"-1",
    b"0",
    b"99999999999999999999999",
    b"1e309",
    b"null",
    b"true",
    b"\"\":",
    b",",
    b":",
    b"'",
    b"#",
    b"[[x]]",
    b"${",
    b"\\u0000",
    b"\\ud800",
];

impl Mutator {
    fn new(seed: u64) -> Mutator {
        Mutator { state: seed | 1 }
    }

    fn next(&mut self) -> u64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.state
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }

    /// One to four mutations of `seed`, spliced with `other` now and then; at most 64 KiB.
    fn mutate(&mut self, seed: &[u8], other: &[u8]) -> Vec<u8> {
        let mut data = seed.to_vec();
        for _ in 0..1 + self.below(4) {
            let at = self.below(data.len() + 1);
            match self.below(8) {
                0 if !data.is_empty() => {
                    let i = self.below(data.len());
                    data[i] ^= 1 << self.below(8);
                }
                1 if !data.is_empty() => {
                    let i = self.below(data.len());
                    data[i] = self.next() as u8;
                }
                2 => {
                    let token = TOKENS[self.below(TOKENS.len())];
                    data.splice(at..at, token.iter().copied());
                }
                3 if !data.is_empty() => {
                    let end = (at + 1 + self.below(16)).min(data.len());
                    let start = at.min(end);
                    data.drain(start..end);
                }
                4 if !data.is_empty() => {
                    let end = (at + 1 + self.below(32)).min(data.len());
                    let start = at.min(end);
                    let copy = data[start..end].to_vec();
                    data.splice(end..end, copy);
                }
                5 => data.truncate(at),
                6 if !other.is_empty() => {
                    let from = self.below(other.len());
                    let piece = &other[from..(from + self.below(64)).min(other.len())];
                    data.splice(at..at, piece.iter().copied());
                }
                _ => {
                    let byte = self.next() as u8;
                    data.insert(at, byte);
                }
            }
        }
        data.truncate(64 * 1024);
        data
    }
}

/// Runs `target` on mutations of the seeds; a panic reports the input.
fn fuzz(name: &str, seeds: &[Vec<u8>], default_iters: usize, mut target: impl FnMut(&[u8])) {
    let seed = std::env::var("MOONGATE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_0000_0000_0001_u64 ^ name.len() as u64);
    let mut mutator = Mutator::new(seed);
    for seed_input in seeds {
        target(seed_input);
    }
    for _ in 0..iterations(default_iters) {
        let a = &seeds[mutator.below(seeds.len())];
        let b = &seeds[mutator.below(seeds.len())];
        let input = mutator.mutate(a, b);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target(&input)));
        if outcome.is_err() {
            let hex: String = input.iter().map(|b| format!("{b:02x}")).collect();
            panic!("{name}: panic on input (seed {seed}): {hex}");
        }
    }
}

fn key(name: &str) -> String {
    std::fs::read_to_string(fixtures().join("keys").join(name)).unwrap()
}

fn wechat_adapter() -> WechatPayAdapter {
    WechatPayAdapter::new(&moongate_adapter_wechatpay::AccountKeys {
        mchid: common::MCHID_A,
        appid: common::WX_APPID,
        merchant_serial_no: common::MERCHANT_SERIAL,
        merchant_private_key: &key("wechatpay-go-merchant-private-key.pem"),
        apiv3_key: common::APIV3_KEY_A,
        api_v2_key: Some(common::V2_KEY_A),
        wechatpay_public_key: Some((common::PUB_KEY_ID, &key("sandbox-wechatpay-public-key.pem"))),
        platform_certificates: &[key("sandbox-wechatpay-platform-cert.pem")],
        api_base_url: "https://api.mch.weixin.qq.com",
        oauth: None,
    })
    .unwrap()
}

/// Headers WeChat Pay would send for `body`, signed by the sandbox platform key.
fn wechat_headers(signer: &RsaSigner, body: &[u8], now: OffsetDateTime) -> Vec<(String, String)> {
    let ts = now.unix_timestamp().to_string();
    let nonce = "fuzzfuzzfuzzfuzz";
    let signature = signer
        .sign_base64(&sign::response_message(&ts, nonce, body))
        .unwrap();
    vec![
        ("wechatpay-timestamp".into(), ts),
        ("wechatpay-nonce".into(), nonce.into()),
        ("wechatpay-serial".into(), common::PUB_KEY_ID.into()),
        ("wechatpay-signature".into(), signature),
    ]
}

#[test]
fn wechat_v2_xml_and_authorization_headers() {
    let mut fields = BTreeMap::new();
    for (k, v) in [
        ("return_code", "SUCCESS"),
        ("result_code", "FAIL"),
        ("err_code", "USERPAYING"),
        ("total_fee", "100"),
    ] {
        fields.insert(k.to_owned(), v.to_owned());
    }
    let xml = v2::to_xml(fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))).into_bytes();
    fuzz(
        "v2 xml",
        &[xml, b"<xml><a><![CDATA[x]]></a></xml>".to_vec()],
        20_000,
        |input| {
            if let Ok(fields) = v2::from_xml(input) {
                let _ = v2::verify_hmac_sha256(&fields, common::V2_KEY_A);
            }
        },
    );
    let header =
        sign::authorization("1230000109", "NONCE", 1_700_000_000, "ABC", "c2ln").into_bytes();
    fuzz("authorization", &[header], 20_000, |input| {
        let _ = sign::parse_authorization(&String::from_utf8_lossy(input));
    });
}

#[test]
fn wechat_notifications_and_answers_behind_valid_signatures() {
    let adapter = wechat_adapter();
    let platform = RsaSigner::from_pem(&key("sandbox-wechatpay-private-key.pem")).unwrap();
    let now = OffsetDateTime::now_utc();
    let plain = br#"{"mchid":"1230000109","appid":"wxd678efh567hg6787","out_trade_no":"pay_FUZZ0001","transaction_id":"4200000000000000000000000001","trade_type":"NATIVE","trade_state":"SUCCESS","success_time":"2024-05-13T17:49:20+08:00","amount":{"total":100,"currency":"CNY"}}"#;
    let refund = br#"{"mchid":"1230000109","out_trade_no":"pay_FUZZ0001","out_refund_no":"re_FUZZ0001","refund_id":"1","refund_status":"SUCCESS","amount":{"total":100,"refund":40}}"#;
    // The decrypted resource: encrypted properly after mutation, envelope and signature valid.
    fuzz(
        "wechat resource",
        &[plain.to_vec(), refund.to_vec()],
        3_000,
        |input| {
            let ciphertext = aead::encrypt(
                common::APIV3_KEY_A.as_bytes(),
                "fuzznonce123",
                "transaction",
                input,
            )
            .unwrap();
            let body = format!(
                r#"{{"id":"EV-1","event_type":"TRANSACTION.SUCCESS","resource":{{"algorithm":"AEAD_AES_256_GCM","ciphertext":"{ciphertext}","associated_data":"transaction","nonce":"fuzznonce123"}}}}"#
            );
            let headers = wechat_headers(&platform, body.as_bytes(), now);
            let _ = adapter.parse_notification(&RawNotification {
                headers: &headers,
                body: body.as_bytes(),
                received_at: now,
            });
        },
    );
    // The envelope itself, re-signed.
    let ciphertext = aead::encrypt(
        common::APIV3_KEY_A.as_bytes(),
        "fuzznonce123",
        "transaction",
        plain,
    )
    .unwrap();
    let envelope = format!(
        r#"{{"id":"EV-1","event_type":"TRANSACTION.SUCCESS","resource":{{"algorithm":"AEAD_AES_256_GCM","ciphertext":"{ciphertext}","associated_data":"transaction","nonce":"fuzznonce123"}}}}"#
    )
    .into_bytes();
    fuzz("wechat envelope", &[envelope], 1_000, |input| {
        let headers = wechat_headers(&platform, input, now);
        let _ = adapter.parse_notification(&RawNotification {
            headers: &headers,
            body: input,
            received_at: now,
        });
    });
    // Query answers, re-signed, and unsigned garbage in error bodies.
    let answer = br#"{"appid":"wxd678efh567hg6787","mchid":"1230000109","out_trade_no":"pay_FUZZ0001","transaction_id":"42","trade_state":"SUCCESS","amount":{"total":100,"currency":"CNY"}}"#;
    let reference = PaymentRef {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: "pay_FUZZ0001".into(),
        amount: Money::new(100, moongate_contract::Currency::CNY),
    };
    fuzz(
        "wechat answers",
        &[
            answer.to_vec(),
            br#"{"code":"PARAM_ERROR","message":"x"}"#.to_vec(),
        ],
        1_000,
        |input| {
            for status in [200, 400, 404, 500] {
                let headers = wechat_headers(&platform, input, now);
                let resp = HttpResponse {
                    status,
                    headers,
                    body: input.to_vec(),
                    received_at: now,
                };
                let _ = adapter.parse_query(&reference, &resp);
            }
        },
    );
}

#[test]
fn alipay_forms_and_responses() {
    let adapter = AlipayAdapter::new(&AccountKeys {
        app_id: common::APP_ID,
        gateway_url: "https://openapi.alipay.com/gateway.do",
        consent_url: None,
        seller_id: None,
        app_private_key: &key("nodejs-sdk-app-private-key.pem"),
        alipay: AlipayKeys::PublicKey(&key("sandbox-alipay-public-key.pem")),
    })
    .unwrap();
    let alipay = RsaSigner::from_pem(&key("sandbox-alipay-private-key.pem")).unwrap();
    let now = OffsetDateTime::now_utc();
    let form = std::fs::read(fixtures().join("alipay/notify-trade-success.form")).unwrap();
    // Raw bytes (the signature check comes first)…
    fuzz(
        "alipay form",
        std::slice::from_ref(&form),
        20_000,
        |input| {
            let _ = moongate_adapter_alipay::parse_form_strict(input);
            let _ = adapter.parse_notification(&RawNotification {
                headers: &[],
                body: input,
                received_at: now,
            });
        },
    );
    // …and fields re-signed, to reach the decoding behind it.
    let fields = |app_id: &str| {
        format!(
            "app_id={app_id}&notify_id=1&notify_type=trade_status_sync&out_trade_no=pay_FUZZ&trade_no=2026&trade_status=TRADE_SUCCESS&total_amount=1.00&gmt_payment=2026-11-22 10:00:00&refund_fee=0.40"
        )
    };
    fuzz(
        "alipay signed form",
        &[fields(common::APP_ID).into_bytes()],
        1_000,
        |input| {
            let Ok(parsed) = moongate_adapter_alipay::parse_form_strict(input) else {
                return;
            };
            let content = sign_content(
                parsed.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                SignRule::NotificationV1,
            );
            let signature = alipay.sign_base64(content.as_bytes()).unwrap();
            let mut body = form_urlencoded::Serializer::new(String::new());
            for (k, v) in &parsed {
                body.append_pair(k, v);
            }
            body.append_pair("sign", &signature);
            let body = body.finish();
            let _ = adapter.parse_notification(&RawNotification {
                headers: &[],
                body: body.as_bytes(),
                received_at: now,
            });
        },
    );
    let response = br#"{"alipay_trade_query_response":{"code":"10000","msg":"Success","trade_no":"2026","out_trade_no":"pay_FUZZ","trade_status":"TRADE_SUCCESS","total_amount":"1.00"},"sign":"x"}"#;
    let reference = PaymentRef {
        created_at: time::OffsetDateTime::UNIX_EPOCH,
        provider_order_id: "pay_FUZZ".into(),
        amount: Money::new(100, moongate_contract::Currency::CNY),
    };
    fuzz("alipay response", &[response.to_vec()], 5_000, |input| {
        let _ = moongate_adapter_alipay::wire::split_signed_response(
            input,
            "alipay_trade_query_response",
        );
        let resp = HttpResponse {
            status: 200,
            headers: vec![],
            body: input.to_vec(),
            received_at: now,
        };
        let _ = adapter.parse_query(&reference, &resp);
    });
    let node = br#"{"code":"10000","msg":"Success","trade_no":"2026","out_trade_no":"pay_FUZZ","trade_status":"TRADE_SUCCESS","total_amount":"1.00","send_pay_date":"2026-11-22 10:00:00"}"#;
    fuzz("alipay signed response", &[node.to_vec()], 1_000, |input| {
        let node = String::from_utf8_lossy(input);
        let signature = alipay.sign_base64(node.as_bytes()).unwrap();
        let body = format!(r#"{{"alipay_trade_query_response":{node},"sign":"{signature}"}}"#);
        let resp = HttpResponse {
            status: 200,
            headers: vec![],
            body: body.into_bytes(),
            received_at: now,
        };
        let _ = adapter.parse_query(&reference, &resp);
    });
}

#[test]
fn unionpay_raw_answers_and_certificates() {
    let dir = fixtures().join("unionpay");
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let trust = moongate_adapter_unionpay::trust::Trust::from_pem(
        &read("cfca-test-oca1.pem"),
        &read("cfca-test-root.pem"),
    )
    .unwrap();
    let sent = time::macros::datetime!(2024-01-05 16:58:42 +08:00).unix_timestamp();
    let answer = read("v3-refund-answer.txt").into_bytes();
    // The raw answer parser, then the whole check (certificate parse, chain, signature).
    fuzz(
        "unionpay raw answer",
        std::slice::from_ref(&answer),
        20_000,
        |input| {
            let Ok(text) = std::str::from_utf8(input) else {
                return;
            };
            if let Ok(fields) = moongate_adapter_unionpay::raw::parse(text) {
                let _ = trust.verify(&fields, sent);
            }
        },
    );
    // The ZM transaction file, and the notification form.
    let mut zm = moongate_adapter_unionpay::bill::zm_line(&[
        (4, b"1201100000"),
        (6, b"000000008888"),
        (9, b"782212011000000000001"),
        (11, b"pay01KBQ3Z5V7W9X1Y3Z5A7B9C1D3"),
        (19, b"01"),
        (27, b"777290058167151"),
    ]);
    zm.extend_from_slice(b"\r\n");
    fuzz(
        "unionpay zm file",
        std::slice::from_ref(&zm),
        20_000,
        |input| {
            let _ = moongate_adapter_unionpay::bill::read_zm(
                input,
                moongate_contract::statement::StatementLimits::DEFAULT,
                |_| Ok(()),
            );
        },
    );
    let form: Vec<u8> = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(moongate_adapter_unionpay::raw::parse(&read("v3-refund-answer.txt")).unwrap())
        .finish()
        .into_bytes();
    fuzz(
        "unionpay notification",
        std::slice::from_ref(&form),
        10_000,
        |input| {
            let _ = moongate_adapter_unionpay::notify::parse(input, &trust, sent);
        },
    );
    // The X.509 reader on certificate bytes.
    let der: Vec<Vec<u8>> = ["unionpay-test-sign-cert.pem", "cfca-test-root.pem"]
        .iter()
        .map(|name| {
            moongate_contract::crypto::decode_pem(&read(name))
                .unwrap()
                .1
        })
        .collect();
    fuzz("x509 certificate", &der, 20_000, |input| {
        if let Ok(certificate) = moongate_contract::x509::X509::from_der(input) {
            let _ = certificate.serial_decimal();
            let _ = certificate.verify_chain(&certificate, &certificate, sent);
        }
    });
}

#[test]
fn statement_files() {
    let bill = std::fs::read(fixtures().join("wechatpay/bill.ALL.csv")).unwrap();
    fuzz("wechat trade bill", &[bill], 20_000, |input| {
        let _ = moongate_adapter_wechatpay::bill::parse_trade_bill(input);
    });
    // Alipay: the GBK detail CSV itself, and the zip around it.
    let zip = std::fs::read(fixtures().join("alipay/trade-20190916.csv.zip")).unwrap();
    let variant = std::fs::read(fixtures().join("alipay/trade-variant.csv.zip")).unwrap();
    let mut csv = Vec::new();
    {
        let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip.clone())).unwrap();
        std::io::Read::read_to_end(&mut archive.by_index(0).unwrap(), &mut csv).unwrap();
    }
    fuzz("alipay trade bill (csv)", &[csv], 20_000, |input| {
        let _ = moongate_adapter_alipay::bill::read_trade_bill_csv(
            input,
            None,
            &moongate_contract::StatementLimits::DEFAULT,
            &mut |_| Ok(()),
        );
    });
    fuzz("alipay trade bill (zip)", &[zip, variant], 5_000, |input| {
        let mut cursor = std::io::Cursor::new(input.to_vec());
        let _ = moongate_adapter_alipay::bill::read_trade_bill_zip(
            &mut cursor,
            None,
            &moongate_contract::StatementLimits::DEFAULT,
            &mut |_| Ok(()),
        );
    });
}

#[test]
fn config_files() {
    let demo = std::fs::read(fixtures().join("demo/moongate.toml")).unwrap();
    let routes = std::fs::read(fixtures().join("routing/rules.toml")).unwrap();
    fuzz("config", &[demo, routes], 10_000, |input| {
        if let Ok(raw) = moongate::config::parse(&String::from_utf8_lossy(input)) {
            let _ = raw.validate();
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_bodies_and_signature_headers() {
    let h = Harness::start().await;
    let create = br#"{"amount":100,"currency":"CNY","method":"alipay_qr","merchant_reference":"f","description":"Tea","metadata":{"a":"b"},"payer":{"openid":"o"},"channel":"web","expires_in_seconds":600}"#.to_vec();
    let refund = br#"{"amount":1,"reason":"x"}"#.to_vec();
    let seeds = [create, refund];
    let mut mutator = Mutator::new(0xfeed);
    let mut statuses = BTreeMap::new();
    for i in 0..iterations(300) {
        let a = &seeds[mutator.below(seeds.len())];
        let b = &seeds[mutator.below(seeds.len())];
        let body = mutator.mutate(a, b);
        let path = if i % 2 == 0 {
            "/v1/payments".to_owned()
        } else {
            format!("/v1/payments/pay_{i}/refunds")
        };
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut request = h.shop_a.signed(
            HttpMethod::Post,
            &path,
            &body,
            Some(&format!("fz{i}")),
            now,
            &format!("fuzznonce{i:08}"),
        );
        if i % 5 == 0 {
            // Mangle the signature headers themselves.
            let j = mutator.below(request.headers.len());
            let value = mutator.mutate(request.headers[j].1.as_bytes(), b"");
            request.headers[j].1 = String::from_utf8_lossy(&value).into_owned();
        }
        let Ok(response) = h.http.send(&request).await else {
            // A header value that cannot be sent at all: the client refused it.
            continue;
        };
        assert!(
            response.status < 500,
            "HTTP {} for body {}",
            response.status,
            String::from_utf8_lossy(&body)
        );
        *statuses.entry(response.status).or_insert(0) += 1;
    }
    // The server is still there (asked as another merchant: shop A may be over its rate limit).
    let (status, _) = h.get(&h.shop_b, "/v1/payments").await;
    assert_eq!(status, 200, "{statuses:?}");
}
