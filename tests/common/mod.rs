//! Test harness: the gateway, the strict Alipay sandbox and a merchant webhook receiver, all on
//! loopback with ephemeral ports, the checked-in test keys and a fresh SQLite ledger.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)]

pub mod contract;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use moongate::outbound::Outbound;
use moongate::server::{self, Running};
use moongate_contract::{HttpMethod, HttpRequest, HttpResponse};
use moongate_testkit::client::MerchantClient;
use moongate_testkit::sandbox::standard::Standard;
use moongate_testkit::sandbox::wechat::{
    KeyMode, SandboxMerchant, SandboxOfficialAccount, SandboxSubMerchant, WechatSandboxSettings,
};
use moongate_testkit::sandbox::{self, SandboxSettings};
use serde_json::{Value, json};
use tokio::net::TcpListener;

pub const SHOP_A_SECRET: &str = "shop-a-signing-secret-0123456789";
pub const SHOP_B_SECRET: &str = "shop-b-signing-secret-0123456789";
pub const SHOP_C_SECRET: &str = "shop-c-signing-secret-0123456789";
pub const SHOP_D_SECRET: &str = "shop-d-signing-secret-0123456789";
pub const SHOP_E_SECRET: &str = "shop-e-signing-secret-0123456789";
pub const SHOP_F_SECRET: &str = "shop-f-signing-secret-0123456789";
pub const SHOP_G_SECRET: &str = "shop-g-signing-secret-0123456789";
pub const SHOP_H_SECRET: &str = "shop-h-signing-secret-0123456789";
pub const WEBHOOK_SECRET_OLD: &str = "webhook-secret-old-0123456789";
pub const WEBHOOK_SECRET_NEW: &str = "webhook-secret-new-0123456789";
pub const CASHIER_KEY: &str = "cashier-key-shared-by-instances-0123456789";
pub const APP_ID: &str = "2021000122671080";
/// The sandbox app in Alipay's certificate mode (shop E).
pub const CERT_APP_ID: &str = moongate_testkit::sandbox::standard::ALIPAY_SECOND_APP_ID;
/// Shop F's own Alipay app, which authorised the ISV app [`APP_ID`] with this token.
pub const ISV_MERCHANT_APP_ID: &str = "2021000122679999";
pub const ISV_APP_AUTH_TOKEN: &str = "202612BB7c6a8f1e4d2b40a9b1c3d5e7f9a0b2c4";
/// Shop G's own Alipay app, which authorised the same ISV app with its own token.
pub const ISV_MERCHANT_APP_ID_G: &str = "2021000122678888";
pub const ISV_APP_AUTH_TOKEN_G: &str = "202612BB0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a";
/// Shop H's own Alipay app: it authorises the ISV app through Moongate (no token configured).
pub const ISV_MERCHANT_APP_ID_H: &str = "2021000122676666";
/// The WeChat Pay service provider (partner `wx_sp`) shops F and G are sub-merchants of.
pub const SP_MCHID: &str = "1900009191";
pub const SP_APPID: &str = "wx8888888888888888";
pub const APIV3_KEY_SP: &str = "5p5p5p5p0123456789abcdef5p5p5p5p";
pub const V2_KEY_SP: &str = "5pv25pv2192006250b4c09247ec02edc";
/// Shop F's sub-merchant id (payers under the provider's app).
pub const SUB_MCHID_F: &str = "1900000201";
/// Shop G's sub-merchant id, with its own app.
pub const SUB_MCHID_G: &str = "1900000202";
pub const SUB_APPID_G: &str = "wxd678efh567hg6999";
pub const MCHID_A: &str = "1230000109";
pub const MCHID_B: &str = "1900000109";
pub const WX_APPID: &str = "wxd678efh567hg6787";
/// The AppSecret of the official account [`WX_APPID`] (its web OAuth).
pub const WX_APP_SECRET: &str = "0123456789abcdef0123456789abcdef";
/// The AppSecret of shop G's own official account ([`SUB_APPID_G`]).
pub const WX_SUB_APP_SECRET: &str = "fedcba9876543210fedcba9876543210";
pub const APIV3_KEY_A: &str = "0123456789abcdef0123456789abcdef";
pub const APIV3_KEY_B: &str = "fedcba9876543210fedcba9876543210";
pub const V2_KEY_A: &str = "192006250b4c09247ec02edce69f6a2d";
pub const PUB_KEY_ID: &str = "PUB_KEY_ID_0112300001092026112200000000000001";
pub const MERCHANT_SERIAL: &str = "F5765756002FDD77";
pub const UNIONPAY_MER_ID: &str = "777290058167151";
pub const CERT_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";

/// An SN of `fixtures/alipay/certs/sandbox/sns.txt` (openssl and Python computed them).
pub fn alipay_sn(which: &str) -> String {
    moongate_testkit::sandbox::standard::alipay_sn(&fixtures(), which).unwrap()
}

pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

#[derive(Clone, Debug)]
pub struct Delivered {
    pub signature: String,
    pub event_id: String,
    pub body: String,
}

pub struct Harness {
    pub gateway: Running,
    pub sandbox_addr: SocketAddr,
    pub wechat_addr: SocketAddr,
    pub unionpay_addr: SocketAddr,
    pub shop_a: MerchantClient,
    pub shop_b: MerchantClient,
    /// Tight limits: 1 request/s with a burst of 5; its Alipay account 1 call/s, burst 1.
    pub shop_c: MerchantClient,
    /// Failover: a dead account (refused connections), one with the wrong key (refused
    /// signatures) and a good one, behind priority rules chosen by a `path` tag.
    pub shop_d: MerchantClient,
    /// Alipay's certificate mode (app [`CERT_APP_ID`]), both of Alipay's certificates held.
    pub shop_e: MerchantClient,
    /// Served through the ISV partner `isv` (app [`APP_ID`]), as merchant app
    /// [`ISV_MERCHANT_APP_ID`]; and through the WeChat Pay partner `wx_sp`, as sub-merchant
    /// [`SUB_MCHID_F`].
    pub shop_f: MerchantClient,
    /// Shop F's sibling under both partners: merchant app [`ISV_MERCHANT_APP_ID_G`],
    /// sub-merchant [`SUB_MCHID_G`] with its own app [`SUB_APPID_G`].
    pub shop_g: MerchantClient,
    /// Under the ISV partner too, as merchant app [`ISV_MERCHANT_APP_ID_H`], which authorises
    /// the ISV app through Moongate: until it does, its account has no token.
    pub shop_h: MerchantClient,
    pub webhooks: Arc<Mutex<Vec<Delivered>>>,
    /// Where the webhook receiver listens (`POST /hooks`).
    pub hook_addr: SocketAddr,
    pub http: Outbound,
    /// The config file the gateway was built from (tests rewrite it to reload).
    pub config_path: PathBuf,
    /// The PostgreSQL schema holding the ledger, when it is not SQLite.
    pub schema: Option<PgSchema>,
    _dir: tempfile::TempDir,
}

/// A merchant client whose every `/v1` answer is checked against `openapi.yaml`.
pub fn client(base: &str, key_id: &str, secret: &str) -> MerchantClient {
    MerchantClient::new(base, key_id, secret.as_bytes())
        .unwrap()
        .observed(contract::observer())
}

async fn loopback() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with_timeout(2_000).await
    }

    pub async fn start_with_timeout(call_timeout_ms: u64) -> Harness {
        Self::start_with(call_timeout_ms, None).await
    }

    /// A harness whose merchant limits are shared through the Redis at `redis_url`.
    pub async fn start_with_redis(redis_url: &str) -> Harness {
        Self::start_with(2_000, Some(redis_url)).await
    }

    pub async fn start_with(call_timeout_ms: u64, redis_url: Option<&str>) -> Harness {
        Self::start_full(call_timeout_ms, redis_url, None, None).await
    }

    /// A harness for several instances: its merchant limits shared through Redis under
    /// `redis_prefix`, its ledger in the PostgreSQL database at `database_url`.
    pub async fn start_shared(redis_url: &str, redis_prefix: &str, database_url: &str) -> Harness {
        Self::start_full(
            2_000,
            Some(redis_url),
            Some(redis_prefix),
            Some(database_url),
        )
        .await
    }

    /// A harness whose ledger is a fresh PostgreSQL schema; `None` (the test says it is
    /// skipped) without `MOONGATE_TEST_DATABASE_URL`.
    pub async fn start_on_postgres(test: &str) -> Option<Harness> {
        let schema = pg_schema(test).await?;
        let mut h = Self::start_full(2_000, None, None, Some(&schema.url)).await;
        h.schema = Some(schema);
        Some(h)
    }

    pub async fn start_full(
        call_timeout_ms: u64,
        redis_url: Option<&str>,
        redis_prefix: Option<&str>,
        database_url: Option<&str>,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let keys = fixtures().join("keys");

        let (sandbox_listener, sandbox_addr) = loopback().await;
        // Moongate's own address first: the sandboxes register it as the apps' OAuth domain.
        let (gateway_listener, gateway_addr) = loopback().await;
        let settings = SandboxSettings {
            private_key_pem: std::fs::read_to_string(keys.join("sandbox-alipay-private-key.pem"))
                .unwrap(),
            apps: vec![(
                APP_ID.to_owned(),
                std::fs::read_to_string(keys.join("nodejs-sdk-app-public-key.pem")).unwrap(),
            )],
            time_divisor: 1000,
            seller_id: "2088102177846875".to_owned(),
            // The standard sandbox's: app CERT_APP_ID, the current and the next certificate.
            certificate_mode: Standard::load(&fixtures(), 1000)
                .unwrap()
                .alipay
                .certificate_mode,
            // Shop F's and shop G's merchant apps authorised the ISV app (the harness's APP_ID).
            authorisations: vec![
                (
                    ISV_APP_AUTH_TOKEN.to_owned(),
                    APP_ID.to_owned(),
                    ISV_MERCHANT_APP_ID.to_owned(),
                ),
                (
                    ISV_APP_AUTH_TOKEN_G.to_owned(),
                    APP_ID.to_owned(),
                    ISV_MERCHANT_APP_ID_G.to_owned(),
                ),
            ],
            callback_domains: vec![
                (APP_ID.to_owned(), gateway_addr.to_string()),
                (CERT_APP_ID.to_owned(), gateway_addr.to_string()),
            ],
        };
        sandbox::start_on(settings, sandbox_listener).await.unwrap();

        let (wechat_listener, wechat_addr) = loopback().await;
        let read = |name: &str| std::fs::read_to_string(keys.join(name)).unwrap();
        let merchant_public = read("wechatpay-go-merchant-public-key.pem");
        let wechat_settings = WechatSandboxSettings {
            private_key_pem: read("sandbox-wechatpay-private-key.pem"),
            certificate_pem: read("sandbox-wechatpay-platform-cert.pem"),
            certificate_serial: CERT_SERIAL.to_owned(),
            public_key_id: PUB_KEY_ID.to_owned(),
            merchants: vec![
                SandboxMerchant {
                    mchid: MCHID_A.to_owned(),
                    appids: vec![WX_APPID.to_owned()],
                    merchant_serial_no: MERCHANT_SERIAL.to_owned(),
                    merchant_public_key_pem: merchant_public.clone(),
                    apiv3_key: APIV3_KEY_A.to_owned(),
                    api_v2_key: Some(V2_KEY_A.to_owned()),
                    key_mode: KeyMode::PublicKey,
                    sub_merchants: vec![],
                },
                SandboxMerchant {
                    mchid: MCHID_B.to_owned(),
                    appids: vec![WX_APPID.to_owned()],
                    merchant_serial_no: MERCHANT_SERIAL.to_owned(),
                    merchant_public_key_pem: merchant_public.clone(),
                    apiv3_key: APIV3_KEY_B.to_owned(),
                    api_v2_key: None,
                    key_mode: KeyMode::Certificate,
                    sub_merchants: vec![],
                },
                // A service provider (its own app, the same test key) with shops F and G
                // bound to it.
                SandboxMerchant {
                    mchid: SP_MCHID.to_owned(),
                    appids: vec![SP_APPID.to_owned()],
                    merchant_serial_no: MERCHANT_SERIAL.to_owned(),
                    merchant_public_key_pem: merchant_public,
                    apiv3_key: APIV3_KEY_SP.to_owned(),
                    api_v2_key: Some(V2_KEY_SP.to_owned()),
                    key_mode: KeyMode::PublicKey,
                    sub_merchants: vec![
                        SandboxSubMerchant {
                            sub_mchid: SUB_MCHID_F.to_owned(),
                            appids: vec![],
                        },
                        SandboxSubMerchant {
                            sub_mchid: SUB_MCHID_G.to_owned(),
                            appids: vec![SUB_APPID_G.to_owned()],
                        },
                    ],
                },
            ],
            time_divisor: 1000,
            // The official account behind WX_APPID, whose web OAuth gives shoppers' openids.
            official_accounts: vec![
                SandboxOfficialAccount {
                    appid: WX_APPID.to_owned(),
                    secret: WX_APP_SECRET.to_owned(),
                    oauth_domains: vec![gateway_addr.to_string()],
                },
                // Shop G's own, under which its payers are sub_openids.
                SandboxOfficialAccount {
                    appid: SUB_APPID_G.to_owned(),
                    secret: WX_SUB_APP_SECRET.to_owned(),
                    oauth_domains: vec![gateway_addr.to_string()],
                },
            ],
        };
        sandbox::wechat::start_on(wechat_settings, wechat_listener)
            .await
            .unwrap();

        let (unionpay_listener, unionpay_addr) = loopback().await;
        let up = fixtures().join("unionpay");
        let up_read = |name: &str| std::fs::read_to_string(up.join(name)).unwrap();
        sandbox::unionpay::start_on(
            sandbox::unionpay::UnionPaySandboxSettings {
                sign_key_pem: up_read("sandbox-sign-key.pem"),
                sign_cert_pem: up_read("sandbox-sign-cert.pem"),
                merchants: vec![sandbox::unionpay::UnionPayMerchant {
                    mer_id: UNIONPAY_MER_ID.to_owned(),
                    // The test merchant certificate's serial (more-wallets.md §1.7).
                    cert_id: "69903319369".to_owned(),
                    public_key_pem: up_read("test-merchant-public-key.pem"),
                }],
                time_divisor: 1000,
            },
            unionpay_listener,
        )
        .await
        .unwrap();

        let webhooks = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&webhooks);
        let (hook_listener, hook_addr) = loopback().await;
        let receiver = axum::Router::new().route(
            "/hooks",
            axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                let sink = Arc::clone(&sink);
                async move {
                    let get = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    // The body must be the documented webhook event: one that is not is
                    // refused (so never counted as delivered) and said why.
                    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if let Err(problem) =
                        contract::check_value("/components/schemas/WebhookEvent", &event)
                    {
                        eprintln!("webhook does not match openapi.yaml: {problem}\n{event}");
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    sink.lock().unwrap().push(Delivered {
                        signature: get("moongate-signature"),
                        event_id: get("moongate-event-id"),
                        body: String::from_utf8(body.to_vec()).unwrap(),
                    });
                    StatusCode::OK
                }
            }),
        );
        tokio::spawn(async move { axum::serve(hook_listener, receiver).await.unwrap() });

        for (name, value) in [
            ("a.secret", SHOP_A_SECRET),
            ("b.secret", SHOP_B_SECRET),
            ("c.secret", SHOP_C_SECRET),
            ("d.secret", SHOP_D_SECRET),
            ("e.secret", SHOP_E_SECRET),
            ("f.secret", SHOP_F_SECRET),
            ("f.token", ISV_APP_AUTH_TOKEN),
            ("g.secret", SHOP_G_SECRET),
            ("g.token", ISV_APP_AUTH_TOKEN_G),
            ("h.secret", SHOP_H_SECRET),
            ("apiv3-sp.secret", APIV3_KEY_SP),
            ("v2-sp.secret", V2_KEY_SP),
            ("w-old.secret", WEBHOOK_SECRET_OLD),
            ("w-new.secret", WEBHOOK_SECRET_NEW),
            ("apiv3-a.secret", APIV3_KEY_A),
            ("apiv3-b.secret", APIV3_KEY_B),
            ("v2-a.secret", V2_KEY_A),
            ("wx-app.secret", WX_APP_SECRET),
            ("wx-sub-app.secret", WX_SUB_APP_SECRET),
        ] {
            std::fs::write(dir.path().join(name), format!("{value}\n")).unwrap();
        }
        let app_key = keys.join("nodejs-sdk-app-private-key.pem");
        let alipay_key = keys.join("sandbox-alipay-public-key.pem");
        let wx_key = keys.join("wechatpay-go-merchant-private-key.pem");
        let wx_public = keys.join("sandbox-wechatpay-public-key.pem");
        let wx_cert = keys.join("sandbox-wechatpay-platform-cert.pem");
        let config = format!(
            r#"
[server]
listen = "{gateway_addr}"
public_base_url = "http://{gateway_addr}"
admin_listen = "127.0.0.1:0"
header_read_timeout_ms = 1000

[ledger]
path = "ledger.db"

[webhooks]
initial_backoff_ms = 50
max_backoff_ms = 200
max_attempts = 5
timeout_ms = 2000

[providers]
connect_timeout_ms = 1000
call_timeout_ms = {call_timeout_ms}
recheck_interval_ms = 3600000
payment_code_poll_ms = 50

[cashier]
sandbox_wallets = {{ alipay = "http://{sandbox_addr}/sandbox/wallet", wechatpay = "http://{wechat_addr}/sandbox/wallet" }}

[merchants.shop_a]
name = "Shop A"
keys = [{{ id = "shop_a_k1", secret = {{ file = "a.secret" }} }}]
webhook = {{ url = "http://{hook_addr}/hooks", secrets = [{{ file = "w-old.secret" }}, {{ file = "w-new.secret" }}] }}

[merchants.shop_a.accounts.alipay_main]
provider = "alipay"
settings = {{ app_id = "{APP_ID}", app_private_key = {{ file = "{app_key}" }}, alipay_public_key = {{ file = "{alipay_key}" }}, gateway_url = "http://{sandbox_addr}/gateway.do" }}

# Mixed mode: the public key and the platform certificate, as while migrating.
[merchants.shop_a.accounts.wechat_main]
provider = "wechatpay"
fee_rate = "0.6%"
[merchants.shop_a.accounts.wechat_main.settings]
mchid = "{MCHID_A}"
appid = "{WX_APPID}"
merchant_serial_no = "{MERCHANT_SERIAL}"
merchant_private_key = {{ file = "{wx_key}" }}
apiv3_key = {{ file = "apiv3-a.secret" }}
api_v2_key = {{ file = "v2-a.secret" }}
wechatpay_public_key = {{ file = "{wx_public}" }}
wechatpay_public_key_id = "{PUB_KEY_ID}"
platform_certificates = [{{ file = "{wx_cert}" }}]
api_base_url = "http://{wechat_addr}"

[merchants.shop_a.accounts.unionpay_main]
provider = "unionpay"
[merchants.shop_a.accounts.unionpay_main.settings]
mer_id = "{UNIONPAY_MER_ID}"
signing_key = {{ file = "{up_dir}/test-merchant-private-key.pem" }}
signing_certificate = {{ file = "{up_dir}/test-merchant-cert.pem" }}
middle_certificate = {{ file = "{up_dir}/sandbox-middle.pem" }}
root_certificate = {{ file = "{up_dir}/sandbox-root.pem" }}
gateway_url = "http://{unionpay_addr}/gateway/api"
file_url = "http://{unionpay_addr}/"

# Routing: payments tagged for the cross-border app go to WeChat Pay when it can serve them;
# everything else goes to the first account of the list that can.
[[merchants.shop_a.routes]]
name = "tagged-wechat"
match = {{ wallets = ["wechatpay"], tags = {{ campaign = "double11" }} }}
to = {{ account = "wechat_main" }}

[[merchants.shop_a.routes]]
name = "default"
to = {{ priority = ["alipay_main", "wechat_main", "unionpay_main"] }}

[merchants.shop_b]
name = "Shop B"
keys = [{{ id = "shop_b_k1", secret = {{ file = "b.secret" }} }}]

# The JSAPI product: inside the Alipay app the cashier learns the payer (auth_base).
[merchants.shop_b.accounts.alipay_main]
provider = "alipay"
settings = {{ app_id = "{APP_ID}", app_private_key = {{ file = "{app_key}" }}, alipay_public_key = {{ file = "{alipay_key}" }}, gateway_url = "http://{sandbox_addr}/gateway.do", jsapi = true, user_authorize_url = "http://{sandbox_addr}/oauth2/publicAppAuthorize.htm" }}

# An ISV (the harness's Alipay app) declared once; shop F is served through it.
[partners.isv]
provider = "alipay"
settings = {{ app_id = "{APP_ID}", app_private_key = {{ file = "{app_key}" }}, alipay_public_key = {{ file = "{alipay_key}" }}, gateway_url = "http://{sandbox_addr}/gateway.do", consent_url = "http://{sandbox_addr}/oauth2/appToAppAuth.htm", user_authorize_url = "http://{sandbox_addr}/oauth2/publicAppAuthorize.htm" }}

[merchants.shop_f]
name = "Shop F"
keys = [{{ id = "shop_f_k1", secret = {{ file = "f.secret" }} }}]

[merchants.shop_f.accounts.alipay_isv]
provider = "alipay"
partner = "isv"
settings = {{ auth_app_id = "{ISV_MERCHANT_APP_ID}", app_auth_token = {{ file = "f.token" }}, jsapi = true }}

# A WeChat Pay service provider declared once; shops F and G are its sub-merchants.
[partners.wx_sp]
provider = "wechatpay"
[partners.wx_sp.settings]
mchid = "{SP_MCHID}"
appid = "{SP_APPID}"
merchant_serial_no = "{MERCHANT_SERIAL}"
merchant_private_key = {{ file = "{wx_key}" }}
apiv3_key = {{ file = "apiv3-sp.secret" }}
api_v2_key = {{ file = "v2-sp.secret" }}
wechatpay_public_key = {{ file = "{wx_public}" }}
wechatpay_public_key_id = "{PUB_KEY_ID}"
api_base_url = "http://{wechat_addr}"

[merchants.shop_f.accounts.wechat_sub]
provider = "wechatpay"
partner = "wx_sp"
fee_rate = "0.6%"
settings = {{ sub_mchid = "{SUB_MCHID_F}" }}

[merchants.shop_g]
name = "Shop G"
keys = [{{ id = "shop_g_k1", secret = {{ file = "g.secret" }} }}]

[merchants.shop_g.accounts.alipay_isv]
provider = "alipay"
partner = "isv"
settings = {{ auth_app_id = "{ISV_MERCHANT_APP_ID_G}", app_auth_token = {{ file = "g.token" }} }}

[merchants.shop_g.accounts.wechat_sub]
provider = "wechatpay"
partner = "wx_sp"
fee_rate = "0.6%"
settings = {{ sub_mchid = "{SUB_MCHID_G}", sub_appid = "{SUB_APPID_G}", oauth_app_secret = {{ file = "wx-sub-app.secret" }}, oauth_authorize_url = "http://{wechat_addr}/connect/oauth2/authorize", oauth_api_url = "http://{wechat_addr}" }}

# Authorises the ISV app through Moongate: no app_auth_token configured.
[merchants.shop_h]
name = "Shop H"
keys = [{{ id = "shop_h_k1", secret = {{ file = "h.secret" }} }}]

[merchants.shop_h.accounts.alipay_isv]
provider = "alipay"
partner = "isv"
settings = {{ auth_app_id = "{ISV_MERCHANT_APP_ID_H}" }}

# Alipay's certificate mode, Alipay's current and next certificates configured.
[merchants.shop_e]
name = "Shop E"
keys = [{{ id = "shop_e_k1", secret = {{ file = "e.secret" }} }}]

[merchants.shop_e.accounts.alipay_main]
provider = "alipay"
[merchants.shop_e.accounts.alipay_main.settings]
app_id = "{CERT_APP_ID}"
app_private_key = {{ file = "{app_key}" }}
app_cert = {{ file = "{certs}/app_cert_public_key.crt" }}
alipay_certs = [{{ file = "{certs}/alipay_cert_public_key_rsa2.crt" }}, {{ file = "{certs}/alipay_cert_public_key_rsa2_next.crt" }}]
alipay_root_cert = {{ file = "{certs}/alipay_root_cert.crt" }}
gateway_url = "http://{sandbox_addr}/gateway.do"

[merchants.shop_c]
name = "Shop C"
keys = [{{ id = "shop_c_k1", secret = {{ file = "c.secret" }} }}]
rate_limit = {{ requests_per_second = 1, burst = 5 }}

[merchants.shop_c.accounts.alipay_main]
provider = "alipay"
rate_limit = {{ requests_per_second = 1, burst = 1, max_wait_ms = 100 }}
settings = {{ app_id = "{APP_ID}", app_private_key = {{ file = "{app_key}" }}, alipay_public_key = {{ file = "{alipay_key}" }}, gateway_url = "http://{sandbox_addr}/gateway.do" }}

[merchants.shop_d]
name = "Shop D"
keys = [{{ id = "shop_d_k1", secret = {{ file = "d.secret" }} }}]

[merchants.shop_d.accounts.dead]
provider = "alipay"
settings = {{ app_id = "{APP_ID}", app_private_key = {{ file = "{app_key}" }}, alipay_public_key = {{ file = "{alipay_key}" }}, gateway_url = "http://127.0.0.1:1/gateway.do" }}

[merchants.shop_d.accounts.wrong_key]
provider = "alipay"
settings = {{ app_id = "{APP_ID}", app_private_key = {{ file = "{wrong_key}" }}, alipay_public_key = {{ file = "{alipay_key}" }}, gateway_url = "http://{sandbox_addr}/gateway.do" }}

[merchants.shop_d.accounts.good]
provider = "alipay"
settings = {{ app_id = "{APP_ID}", app_private_key = {{ file = "{app_key}" }}, alipay_public_key = {{ file = "{alipay_key}" }}, gateway_url = "http://{sandbox_addr}/gateway.do" }}

[[merchants.shop_d.routes]]
name = "refused-first"
match = {{ tags = {{ path = "refused" }} }}
to = {{ priority = ["dead", "good"] }}

[[merchants.shop_d.routes]]
name = "rejected-first"
match = {{ tags = {{ path = "rejected" }} }}
to = {{ priority = ["wrong_key", "good"] }}

[[merchants.shop_d.routes]]
name = "good-first"
to = {{ priority = ["good", "dead"] }}

# Certificate mode only.
[merchants.shop_b.accounts.wechat_main]
provider = "wechatpay"
[merchants.shop_b.accounts.wechat_main.settings]
mchid = "{MCHID_B}"
appid = "{WX_APPID}"
merchant_serial_no = "{MERCHANT_SERIAL}"
merchant_private_key = {{ file = "{wx_key}" }}
apiv3_key = {{ file = "apiv3-b.secret" }}
platform_certificates = [{{ file = "{wx_cert}" }}]
api_base_url = "http://{wechat_addr}"
# Its official account's secret: inside WeChat the cashier learns the payer's openid.
oauth_app_secret = {{ file = "wx-app.secret" }}
oauth_authorize_url = "http://{wechat_addr}/connect/oauth2/authorize"
oauth_api_url = "http://{wechat_addr}"
"#,
            app_key = app_key.display(),
            alipay_key = alipay_key.display(),
            wx_key = wx_key.display(),
            wrong_key = keys.join("sandbox-alipay-private-key.pem").display(),
            wx_public = wx_public.display(),
            wx_cert = wx_cert.display(),
            certs = fixtures().join("alipay/certs/sandbox").display(),
            up_dir = up.display(),
        );
        let config = match redis_url {
            Some(url) => {
                std::fs::write(dir.path().join("redis.url"), format!("{url}\n")).unwrap();
                let prefix = redis_prefix
                    .map(|p| format!("redis_key_prefix = \"{p}\"\n"))
                    .unwrap_or_default();
                format!(
                    "{config}\n[rate_limits]\nredis_url = {{ file = \"redis.url\" }}\nredis_timeout_ms = 200\n{prefix}"
                )
            }
            None => config,
        };
        let config = match database_url {
            Some(url) => {
                std::fs::write(dir.path().join("database.url"), format!("{url}\n")).unwrap();
                // Every instance over one database derives the same cashier links.
                std::fs::write(dir.path().join("cashier.key"), CASHIER_KEY).unwrap();
                config
                    .replacen(
                        "[ledger]\n",
                        "[ledger]\ndatabase_url = { file = \"database.url\" }\nmax_connections = 8\n",
                        1,
                    )
                    .replacen(
                        "[server]\n",
                        "[server]\ncashier_key = { file = \"cashier.key\" }\n",
                        1,
                    )
            }
            None => config,
        };
        let config_path = dir.path().join("moongate.toml");
        std::fs::write(&config_path, config).unwrap();
        let config = moongate::config::load(&config_path)
            .unwrap()
            .build(dir.path())
            .unwrap();
        let store = server::open_store(&config).await.unwrap();
        let gateway = server::start_on(config, store, gateway_listener)
            .await
            .unwrap();
        let base = format!("http://{gateway_addr}");
        Harness {
            gateway,
            sandbox_addr,
            wechat_addr,
            unionpay_addr,
            shop_a: client(&base, "shop_a_k1", SHOP_A_SECRET),
            shop_b: client(&base, "shop_b_k1", SHOP_B_SECRET),
            shop_c: client(&base, "shop_c_k1", SHOP_C_SECRET),
            shop_d: client(&base, "shop_d_k1", SHOP_D_SECRET),
            shop_e: client(&base, "shop_e_k1", SHOP_E_SECRET),
            shop_f: client(&base, "shop_f_k1", SHOP_F_SECRET),
            shop_g: client(&base, "shop_g_k1", SHOP_G_SECRET),
            shop_h: client(&base, "shop_h_k1", SHOP_H_SECRET),
            webhooks,
            hook_addr,
            http: Outbound::new(Duration::from_secs(1), Duration::from_secs(10)).unwrap(),
            config_path,
            schema: None,
            _dir: dir,
        }
    }

    /// The delivered `type` event about `object_id`, waiting up to five seconds; its
    /// signature verified with `secret`.
    pub async fn verified_webhook(&self, kind: &str, object_id: &str, secret: &str) -> Value {
        for _ in 0..100 {
            let found = self.webhooks.lock().unwrap().iter().find_map(|d| {
                let event: Value = serde_json::from_str(&d.body).ok()?;
                (event["type"] == kind && event["data"]["object"]["id"] == object_id)
                    .then(|| (d.clone(), event))
            });
            if let Some((delivered, event)) = found {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                assert!(
                    moongate_testkit::storefront::verify_webhook(
                        &delivered.signature,
                        delivered.body.as_bytes(),
                        secret.as_bytes(),
                        now,
                        300
                    ),
                    "{kind} for {object_id} does not verify with its merchant's secret"
                );
                return event;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no {kind} delivered for {object_id}");
    }

    /// Points shop B's webhook at `url` (a config reload, as an operator would).
    pub fn shop_b_webhook(&self, url: &str) {
        let mut text = std::fs::read_to_string(&self.config_path).unwrap();
        let start = text.find("name = \"Shop B\"\n").unwrap() + "name = \"Shop B\"\n".len();
        if text[start..].starts_with("webhook = ") {
            let end = start + text[start..].find('\n').unwrap() + 1;
            text.replace_range(start..end, "");
        }
        text.insert_str(
            start,
            &format!(
                "webhook = {{ url = \"{url}\", secrets = [{{ file = \"w-old.secret\" }}] }}\n"
            ),
        );
        std::fs::write(&self.config_path, text).unwrap();
        moongate::server::reload(&self.gateway.gateway, &self.config_path).unwrap();
    }

    /// The sandbox and the `shop_a` account the harness sets up for a provider: the one line a
    /// new provider adds here (with its sandbox and account above) to join the conformance kit.
    pub fn provider(&self, kind: moongate_contract::ProviderKind) -> (SocketAddr, &'static str) {
        match kind {
            moongate_contract::ProviderKind::Alipay => (self.sandbox_addr, "alipay_main"),
            moongate_contract::ProviderKind::WechatPay => (self.wechat_addr, "wechat_main"),
            moongate_contract::ProviderKind::UnionPay => (self.unionpay_addr, "unionpay_main"),
        }
    }

    /// The client of a harness merchant, by its id.
    pub fn merchant(&self, id: &str) -> &MerchantClient {
        match id {
            "shop_a" => &self.shop_a,
            "shop_b" => &self.shop_b,
            "shop_c" => &self.shop_c,
            "shop_d" => &self.shop_d,
            "shop_e" => &self.shop_e,
            "shop_f" => &self.shop_f,
            "shop_g" => &self.shop_g,
            "shop_h" => &self.shop_h,
            other => panic!("the harness has no merchant {other}"),
        }
    }

    /// POSTs JSON to a sandbox control endpoint.
    pub async fn control(&self, sandbox: SocketAddr, path: &str, body: Value) -> HttpResponse {
        let request = HttpRequest {
            method: HttpMethod::Post,
            url: format!("http://{sandbox}{path}"),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        };
        self.http.send(&request).await.unwrap()
    }

    /// A plain GET (sandbox controls, the admin listener).
    pub async fn http_get(&self, url: &str) -> HttpResponse {
        let request = HttpRequest {
            method: HttpMethod::Get,
            url: url.to_owned(),
            headers: vec![],
            body: vec![],
        };
        self.http.send(&request).await.unwrap()
    }

    /// The notifications a sandbox sent for an order.
    pub async fn sent(&self, sandbox: SocketAddr, out_trade_no: &str) -> Vec<Value> {
        let url = format!("http://{sandbox}/sandbox/notifications?out_trade_no={out_trade_no}");
        serde_json::from_slice(&self.http_get(&url).await.body).unwrap()
    }

    /// How many provider calls a sandbox has received.
    pub async fn provider_calls(&self, sandbox: SocketAddr) -> u64 {
        let response = self
            .http_get(&format!("http://{sandbox}/sandbox/stats"))
            .await;
        let stats: Value = serde_json::from_slice(&response.body).unwrap();
        stats["calls"].as_u64().unwrap()
    }

    pub async fn sandbox(&self, path: &str, body: Value) -> HttpResponse {
        self.control(self.sandbox_addr, path, body).await
    }

    pub async fn wechat(&self, path: &str, body: Value) -> HttpResponse {
        self.control(self.wechat_addr, path, body).await
    }

    pub async fn sandbox_notifications(&self, out_trade_no: &str) -> Vec<Value> {
        self.sent(self.sandbox_addr, out_trade_no).await
    }

    pub async fn wechat_notifications(&self, out_trade_no: &str) -> Vec<Value> {
        self.sent(self.wechat_addr, out_trade_no).await
    }

    /// Creates a payment from a JSON body; returns (HTTP status, JSON).
    pub async fn create_with(
        &self,
        client: &MerchantClient,
        body: Value,
        key: &str,
    ) -> (u16, Value) {
        let response = client
            .call(
                HttpMethod::Post,
                "/v1/payments",
                body.to_string().as_bytes(),
                Some(key),
            )
            .await
            .unwrap();
        (
            response.status,
            serde_json::from_slice(&response.body).unwrap_or(Value::Null),
        )
    }

    pub async fn fault(&self, mode: &str, count: u32) {
        let response = self
            .sandbox("/sandbox/fault", json!({"mode": mode, "count": count}))
            .await;
        assert_eq!(response.status, 204);
    }

    pub async fn post_notification(&self, merchant: &str, body: &str) -> HttpResponse {
        let request = HttpRequest {
            method: HttpMethod::Post,
            url: format!(
                "http://{}/notify/alipay/{merchant}/alipay_main",
                self.gateway.addr
            ),
            headers: vec![(
                "content-type".into(),
                "application/x-www-form-urlencoded".into(),
            )],
            body: body.as_bytes().to_vec(),
        };
        self.http.send(&request).await.unwrap()
    }

    /// Creates a QR payment and returns (HTTP status, JSON).
    pub async fn create(&self, client: &MerchantClient, amount: i64, key: &str) -> (u16, Value) {
        let body = json!({
            "amount": amount, "currency": "CNY", "method": "alipay_qr",
            "merchant_reference": format!("order-{key}"), "description": "Tea",
        });
        let response = client
            .call(
                HttpMethod::Post,
                "/v1/payments",
                body.to_string().as_bytes(),
                Some(key),
            )
            .await
            .unwrap();
        (
            response.status,
            serde_json::from_slice(&response.body).unwrap_or(Value::Null),
        )
    }

    pub async fn get(&self, client: &MerchantClient, path: &str) -> (u16, Value) {
        let response = client.call(HttpMethod::Get, path, b"", None).await.unwrap();
        (
            response.status,
            serde_json::from_slice(&response.body).unwrap_or(Value::Null),
        )
    }

    pub async fn post(
        &self,
        client: &MerchantClient,
        path: &str,
        body: &str,
        key: &str,
    ) -> (u16, Value) {
        let response = client
            .call(HttpMethod::Post, path, body.as_bytes(), Some(key))
            .await
            .unwrap();
        (
            response.status,
            serde_json::from_slice(&response.body).unwrap_or(Value::Null),
        )
    }

    /// Polls a payment until it reaches `status` (or panics after 5 s).
    pub async fn wait_for(&self, client: &MerchantClient, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..100 {
            let (_, payment) = self.get(client, &format!("/v1/payments/{id}")).await;
            if payment["status"] == status {
                return payment;
            }
            last = payment;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("payment {id} never reached {status}: {last}");
    }

    /// Polls a refund until it reaches `status`.
    pub async fn wait_for_refund(&self, client: &MerchantClient, id: &str, status: &str) -> Value {
        let mut last = Value::Null;
        for _ in 0..100 {
            let (_, refund) = self.get(client, &format!("/v1/refunds/{id}")).await;
            if refund["status"] == status {
                return refund;
            }
            last = refund;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("refund {id} never reached {status}: {last}");
    }

    /// Lets the sandboxes hand out today's bills (they refuse the current day, like the
    /// providers); `tamper_wechat` has the WeChat Pay sandbox alter its next download.
    pub async fn advance_statement_clock(&self, tamper_wechat: bool) {
        let tomorrow = moongate::reconcile::run::format_day(
            moongate_contract::statement::beijing_day(time::OffsetDateTime::now_utc())
                .next_day()
                .unwrap(),
        );
        for (path, addr) in [("alipay", self.sandbox_addr), ("wechat", self.wechat_addr)] {
            let tamper = tamper_wechat && path == "wechat";
            let response = self
                .control(
                    addr,
                    "/sandbox/statement-clock",
                    json!({"today": tomorrow, "tamper_next": tamper}),
                )
                .await;
            assert_eq!(response.status, 204, "{path}");
        }
    }

    /// Creates and pays a QR payment; returns its id.
    pub async fn paid_payment(&self, amount: i64, key: &str) -> String {
        let (status, payment) = self.create(&self.shop_a, amount, key).await;
        assert_eq!(status, 201, "{payment}");
        let id = payment["id"].as_str().unwrap().to_owned();
        let paid = self
            .sandbox("/sandbox/pay", json!({"out_trade_no": id}))
            .await;
        assert_eq!(paid.status, 200, "{}", String::from_utf8_lossy(&paid.body));
        self.wait_for(&self.shop_a, &id, "succeeded").await;
        id
    }

    pub async fn event_kinds(&self, id: &str) -> Vec<String> {
        self.gateway
            .gateway
            .store
            .events_for(id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }
}

/// A line of shop_a's WeChat Pay `ALL` bill (mchid A), transaction `4200{id}`.
pub fn bill_line(
    id: &str,
    amount: i64,
    at: time::OffsetDateTime,
) -> moongate_testkit::sandbox::statements::WechatBillEntry {
    use moongate_testkit::sandbox::statements;
    statements::WechatBillEntry {
        at,
        appid: WX_APPID.to_owned(),
        mchid: MCHID_A.to_owned(),
        sub_mchid: "0".to_owned(),
        transaction_id: format!("4200{id}"),
        out_trade_no: id.to_owned(),
        openid: "oUpF8uMuAJO_M2pxb1Q9zNjWeS6o".to_owned(),
        trade_type: "NATIVE".to_owned(),
        refund: None,
        amount,
        fee_e5: statements::wechat_fee_e5(amount),
        description: "茉莉花茶 Jasmine tea".to_owned(),
        currency: "CNY".to_owned(),
    }
}

impl Harness {
    /// A succeeded shop_a/wechat_main payment written straight into the ledger, recorded as
    /// paid at `paid_at`, transaction `4200{id}` (as [`bill_line`] writes it).
    pub async fn ledger_payment(&self, id: &str, amount: i64, paid_at: time::OffsetDateTime) {
        let payment = moongate::ledger::Payment {
            id: id.to_owned(),
            merchant_id: "shop_a".to_owned(),
            account_id: "wechat_main".to_owned(),
            provider: moongate_contract::ProviderKind::WechatPay,
            method: moongate_contract::PaymentMethod::WechatNative,
            amount,
            currency: moongate_contract::Currency::CNY,
            merchant_reference: format!("order-{id}"),
            description: "Jasmine tea".to_owned(),
            return_url: None,
            metadata: Default::default(),
            provider_order_id: id.to_owned(),
            provider_ref: Some(format!("4200{id}")),
            status: moongate::ledger::PaymentStatus::Succeeded,
            next_action: None,
            failure: None,
            amount_refunded: 0,
            expires_at: paid_at,
            created_at: paid_at,
            updated_at: paid_at,
            payer: Default::default(),
            route: None,
            channel: None,
        };
        assert!(
            self.gateway
                .gateway
                .store
                .insert_repaired_payment(payment, paid_at)
                .await
                .unwrap()
        );
    }
}

pub const DESKTOP_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Safari/537.36";
pub const PHONE_UA: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36";
/// 云闪付's in-app browser on an Android phone (its `UnionPay/…` marker).
pub const UNIONPAY_UA: &str = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36 (com.unionpay.chsp) (cordova 7.0.0) (UnionPay/1.0 CloudPay)";
/// The Alipay app's in-app browser on an iPhone (its `AlipayClient/…` marker).
pub const ALIPAY_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 Ariver/1.1.0 AliApp(AP/10.5.36.6000) Nebula WK AlipayDefined(nt:WIFI,ws:390|844|3.0) AlipayClient/10.5.36.6000 Language/zh-Hans Region/CN";
pub const WECHAT_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47(0x18002f2c) NetType/WIFI Language/zh_CN";

impl Harness {
    /// Creates a checkout for shop A; returns (HTTP status, JSON).
    pub async fn checkout(&self, body: Value, key: &str) -> (u16, Value) {
        self.post(&self.shop_a, "/v1/checkouts", &body.to_string(), key)
            .await
    }

    /// A shopper's browser: GET with a user agent (redirects are not followed).
    pub async fn browse(&self, url: &str, user_agent: &str) -> HttpResponse {
        let request = HttpRequest {
            method: HttpMethod::Get,
            url: url.to_owned(),
            headers: vec![("user-agent".into(), user_agent.into())],
            body: vec![],
        };
        self.http.send(&request).await.unwrap()
    }

    /// A shopper's browser submitting a form (redirects are not followed).
    pub async fn submit(&self, url: &str, user_agent: &str, form: &[(&str, &str)]) -> HttpResponse {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let request = HttpRequest {
            method: HttpMethod::Post,
            url: url.to_owned(),
            headers: vec![
                ("user-agent".into(), user_agent.into()),
                (
                    "content-type".into(),
                    "application/x-www-form-urlencoded".into(),
                ),
            ],
            body: body.into_bytes(),
        };
        self.http.send(&request).await.unwrap()
    }
}

/// A response header's value.
pub fn header<'a>(response: &'a HttpResponse, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Runs each named scenario (an `async fn(Harness)`) twice: on the SQLite ledger and on a
/// PostgreSQL one (skipped, saying so, without `MOONGATE_TEST_DATABASE_URL`).
#[macro_export]
macro_rules! on_both_ledgers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Harness::start().await).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let test = concat!(module_path!(), "::postgres");
                let Some(h) = $crate::common::Harness::start_on_postgres(test).await else {
                    return;
                };
                let schema = h.schema.clone();
                super::$name(h).await;
                if let Some(schema) = schema {
                    schema.drop().await;
                }
            }
        }
    )*};
}

/// A fresh PostgreSQL schema for one test, from `MOONGATE_TEST_DATABASE_URL` (`.ci/run` sets it
/// to the local server, so CI always runs these tests and fails if it cannot connect). Without
/// the variable: `None`, after saying the test is skipped.
#[derive(Clone)]
pub struct PgSchema {
    /// The database URL selecting the schema (`options[search_path]`).
    pub url: String,
    name: String,
    admin: sqlx::PgPool,
}

pub async fn pg_schema(test: &str) -> Option<PgSchema> {
    let base = match std::env::var("MOONGATE_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => url,
        _ => {
            eprintln!(
                "{test}: SKIPPED on PostgreSQL (set MOONGATE_TEST_DATABASE_URL, e.g. \
                 postgres://postgres@127.0.0.1:5432/test; .ci/run does)"
            );
            return None;
        }
    };
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&base)
        .await
        .unwrap_or_else(|e| panic!("MOONGATE_TEST_DATABASE_URL is set but unreachable: {e}"));
    // Named with their creation time: schemas a failed run left behind go after an hour.
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let stale: Vec<String> =
        sqlx::query_scalar("SELECT nspname::TEXT FROM pg_namespace WHERE nspname LIKE 'mgt\\_%'")
            .fetch_all(&admin)
            .await
            .unwrap();
    for old in stale {
        let born = old
            .split('_')
            .nth(1)
            .and_then(|t| t.parse::<i64>().ok())
            .unwrap_or(0);
        if born < now - 3600 {
            let _ = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {old} CASCADE"))
                .execute(&admin)
                .await;
        }
    }
    let name = format!("mgt_{now}_{}", moongate::ledger::new_id("t").to_lowercase());
    sqlx::raw_sql(&format!("CREATE SCHEMA {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let joiner = if base.contains('?') { '&' } else { '?' };
    Some(PgSchema {
        url: format!("{base}{joiner}options[search_path]={name}"),
        name,
        admin,
    })
}

impl PgSchema {
    /// Drops the schema (a failed test leaves it behind for a look). Best effort: a gateway
    /// still winding down may hold a lock; what is left goes with the hourly sweep above.
    pub async fn drop(self) {
        for _ in 0..3 {
            let dropped = sqlx::raw_sql(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
                .execute(&self.admin)
                .await;
            if dropped.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
