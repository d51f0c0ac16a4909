//! The sandboxes as the demo and `moongate sandbox` set them up: one Alipay application (and a
//! second in certificate mode), one WeChat Pay merchant and one WeChat Pay service provider
//! with two sub-merchants, and one UnionPay merchant, every key the public test data under
//! `fixtures/` (see `fixtures/keys/README.md`), so an official SDK or any other client can be
//! pointed at them.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::SandboxSettings;
use super::alipay::CertificateMode;
use super::unionpay::{UnionPayMerchant, UnionPaySandboxSettings};
use super::wechat::{
    KeyMode, SandboxMerchant, SandboxOfficialAccount, SandboxSubMerchant, WechatSandboxSettings,
};

/// The Alipay application the sandbox knows.
pub const ALIPAY_APP_ID: &str = "2021000122671080";
/// A second app on the same test key in certificate mode, for the demo's second merchant
/// (`demo_market`).
pub const ALIPAY_SECOND_APP_ID: &str = "2021000122671081";
/// The seller PID its notifications report.
pub const ALIPAY_SELLER_ID: &str = "2088102177846875";
/// The WeChat Pay merchant the sandbox knows.
pub const WECHAT_MCHID: &str = "1230000109";
/// Its app id.
pub const WECHAT_APPID: &str = "wxd678efh567hg6787";
/// The serial of its API certificate (`serial_no` in `Authorization`).
pub const WECHAT_MERCHANT_SERIAL: &str = "F5765756002FDD77";
/// The WeChat Pay service provider (服务商) the sandbox knows: its `sp_mchid`, signing with the
/// same test key and serial as [`WECHAT_MCHID`].
pub const WECHAT_SP_MCHID: &str = "1900009191";
/// Its app id (`sp_appid`).
pub const WECHAT_SP_APPID: &str = "wx8888888888888888";
/// The sub-merchants (`sub_mchid`) bound to it.
pub const WECHAT_SUB_MCHIDS: [&str; 2] = ["1900000201", "1900000202"];
/// The sandbox platform certificate's serial (certificate mode).
pub const WECHAT_CERTIFICATE_SERIAL: &str = "5157F09EFDC096DE15EBE81A47057A7232F1B8E1";
/// The sandbox's WeChat Pay public key id (public-key mode).
pub const WECHAT_PUBLIC_KEY_ID: &str = "PUB_KEY_ID_0112300001092026112200000000000001";

/// The UnionPay merchant the sandbox knows (the public test merchant's `merId`).
pub const UNIONPAY_MER_ID: &str = "777290058167151";
/// Its signing certificate's decimal serial, the `certId` (more-wallets.md §1.7).
pub const UNIONPAY_CERT_ID: &str = "69903319369";

const UNIONPAY_SIGN_KEY: &str = "unionpay/sandbox-sign-key.pem";
const UNIONPAY_SIGN_CERT: &str = "unionpay/sandbox-sign-cert.pem";
const UNIONPAY_MIDDLE: &str = "unionpay/sandbox-middle.pem";
const UNIONPAY_ROOT: &str = "unionpay/sandbox-root.pem";
const UNIONPAY_MERCHANT_KEY: &str = "unionpay/test-merchant-private-key.pem";
const UNIONPAY_MERCHANT_CERT: &str = "unionpay/test-merchant-cert.pem";
const UNIONPAY_MERCHANT_PUBLIC: &str = "unionpay/test-merchant-public-key.pem";
const ALIPAY_SANDBOX_KEY: &str = "keys/sandbox-alipay-private-key.pem";
const ALIPAY_SANDBOX_PUBLIC: &str = "keys/sandbox-alipay-public-key.pem";
const ALIPAY_APP_PUBLIC: &str = "keys/nodejs-sdk-app-public-key.pem";
const ALIPAY_APP_PRIVATE: &str = "keys/nodejs-sdk-app-private-key.pem";
const ALIPAY_NEXT_KEY: &str = "keys/sandbox-alipay-next-private-key.pem";
const ALIPAY_CERTS: &str = "alipay/certs/sandbox";
const WECHAT_PLATFORM_KEY: &str = "keys/sandbox-wechatpay-private-key.pem";
const WECHAT_PLATFORM_CERT: &str = "keys/sandbox-wechatpay-platform-cert.pem";
const WECHAT_PLATFORM_PUBLIC: &str = "keys/sandbox-wechatpay-public-key.pem";
const WECHAT_MERCHANT_PUBLIC: &str = "keys/wechatpay-go-merchant-public-key.pem";
const WECHAT_MERCHANT_PRIVATE: &str = "keys/wechatpay-go-merchant-private-key.pem";
const WECHAT_APIV3: &str = "demo/wechatpay-apiv3.secret";
const WECHAT_V2: &str = "demo/wechatpay-v2.secret";
/// The AppSecret of the official account behind [`WECHAT_APPID`] (its web OAuth).
const WECHAT_OAUTH: &str = "demo/wechatpay-oauth.secret";
/// Where the demo's gateway runs: the official account's registered OAuth domain.
const DEMO_GATEWAY_HOST: &str = "127.0.0.1:8080";
const WECHAT_SP_APIV3: &str = "demo/wechatpay-sp-apiv3.secret";

/// Both sandboxes' settings, read from a `fixtures/` folder.
#[derive(Debug)]
pub struct Standard {
    /// The Alipay sandbox.
    pub alipay: SandboxSettings,
    /// The WeChat Pay sandbox.
    pub wechatpay: WechatSandboxSettings,
    /// The UnionPay sandbox.
    pub unionpay: UnionPaySandboxSettings,
    fixtures: PathBuf,
}

fn read(fixtures: &Path, file: &str) -> Result<String, String> {
    let path = fixtures.join(file);
    std::fs::read_to_string(&path).map_err(|e| format!("reading {}: {e}", path.display()))
}

/// An SN of `alipay/certs/sandbox/sns.txt` under `fixtures` (`app`, `alipay`, `alipay-next`,
/// `root`), computed by its `gen.sh` with openssl and Python.
pub fn alipay_sn(fixtures: &Path, which: &str) -> Result<String, String> {
    let file = format!("{ALIPAY_CERTS}/sns.txt");
    read(fixtures, &file)?
        .lines()
        .find_map(|line| {
            line.strip_prefix(which)?
                .strip_prefix('\t')
                .map(str::to_owned)
        })
        .ok_or_else(|| format!("{file} has no {which} line"))
}

impl Standard {
    /// Reads the keys under `fixtures`; `time_divisor` speeds up notification retries and
    /// refund settling (1 = the providers' real timing).
    pub fn load(fixtures: &Path, time_divisor: u32) -> Result<Standard, String> {
        let secret = |file| read(fixtures, file).map(|s| s.trim_end().to_owned());
        Ok(Standard {
            alipay: SandboxSettings {
                private_key_pem: read(fixtures, ALIPAY_SANDBOX_KEY)?,
                apps: vec![(ALIPAY_APP_ID.to_owned(), read(fixtures, ALIPAY_APP_PUBLIC)?)],
                time_divisor,
                seller_id: ALIPAY_SELLER_ID.to_owned(),
                certificate_mode: Some(CertificateMode {
                    root_cert_sn: alipay_sn(fixtures, "root")?,
                    alipay_certificates: vec![
                        (
                            alipay_sn(fixtures, "alipay")?,
                            read(fixtures, ALIPAY_SANDBOX_KEY)?,
                        ),
                        (
                            alipay_sn(fixtures, "alipay-next")?,
                            read(fixtures, ALIPAY_NEXT_KEY)?,
                        ),
                    ],
                    apps: vec![(
                        ALIPAY_SECOND_APP_ID.to_owned(),
                        alipay_sn(fixtures, "app")?,
                        read(fixtures, ALIPAY_APP_PUBLIC)?,
                    )],
                }),
                authorisations: vec![],
                // Both apps' authorisation callback domain: the demo's gateway.
                callback_domains: vec![
                    (ALIPAY_APP_ID.to_owned(), DEMO_GATEWAY_HOST.to_owned()),
                    (
                        ALIPAY_SECOND_APP_ID.to_owned(),
                        DEMO_GATEWAY_HOST.to_owned(),
                    ),
                ],
            },
            wechatpay: WechatSandboxSettings {
                private_key_pem: read(fixtures, WECHAT_PLATFORM_KEY)?,
                certificate_pem: read(fixtures, WECHAT_PLATFORM_CERT)?,
                certificate_serial: WECHAT_CERTIFICATE_SERIAL.to_owned(),
                public_key_id: WECHAT_PUBLIC_KEY_ID.to_owned(),
                merchants: vec![
                    SandboxMerchant {
                        mchid: WECHAT_MCHID.to_owned(),
                        appids: vec![WECHAT_APPID.to_owned()],
                        merchant_serial_no: WECHAT_MERCHANT_SERIAL.to_owned(),
                        merchant_public_key_pem: read(fixtures, WECHAT_MERCHANT_PUBLIC)?,
                        apiv3_key: secret(WECHAT_APIV3)?,
                        api_v2_key: Some(secret(WECHAT_V2)?),
                        key_mode: KeyMode::PublicKey,
                        sub_merchants: vec![],
                    },
                    SandboxMerchant {
                        mchid: WECHAT_SP_MCHID.to_owned(),
                        appids: vec![WECHAT_SP_APPID.to_owned()],
                        merchant_serial_no: WECHAT_MERCHANT_SERIAL.to_owned(),
                        merchant_public_key_pem: read(fixtures, WECHAT_MERCHANT_PUBLIC)?,
                        apiv3_key: secret(WECHAT_SP_APIV3)?,
                        api_v2_key: None,
                        key_mode: KeyMode::PublicKey,
                        sub_merchants: WECHAT_SUB_MCHIDS
                            .iter()
                            .map(|sub| SandboxSubMerchant {
                                sub_mchid: (*sub).to_owned(),
                                appids: vec![],
                            })
                            .collect(),
                    },
                ],
                time_divisor,
                official_accounts: vec![SandboxOfficialAccount {
                    appid: WECHAT_APPID.to_owned(),
                    secret: secret(WECHAT_OAUTH)?,
                    oauth_domains: vec![DEMO_GATEWAY_HOST.to_owned()],
                }],
            },
            unionpay: UnionPaySandboxSettings {
                sign_key_pem: read(fixtures, UNIONPAY_SIGN_KEY)?,
                sign_cert_pem: read(fixtures, UNIONPAY_SIGN_CERT)?,
                merchants: vec![UnionPayMerchant {
                    mer_id: UNIONPAY_MER_ID.to_owned(),
                    cert_id: UNIONPAY_CERT_ID.to_owned(),
                    public_key_pem: read(fixtures, UNIONPAY_MERCHANT_PUBLIC)?,
                }],
                time_divisor,
            },
            fixtures: fixtures.to_path_buf(),
        })
    }

    /// What a client of the Alipay sandbox at `base` (e.g. `http://127.0.0.1:8090`) needs.
    pub fn describe_alipay(&self, base: &str) -> String {
        let file = |f: &str| self.fixtures.join(f).display().to_string();
        let mut out = String::new();
        let _ = writeln!(out, "Alipay sandbox: {base}/gateway.do");
        let _ = writeln!(out, "  app_id               {ALIPAY_APP_ID}");
        let _ = writeln!(
            out,
            "  app private key      {} (signs requests, RSA2)",
            file(ALIPAY_APP_PRIVATE)
        );
        let _ = writeln!(
            out,
            "  alipay public key    {} (verifies answers and notifications)",
            file(ALIPAY_SANDBOX_PUBLIC)
        );
        let _ = writeln!(out, "  seller_id            {ALIPAY_SELLER_ID}");
        let _ = writeln!(
            out,
            "  app_id               {ALIPAY_SECOND_APP_ID} (certificate mode, same app key)"
        );
        for (what, name) in [
            ("app certificate     ", "app_cert_public_key.crt"),
            ("alipay certificate  ", "alipay_cert_public_key_rsa2.crt"),
            (
                "  next (rotation)   ",
                "alipay_cert_public_key_rsa2_next.crt",
            ),
            ("alipay root bundle  ", "alipay_root_cert.crt"),
        ] {
            let _ = writeln!(out, "  {what} {}", file(&format!("{ALIPAY_CERTS}/{name}")));
        }
        let _ = writeln!(
            out,
            "  shopper              {base}/sandbox/wallet?code=QR (scan and pay), POST {base}/sandbox/pay"
        );
        out
    }

    /// What a client of the WeChat Pay sandbox at `base` needs.
    pub fn describe_wechatpay(&self, base: &str) -> String {
        let file = |f: &str| self.fixtures.join(f).display().to_string();
        let merchant = self.wechatpay.merchants.first();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "WeChat Pay sandbox: {base} (API v3; v2 {base}/pay/micropay)"
        );
        let _ = writeln!(out, "  mchid                {WECHAT_MCHID}");
        let _ = writeln!(out, "  appid                {WECHAT_APPID}");
        let _ = writeln!(out, "  merchant serial_no   {WECHAT_MERCHANT_SERIAL}");
        let _ = writeln!(
            out,
            "  merchant private key {} (signs requests)",
            file(WECHAT_MERCHANT_PRIVATE)
        );
        let _ = writeln!(
            out,
            "  APIv3 key            {} ({})",
            merchant.map_or("", |m| m.apiv3_key.as_str()),
            file(WECHAT_APIV3)
        );
        let _ = writeln!(
            out,
            "  API v2 key           {} ({})",
            merchant.and_then(|m| m.api_v2_key.as_deref()).unwrap_or(""),
            file(WECHAT_V2)
        );
        let _ = writeln!(
            out,
            "  official account     {WECHAT_APPID}, AppSecret in {} (web OAuth {base}/connect/oauth2/authorize, redirect domain {DEMO_GATEWAY_HOST}; payment sheet {base}/sandbox/jsapi)",
            file(WECHAT_OAUTH)
        );
        let _ = writeln!(
            out,
            "  WeChat Pay public key {WECHAT_PUBLIC_KEY_ID}: {} (verifies answers)",
            file(WECHAT_PLATFORM_PUBLIC)
        );
        let _ = writeln!(
            out,
            "  platform certificate {WECHAT_CERTIFICATE_SERIAL}: {} (also from GET /v3/certificates)",
            file(WECHAT_PLATFORM_CERT)
        );
        let _ = writeln!(
            out,
            "  service provider     sp_mchid {WECHAT_SP_MCHID}, sp_appid {WECHAT_SP_APPID}, the same key and serial, APIv3 key {} ({}); sub_mchid {}",
            self.wechatpay
                .merchants
                .get(1)
                .map_or("", |m| m.apiv3_key.as_str()),
            file(WECHAT_SP_APIV3),
            WECHAT_SUB_MCHIDS.join(", ")
        );
        let _ = writeln!(
            out,
            "  shopper              {base}/sandbox/wallet?code=QR (scan and pay), POST {base}/sandbox/pay"
        );
        out
    }

    /// What a client of the UnionPay sandbox at `base` needs.
    pub fn describe_unionpay(&self, base: &str) -> String {
        let file = |f: &str| self.fixtures.join(f).display().to_string();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "UnionPay sandbox: {base}/gateway/api (backTransReq.do, queryTrans.do; ACP 5.1.0)"
        );
        let _ = writeln!(out, "  merId                {UNIONPAY_MER_ID}");
        let _ = writeln!(
            out,
            "  signing key          {} (certId {UNIONPAY_CERT_ID}: {})",
            file(UNIONPAY_MERCHANT_KEY),
            file(UNIONPAY_MERCHANT_CERT)
        );
        let _ = writeln!(
            out,
            "  middle / root        {} / {} (trust the answers' signPubKeyCert)",
            file(UNIONPAY_MIDDLE),
            file(UNIONPAY_ROOT)
        );
        let _ = writeln!(
            out,
            "  shopper              {base}/sandbox/wallet?code=QR (scan and pay), POST {base}/sandbox/pay"
        );
        out
    }
}
