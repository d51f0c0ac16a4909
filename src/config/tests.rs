//! Config parsing, validation and building.
use super::*;

const GOOD: &str = r#"
[server]
listen = "127.0.0.1:8080"
public_base_url = "http://127.0.0.1:8080"

[merchants.shop]
name = "Shop"
keys = [{ id = "shop_k1", secret = { env = "X" } }]
webhook = { url = "http://127.0.0.1:9/hook", secrets = [{ file = "w.secret" }] }

[merchants.shop.accounts.main]
provider = "alipay"
settings = { app_id = "2021000122671080", app_private_key = { file = "k.pem" }, alipay_public_key = { file = "p.pem" } }
"#;

#[test]
fn a_good_file_validates() {
    let raw = parse(GOOD).unwrap();
    raw.validate().unwrap();
}

#[test]
fn unknown_keys_are_reported_with_their_path() {
    let text = GOOD.replace("name = \"Shop\"", "name = \"Shop\"\ncolour = 1");
    let errors = parse(&text).unwrap_err();
    assert_eq!(errors.0[0].path, "merchants.shop.colour");
    assert!(errors.0[0].message.contains("colour"), "{errors}");
}

#[test]
fn every_unknown_key_and_every_bad_value_come_in_one_run() {
    // Seen in review: three mistakes needed three runs of check-config.
    let dir = tempfile::tempdir().unwrap();
    let text = GOOD
        .replace("name = \"Shop\"", "name = \"Shop\"\ncolour = 1")
        .replace("[server]", "[server]\nlisten_port = 8080")
        .replace("127.0.0.1:8080\"", "nowhere\"");
    let path = dir.path().join("moongate.toml");
    std::fs::write(&path, text).unwrap();
    let errors = super::load_and_build(&path).unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|p| p.path.as_str()).collect();
    for expected in [
        "merchants.shop.colour",
        "server.listen_port",
        "server.listen",
    ] {
        assert!(
            paths.contains(&expected),
            "{expected} missing from {paths:?}"
        );
    }
}

#[test]
fn syntax_errors_say_where() {
    let text = GOOD.replacen("[server]", "[server]\nlisten = = 1", 1);
    let errors = parse(&text).unwrap_err();
    let message = &errors.0[0].message;
    assert!(message.starts_with("line "), "{message}");
    assert!(message.contains(", column "), "{message}");
}

#[test]
fn every_problem_is_reported_with_its_path() {
    let text = GOOD
        .replace("127.0.0.1:8080\"", "nowhere\"")
        .replace("2021000122671080", "abc")
        .replace("http://127.0.0.1:9/hook", "http://example.com/hook")
        .replace("provider = \"alipay\"", "provider = \"alipay\"\n");
    let errors = parse(&text).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"server.listen"), "{paths:?}");
    assert!(paths.contains(&"merchants.shop.webhook.url"), "{paths:?}");
    assert!(
        paths.contains(&"merchants.shop.accounts.main.settings.app_id"),
        "{paths:?}"
    );
}

#[test]
fn unknown_settings_keys_and_providers_are_reported() {
    let text = GOOD.replace("app_id =", "appid = \"1\", app_id =");
    let errors = parse(&text).unwrap().validate().unwrap_err();
    assert!(
        errors.0[0]
            .path
            .starts_with("merchants.shop.accounts.main.settings"),
        "{errors}"
    );
    let text = GOOD.replace("provider = \"alipay\"", "provider = \"paypal\"");
    let errors = parse(&text).unwrap().validate().unwrap_err();
    assert_eq!(errors.0[0].path, "merchants.shop.accounts.main.provider");
}

/// A folder with the test keys the configs below name (`k.pem`, `p.pem`, `m.pem`), a
/// webhook secret `w.secret`, and `extra` files.
fn key_dir(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/keys");
    for (from, to) in [
        ("nodejs-sdk-app-private-key.pem", "k.pem"),
        ("sandbox-alipay-public-key.pem", "p.pem"),
        ("wechatpay-go-merchant-private-key.pem", "m.pem"),
    ] {
        std::fs::copy(keys.join(from), dir.path().join(to)).unwrap();
    }
    std::fs::write(dir.path().join("w.secret"), "webhook-secret-0123456789").unwrap();
    for (name, value) in extra {
        std::fs::write(dir.path().join(name), value).unwrap();
    }
    dir
}

#[test]
fn a_database_url_selects_postgres_and_stays_secret() {
    let dir = key_dir(&[
        (
            "db.url",
            "postgres://moongate:hunter2@db.internal:5432/ledger?sslmode=verify-full\n",
        ),
        ("bad.url", "mysql://moongate:hunter2@db.internal/ledger"),
        ("a.secret", "shop-signing-secret-0123456789"),
        ("cashier.key", CASHIER_KEY),
    ]);
    let base = GOOD.replace("{ env = \"X\" }", "{ file = \"a.secret\" }");
    let shared = with_cashier_key(&base);
    let good = format!("{shared}\n[ledger]\ndatabase_url = {{ file = \"db.url\" }}\n");
    let config = parse(&good).unwrap().build(dir.path()).unwrap();
    match &config.ledger {
        LedgerBackend::Postgres {
            url,
            max_connections,
        } => {
            assert_eq!(
                url.expose(),
                "postgres://moongate:hunter2@db.internal:5432/ledger?sslmode=verify-full"
            );
            assert_eq!(*max_connections, 16);
        }
        other => panic!("{other:?}"),
    }
    assert!(!format!("{:?}", config.ledger).contains("hunter2"));
    let bad = format!(
        "{shared}\n[ledger]\ndatabase_url = {{ file = \"bad.url\" }}\nmax_connections = 0\n"
    );
    let errors = parse(&bad).unwrap().build(dir.path()).unwrap_err();
    let text = errors.to_string();
    assert!(text.contains("ledger.max_connections"), "{text}");
    let errors = parse(&bad.replace("max_connections = 0", "max_connections = 4"))
        .unwrap()
        .build(dir.path())
        .unwrap_err();
    assert_eq!(errors.0[0].path, "ledger.database_url");
    assert!(!errors.to_string().contains("hunter2"), "{errors}");
    // Without one, the SQLite file beside the config.
    let config = parse(&base).unwrap().build(dir.path()).unwrap();
    assert!(matches!(config.ledger, LedgerBackend::Sqlite(ref p) if p.ends_with("moongate.db")));
}

const CASHIER_KEY: &str = "cashier-key-0123456789abcdef0123456789";

fn with_cashier_key(config: &str) -> String {
    config.replacen(
        "[server]\n",
        "[server]\ncashier_key = { file = \"cashier.key\" }\n",
        1,
    )
}

#[test]
fn cashier_keys_are_long_and_shared_by_postgres_instances() {
    let dir = key_dir(&[
        ("a.secret", "shop-signing-secret-0123456789"),
        ("db.url", "postgres://postgres@127.0.0.1:5432/test"),
        ("cashier.key", CASHIER_KEY),
        ("short.key", "0123456789abcdef"),
    ]);
    let base = GOOD.replace("{ env = \"X\" }", "{ file = \"a.secret\" }");
    let postgres = format!("{base}\n[ledger]\ndatabase_url = {{ file = \"db.url\" }}\n");
    let errors = parse(&postgres).unwrap().build(dir.path()).unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].path, "server.cashier_key");
    assert!(errors.to_string().contains("every instance"), "{errors}");
    let config = parse(&with_cashier_key(&postgres))
        .unwrap()
        .build(dir.path())
        .unwrap();
    let crate::cashier::key::KeySource::Configured(key) = &config.cashier_key else {
        panic!("the configured key");
    };
    assert_eq!(key.expose(), CASHIER_KEY);
    assert!(!format!("{config:?}").contains(CASHIER_KEY));
    // Too short is refused without showing it.
    let short = with_cashier_key(&base).replace("cashier.key", "short.key");
    let errors = parse(&short).unwrap().build(dir.path()).unwrap_err();
    assert_eq!(errors.0[0].path, "server.cashier_key");
    assert!(errors.to_string().contains("at least 32 bytes"), "{errors}");
    assert!(!errors.to_string().contains("0123456789abcdef"), "{errors}");
    // SQLite without one: a file beside the ledger.
    let config = parse(&base).unwrap().build(dir.path()).unwrap();
    assert!(matches!(
        config.cashier_key,
        crate::cashier::key::KeySource::File(ref p) if p.ends_with("moongate.db.cashier-key")
    ));
}

const WECHAT: &str = r#"
[merchants.shop.accounts.wx]
provider = "wechatpay"
[merchants.shop.accounts.wx.settings]
mchid = "1230000109"
appid = "wxd678efh567hg6787"
merchant_serial_no = "F5765756002FDD77"
merchant_private_key = { file = "m.pem" }
apiv3_key = { file = "v3.secret" }
wechatpay_public_key = { file = "p.pem" }
wechatpay_public_key_id = "PUB_KEY_ID_0112300001092026112200000000000001"
"#;

#[test]
fn wechatpay_accounts_are_validated_with_key_paths() {
    let good = format!("{GOOD}{WECHAT}");
    parse(&good).unwrap().validate().unwrap();
    let bad = good
        .replace("mchid = \"1230000109\"", "mchid = \"12a\"")
        .replace("PUB_KEY_ID_0112300001092026112200000000000001", "KEY_1")
        .replace("F5765756002FDD77", "not-hex");
    let errors = parse(&bad).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|p| p.path.as_str()).collect();
    for key in ["mchid", "wechatpay_public_key_id", "merchant_serial_no"] {
        let path = format!("merchants.shop.accounts.wx.settings.{key}");
        assert!(paths.contains(&path.as_str()), "{key}: {paths:?}");
    }
    // Neither a public key nor a certificate: nothing could verify WeChat Pay's answers.
    let keyless = good
        .replace("wechatpay_public_key = { file = \"p.pem\" }\n", "")
        .replace(
            "wechatpay_public_key_id = \"PUB_KEY_ID_0112300001092026112200000000000001\"\n",
            "",
        );
    let errors = parse(&keyless).unwrap().validate().unwrap_err();
    assert_eq!(
        errors.0[0].path,
        "merchants.shop.accounts.wx.settings.wechatpay_public_key"
    );
    let unknown = good.replace("appid =", "app_id = \"x\"\nappid =");
    let errors = parse(&unknown).unwrap().validate().unwrap_err();
    assert!(errors.0[0].message.contains("app_id"), "{errors}");
}

#[test]
fn a_short_apiv3_key_is_refused_without_showing_it() {
    let dir = key_dir(&[("v3.secret", "tooshort-apiv3")]);
    let good = format!("{GOOD}{WECHAT}").replace("{ env = \"X\" }", "{ file = \"w.secret\" }");
    let errors = parse(&good)
        .unwrap()
        .build(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        errors.contains("merchants.shop.accounts.wx.settings.apiv3_key: must be exactly 32 bytes"),
        "{errors}"
    );
    assert!(!errors.contains("tooshort"), "{errors}");
}

#[test]
fn routes_to_accounts_that_cannot_serve_fail_the_check_with_their_path() {
    let dir = key_dir(&[("x.secret", "merchant-secret-0123456789")]);
    let text = GOOD.replace("{ env = \"X\" }", "{ file = \"x.secret\" }")
        + r#"
[[merchants.shop.routes]]
name = "wechat-to-alipay"
match = { methods = ["wechat_native"], currencies = ["USD"] }
to = { account = "main" }

[[merchants.shop.routes]]
name = "ghost"
to = { priority = ["main", "missing"] }
"#;
    let errors = parse(&text).unwrap().validate().unwrap_err();
    assert_eq!(errors.0.len(), 1, "{errors}");
    assert_eq!(errors.0[0].path, "merchants.shop.routes[1].to.priority[1]");
    let text = text.replace(", \"missing\"", "");
    let errors = parse(&text).unwrap().build(dir.path()).unwrap_err();
    let rendered = errors.to_string();
    assert!(
        rendered.contains(
            "merchants.shop.routes[0].to.account: account \"main\" cannot serve wechat_native"
        ),
        "{rendered}"
    );
    assert!(
        rendered
            .contains("merchants.shop.routes[0].to.account: account \"main\" cannot charge USD"),
        "{rendered}"
    );
    let fixed = text.replace(
        "methods = [\"wechat_native\"], currencies = [\"USD\"]",
        "methods = [\"alipay_qr\"]",
    );
    let config = parse(&fixed).unwrap().build(dir.path()).unwrap();
    assert_eq!(config.merchants["shop"].routes.0.len(), 2);
}

#[test]
fn daily_times_are_beijing_hours_and_minutes() {
    assert_eq!(parse_daily_at("10:30"), Some((10, 30)));
    assert_eq!(parse_daily_at("00:00"), Some((0, 0)));
    assert_eq!(parse_daily_at("24:00"), None);
    assert_eq!(parse_daily_at("9:30"), None);
    assert_eq!(parse_daily_at("10:60"), None);
    assert_eq!(parse_daily_at("10.30"), None);
}

#[test]
fn fee_rates_are_percentages() {
    assert_eq!(parse_fee_rate("0.6%"), Some(6000));
    assert_eq!(parse_fee_rate("0.38%"), Some(3800));
    assert_eq!(parse_fee_rate("0.0025%"), Some(25));
    assert_eq!(parse_fee_rate("100%"), Some(1_000_000));
    assert_eq!(parse_fee_rate("0.6"), None);
    assert_eq!(parse_fee_rate("101%"), None);
    assert_eq!(parse_fee_rate("-1%"), None);
    assert_eq!(parse_fee_rate("0.00001%"), None);
}

#[test]
fn rate_limits_are_validated_with_their_paths() {
    let text = GOOD
        .replace(
            "name = \"Shop\"",
            "name = \"Shop\"\nrate_limit = { requests_per_second = 0, burst = 5 }",
        )
        .replace(
            "provider = \"alipay\"",
            "provider = \"alipay\"\nrate_limit = { requests_per_second = 5, burst = 0, max_wait_ms = 90000 }",
        );
    let errors = parse(&text).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|p| p.path.as_str()).collect();
    for path in [
        "merchants.shop.rate_limit.requests_per_second",
        "merchants.shop.accounts.main.rate_limit.burst",
        "merchants.shop.accounts.main.rate_limit.max_wait_ms",
    ] {
        assert!(paths.contains(&path), "{path}: {paths:?}");
    }
    let unknown = GOOD.replace(
        "name = \"Shop\"",
        "name = \"Shop\"\nrate_limit = { rps = 5, burst = 5 }",
    );
    let errors = parse(&unknown).unwrap_err();
    assert!(
        errors.0[0].path.starts_with("merchants.shop.rate_limit"),
        "{errors}"
    );
}

#[test]
fn secrets_never_appear_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("w.secret"), "short").unwrap();
    let raw = parse(GOOD).unwrap();
    let errors = raw.build(dir.path()).unwrap_err().to_string();
    assert!(!errors.contains("short"), "{errors}");
    assert!(
        errors.contains("merchants.shop.webhook.secrets[0]"),
        "{errors}"
    );
}

#[test]
fn urls_are_parsed_and_plain_http_stays_on_this_machine() {
    let paths = |text: &str| -> Vec<String> {
        match parse(text).unwrap().validate() {
            Ok(()) => Vec::new(),
            Err(errors) => errors.0.into_iter().map(|p| p.path).collect(),
        }
    };
    let with = |from: &str, to: &str| {
        assert!(GOOD.contains(from), "{from}");
        GOOD.replace(from, to)
    };
    // Cashier tokens would travel in clear text to another machine.
    let remote_http = with(
        "public_base_url = \"http://127.0.0.1:8080\"",
        "public_base_url = \"http://pay.example.com\"",
    );
    assert_eq!(paths(&remote_http), ["server.public_base_url"]);
    let https = with(
        "public_base_url = \"http://127.0.0.1:8080\"",
        "public_base_url = \"https://pay.example.com\"",
    );
    assert!(paths(&https).is_empty());
    // The host is what follows an `@`; a name starting with 127. is not loopback.
    let userinfo = with(
        "settings = { app_id",
        "settings = { gateway_url = \"http://127.0.0.1@example.com/gateway.do\", app_id",
    );
    assert_eq!(
        paths(&userinfo),
        ["merchants.shop.accounts.main.settings.gateway_url"]
    );
    let authorize = with(
        "settings = { app_id",
        "settings = { jsapi = true, user_authorize_url = \"http://openauth.alipay.com/oauth2/publicAppAuthorize.htm\", app_id",
    );
    assert_eq!(
        paths(&authorize),
        ["merchants.shop.accounts.main.settings.user_authorize_url"]
    );
    let lookalike = with("http://127.0.0.1:9/hook", "http://127.evil.example/hook");
    assert_eq!(paths(&lookalike), ["merchants.shop.webhook.url"]);
    // The admin endpoints have no authentication: loopback only, unless said explicitly.
    let exposed = with(
        "public_base_url = \"http://127.0.0.1:8080\"",
        "public_base_url = \"http://127.0.0.1:8080\"\nadmin_listen = \"0.0.0.0:9090\"",
    );
    assert_eq!(paths(&exposed), ["server.admin_listen"]);
    let allowed = exposed.replace(
        "admin_listen = \"0.0.0.0:9090\"",
        "admin_listen = \"0.0.0.0:9090\"\nadmin_allow_remote = true",
    );
    // Reachable from elsewhere, it must at least ask for a token.
    assert_eq!(paths(&allowed), ["server.admin_token"]);
    let guarded = allowed.replace(
        "admin_allow_remote = true",
        "admin_allow_remote = true\nadmin_token = { env = \"ADMIN\" }",
    );
    assert!(paths(&guarded).is_empty());
    let private = exposed.replace("0.0.0.0:9090", "127.0.0.1:9090");
    assert!(paths(&private).is_empty());
}

#[test]
fn database_and_cache_links_are_verified_or_local() {
    let dir = key_dir(&[
        ("a.secret", "shop-signing-secret-0123456789"),
        ("cashier.key", CASHIER_KEY),
    ]);
    let base = with_cashier_key(&GOOD.replace("{ env = \"X\" }", "{ file = \"a.secret\" }"));
    let build = |file: &str, url: &str, section: &str| {
        std::fs::write(dir.path().join(file), url).unwrap();
        let text = format!("{base}\n{section}");
        parse(&text).unwrap().build(dir.path())
    };
    let ledger = |url: &str| {
        build(
            "db.url",
            url,
            "[ledger]\ndatabase_url = { file = \"db.url\" }\n",
        )
    };
    // Another machine: only a verified certificate will do.
    for weak in [
        "postgres://m:hunter2@db.internal/ledger",
        "postgres://m:hunter2@db.internal/ledger?sslmode=require",
        "postgres://m:hunter2@db.internal/ledger?sslmode=prefer",
        "postgresql://m:hunter2@10.0.0.5:5432/ledger?sslmode=verify-ca",
    ] {
        let errors = ledger(weak).unwrap_err();
        assert_eq!(errors.0[0].path, "ledger.database_url", "{weak}");
        assert!(errors.to_string().contains("verify-full"), "{errors}");
        assert!(!errors.to_string().contains("hunter2"), "{errors}");
    }
    for fine in [
        "postgres://m:hunter2@db.internal/ledger?sslmode=verify-full",
        "postgres://postgres@127.0.0.1:5432/test",
        "postgres://postgres@localhost/test",
        "postgres:///test?host=/var/run/postgresql",
    ] {
        assert!(ledger(fine).is_ok(), "{fine}");
    }
    // TLS to Redis is not built in: said at check time, not at start.
    let cache = |url: &str| {
        build(
            "redis.url",
            url,
            "[rate_limits]\nredis_url = { file = \"redis.url\" }\n",
        )
    };
    let errors = cache("rediss://cache.internal:6380/0").unwrap_err();
    assert_eq!(errors.0[0].path, "rate_limits.redis_url");
    assert!(errors.to_string().contains("rediss://"), "{errors}");
    assert!(cache("redis://127.0.0.1:6379/0").is_ok());
}

#[test]
fn return_hosts_are_bare_host_names() {
    let listed = |hosts: &str| {
        let text = GOOD.replace(
            "name = \"Shop\"\n",
            &format!("name = \"Shop\"\nreturn_hosts = {hosts}\n"),
        );
        match parse(&text).unwrap().validate() {
            Ok(()) => Vec::new(),
            Err(errors) => errors.0.into_iter().map(|p| p.path).collect(),
        }
    };
    assert!(listed("[\"shop.example\", \"m.shop.example\"]").is_empty());
    assert_eq!(
        listed("[\"shop.example\", \"https://shop.example/\"]"),
        ["merchants.shop.return_hosts[1]"]
    );
    assert_eq!(
        listed("[\"shop.example:443\"]"),
        ["merchants.shop.return_hosts[0]"]
    );
}

#[test]
fn connection_limits_and_proxies_are_checked() {
    let paths = |text: &str| -> Vec<String> {
        match parse(text).unwrap().validate() {
            Ok(()) => Vec::new(),
            Err(errors) => errors.0.into_iter().map(|p| p.path).collect(),
        }
    };
    let server = "public_base_url = \"http://127.0.0.1:8080\"";
    assert!(GOOD.contains(server));
    let with = |extra: &str| GOOD.replace(server, &format!("{server}\n{extra}"));
    assert!(paths(&with("trusted_proxies = [\"10.0.0.0/8\", \"::1\"]")).is_empty());
    assert_eq!(
        paths(&with(
            "trusted_proxies = [\"10.0.0.1\", \"proxy.internal\", \"10.0.0.0/40\"]\n\
             max_connections = 0\nbody_read_timeout_ms = 0"
        )),
        [
            "server.body_read_timeout_ms",
            "server.max_connections",
            "server.trusted_proxies[1]",
            "server.trusted_proxies[2]",
        ]
    );
}

const UNIONPAY: &str = r#"
[merchants.shop.accounts.up]
provider = "unionpay"
[merchants.shop.accounts.up.settings]
mer_id = "777290058167151"
signing_key = { file = "up-key.pem" }
signing_certificate = { file = "up-cert.pem" }
middle_certificate = { file = "up-middle.pem" }
root_certificate = { file = "up-root.pem" }
"#;

/// A folder with the UnionPay test merchant's key and certificate and the sandbox CA, under
/// the names [`UNIONPAY`] uses; `swap` replaces one file's contents.
fn unionpay_dir(swap: Option<(&str, &str)>) -> tempfile::TempDir {
    let up = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/unionpay");
    let read = |name: &str| std::fs::read_to_string(up.join(name)).unwrap();
    let files = vec![
        ("x.secret", "merchant-secret-0123456789".to_owned()),
        ("up-key.pem", read("test-merchant-private-key.pem")),
        ("up-cert.pem", read("test-merchant-cert.pem")),
        ("up-middle.pem", read("sandbox-middle.pem")),
        ("up-root.pem", read("sandbox-root.pem")),
    ];
    key_dir_swapped(files, swap)
}

/// [`key_dir`] with `files`, the one named by `swap` holding its text instead.
fn key_dir_swapped(
    mut files: Vec<(&str, String)>,
    swap: Option<(&str, &str)>,
) -> tempfile::TempDir {
    if let Some((name, text)) = swap {
        for file in &mut files {
            if file.0 == name {
                file.1 = text.to_owned();
            }
        }
    }
    let owned: Vec<(&str, &str)> = files.iter().map(|(n, t)| (*n, t.as_str())).collect();
    key_dir(&owned)
}

#[test]
fn unionpay_accounts_report_bad_settings_and_certificates_with_key_paths() {
    let good = format!("{GOOD}{UNIONPAY}").replace("{ env = \"X\" }", "{ file = \"x.secret\" }");
    let dir = unionpay_dir(None);
    parse(&good).unwrap().build(dir.path()).unwrap();
    // The settings table: every problem in one run.
    let bad = good
        .replace("777290058167151", "7772900")
        .replace(
            "root_certificate = { file = \"up-root.pem\" }",
            "root_certificate = { file = \"up-root.pem\" }\ngateway_url = \"http://gateway.95516.com/gateway/api\"",
        );
    let errors = parse(&bad).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|p| p.path.as_str()).collect();
    for key in ["mer_id", "gateway_url"] {
        let path = format!("merchants.shop.accounts.up.settings.{key}");
        assert!(paths.contains(&path.as_str()), "{key}: {paths:?}");
    }
    // A file that is not what its key says: named by its key path, never shown.
    const MIDDLE_PLACEHOLDER: &str = "(the sandbox's signing certificate)";
    let other_cert = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/unionpay/sandbox-sign-cert.pem"),
    )
    .unwrap();
    for (file, key, text) in [
        ("up-key.pem", "signing_key", "not a key"),
        (
            "up-cert.pem",
            "signing_certificate",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ),
        ("up-middle.pem", "middle_certificate", "garbage"),
        ("up-root.pem", "root_certificate", "garbage"),
        // A certificate of another key than the signing key.
        ("up-cert.pem", "signing_certificate", MIDDLE_PLACEHOLDER),
    ] {
        let text = if text == MIDDLE_PLACEHOLDER {
            other_cert.as_str()
        } else {
            text
        };
        let dir = unionpay_dir(Some((file, text)));
        let errors = parse(&good).unwrap().build(dir.path()).unwrap_err();
        let rendered = errors.to_string();
        assert!(
            rendered.contains(&format!("merchants.shop.accounts.up.settings.{key}")),
            "{file}: {rendered}"
        );
        // What was read is never shown.
        assert!(
            !rendered.contains("BEGIN") && !rendered.contains(text),
            "{rendered}"
        );
    }
    // A missing file: its key path too.
    let missing = good.replace("up-middle.pem", "nowhere.pem");
    let errors = parse(&missing).unwrap().build(dir.path()).unwrap_err();
    assert!(
        errors
            .to_string()
            .contains("merchants.shop.accounts.up.settings.middle_certificate"),
        "{errors}"
    );
}

#[test]
fn a_unionpay_key_may_be_its_pfx_and_a_wrong_password_is_named_by_its_key() {
    let good = format!("{GOOD}{UNIONPAY}")
        .replace("{ env = \"X\" }", "{ file = \"x.secret\" }")
        .replace(
            "signing_key = { file = \"up-key.pem\" }\nsigning_certificate = { file = \"up-cert.pem\" }",
            "signing_pfx = { file = \"up.pfx\" }\nsigning_pfx_password = { file = \"up-pfx.secret\" }",
        );
    assert!(good.contains("signing_pfx"), "{good}");
    let dir = unionpay_dir(None);
    let pfx = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/unionpay/test-merchant.pfx");
    std::fs::copy(pfx, dir.path().join("up.pfx")).unwrap();
    std::fs::write(dir.path().join("up-pfx.secret"), "000000\n").unwrap();
    parse(&good).unwrap().build(dir.path()).unwrap();
    std::fs::write(dir.path().join("up-pfx.secret"), "654321\n").unwrap();
    let errors = parse(&good).unwrap().build(dir.path()).unwrap_err();
    let rendered = errors.to_string();
    assert!(
        rendered.contains("merchants.shop.accounts.up.settings.signing_pfx"),
        "{rendered}"
    );
    assert!(!rendered.contains("654321"), "{rendered}");
    // Half a store, or both kinds at once: the settings check names the key.
    let half = good.replace("signing_pfx_password = { file = \"up-pfx.secret\" }\n", "");
    let errors = parse(&half).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|p| p.path.as_str()).collect();
    assert!(
        paths.contains(&"merchants.shop.accounts.up.settings.signing_pfx_password"),
        "{paths:?}"
    );
}

const ALIPAY_CERTIFICATES: &str = r#"
[merchants.shop.accounts.certs]
provider = "alipay"
[merchants.shop.accounts.certs.settings]
app_id = "2021000122671081"
app_private_key = { file = "k.pem" }
app_cert = { file = "app.crt" }
alipay_certs = [{ file = "alipay.crt" }, { file = "alipay-next.crt" }]
alipay_root_cert = { file = "root.crt" }
"#;

/// [`key_dir`] with the sandbox's certificate-mode files, `replace` written over one of them.
fn alipay_certificate_dir(replace: Option<(&str, &str)>) -> tempfile::TempDir {
    let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/alipay/certs");
    let files: Vec<(&str, String)> = [
        ("app.crt", "sandbox/app_cert_public_key.crt"),
        ("alipay.crt", "sandbox/alipay_cert_public_key_rsa2.crt"),
        (
            "alipay-next.crt",
            "sandbox/alipay_cert_public_key_rsa2_next.crt",
        ),
        ("root.crt", "sandbox/alipay_root_cert.crt"),
        ("x.secret", ""),
    ]
    .into_iter()
    .map(|(name, from)| {
        let text = if from.is_empty() {
            "shop-secret-0123456789abcdef".to_owned()
        } else {
            std::fs::read_to_string(certs.join(from)).unwrap()
        };
        (name, text)
    })
    .collect();
    key_dir_swapped(files, replace)
}

#[test]
fn alipay_certificate_mode_builds_and_names_the_file_at_fault() {
    let good = format!("{GOOD}{ALIPAY_CERTIFICATES}")
        .replace("{ env = \"X\" }", "{ file = \"x.secret\" }");
    parse(&good)
        .unwrap()
        .build(alipay_certificate_dir(None).path())
        .unwrap();
    let other_cert = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/alipay/certs/sandbox/alipay_cert_public_key_rsa2.crt"),
    )
    .unwrap();
    for (file, key, text) in [
        // Alipay's certificate where the app's belongs: another key than app_private_key.
        ("app.crt", "app_cert", other_cert.as_str()),
        ("alipay-next.crt", "alipay_certs[1]", "garbage"),
        ("alipay-next.crt", "alipay_certs[1]", other_cert.as_str()),
        ("root.crt", "alipay_root_cert", "garbage"),
    ] {
        let dir = alipay_certificate_dir(Some((file, text)));
        let errors = parse(&good).unwrap().build(dir.path()).unwrap_err();
        let rendered = errors.to_string();
        assert!(
            rendered.contains(&format!("merchants.shop.accounts.certs.settings.{key}:")),
            "{file}: {rendered}"
        );
        assert!(!rendered.contains("BEGIN"), "{rendered}");
    }
    // Both modes at once, or neither: one problem, at the public key's path.
    for text in [
        good.replace(
            "app_cert = { file",
            "alipay_public_key = { file = \"p.pem\" }\napp_cert = { file",
        ),
        good.replace("app_cert = { file = \"app.crt\" }\n", "")
            .replace("alipay_root_cert = { file = \"root.crt\" }\n", "")
            .replace(
                "alipay_certs = [{ file = \"alipay.crt\" }, { file = \"alipay-next.crt\" }]\n",
                "",
            ),
    ] {
        let errors = parse(&text).unwrap().validate().unwrap_err();
        let paths: Vec<&str> = errors.0.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["merchants.shop.accounts.certs.settings.alipay_public_key"],
            "{errors}"
        );
    }
}

/// What validation says of `text`, as `path: message` lines (none when it validates).
fn validation_problems(text: &str) -> Vec<String> {
    problem_lines(parse(text).unwrap().validate().err())
}

fn problem_lines(errors: Option<ConfigErrors>) -> Vec<String> {
    errors
        .map(|e| {
            e.0.into_iter()
                .map(|p| format!("{}: {}", p.path, p.message))
                .collect()
        })
        .unwrap_or_default()
}

const ISV: &str = r#"
[partners.isv]
provider = "alipay"
settings = { app_id = "2021000122671080", app_private_key = { file = "k.pem" }, alipay_public_key = { file = "p.pem" } }

[merchants.shop.accounts.served]
provider = "alipay"
partner = "isv"
settings = { auth_app_id = "2021000122679999", app_auth_token = { file = "t.secret" } }
"#;

#[test]
fn partner_references_identities_and_sub_merchant_settings_are_checked_with_key_paths() {
    let good = format!("{GOOD}{ISV}").replace("{ env = \"X\" }", "{ file = \"x.secret\" }");
    let dir = key_dir(&[
        ("x.secret", "shop-secret-0123456789abcdef"),
        ("t.secret", "202612BBtoken\n"),
    ]);
    parse(&good).unwrap().build(dir.path()).unwrap();
    let paths = |text: &str| validation_problems(text);
    let at = "merchants.shop.accounts.served";
    let unknown = paths(&good.replace("partner = \"isv\"", "partner = \"isw\""));
    assert!(
        unknown.len() == 1
            && unknown[0].starts_with(&format!("{at}.partner: unknown partner \"isw\"")),
        "{unknown:?}"
    );
    let missing = paths(&good.replace("auth_app_id = \"2021000122679999\", ", ""));
    assert!(
        missing.len() == 1
            && missing[0].starts_with(&format!("{at}.settings"))
            && missing[0].contains("auth_app_id"),
        "{missing:?}"
    );
    // A second merchant claiming the same sub-merchant of the same partner (merchants are
    // read in id order, so the second is shop).
    let twice = format!(
        "{good}\n[merchants.other]\nname = \"Other\"\nkeys = [{{ id = \"other_k1\", secret = {{ file = \"x.secret\" }} }}]\n[merchants.other.accounts.served]\nprovider = \"alipay\"\npartner = \"isv\"\nsettings = {{ auth_app_id = \"2021000122679999\", app_auth_token = {{ file = \"t.secret\" }} }}\n"
    );
    let twice = paths(&twice);
    assert!(
        twice.len() == 1 && twice[0].starts_with("merchants.shop.accounts.served.settings.auth_app_id: sub-merchant 2021000122679999 of partner \"isv\" is already merchants.other.accounts.served"),
        "{twice:?}"
    );
    let seller = paths(&good.replace(
        "alipay_public_key = { file = \"p.pem\" } }",
        "alipay_public_key = { file = \"p.pem\" }, seller_id = \"2088102177846875\" }",
    ));
    assert_eq!(seller.len(), 1, "{seller:?}");
    assert!(
        seller[0].starts_with("partners.isv.settings.seller_id"),
        "{seller:?}"
    );
    let wechat = paths(&good.replace(
        "provider = \"alipay\"\npartner",
        "provider = \"wechatpay\"\npartner",
    ));
    assert!(
        wechat.iter().any(|p| p.starts_with(&format!(
            "{at}.partner: partner \"isv\" is a alipay partner"
        ))),
        "{wechat:?}"
    );
    // A partner whose key does not load is named once, at the partner.
    let dir = key_dir(&[
        ("x.secret", "shop-secret-0123456789abcdef"),
        ("t.secret", "t"),
    ]);
    std::fs::write(dir.path().join("p.pem"), "garbage").unwrap();
    let built = parse(&good)
        .unwrap()
        .build(dir.path())
        .unwrap_err()
        .to_string();
    assert!(
        built.contains("partners.isv.settings.alipay_public_key"),
        "{built}"
    );
}

const WX_SP: &str = r#"
[partners.wx_sp]
provider = "wechatpay"
settings = { mchid = "1900009191", appid = "wx8888888888888888", merchant_serial_no = "F5765756002FDD77", merchant_private_key = { file = "k.pem" }, apiv3_key = { file = "v3.secret" }, wechatpay_public_key = { file = "p.pem" }, wechatpay_public_key_id = "PUB_KEY_ID_0112300001092026112200000000000001" }

[merchants.shop.accounts.sub]
provider = "wechatpay"
partner = "wx_sp"
settings = { sub_mchid = "1900000201" }
"#;

#[test]
fn wechat_pay_sub_merchants_name_their_sub_mchid_once_per_provider() {
    let good = format!("{GOOD}{WX_SP}");
    let problems = |text: &str| validation_problems(text);
    assert_eq!(problems(&good), Vec::<String>::new());
    let at = "merchants.shop.accounts.sub.settings";
    let missing = problems(&good.replace("sub_mchid = \"1900000201\"", ""));
    assert!(
        missing.len() == 1 && missing[0].starts_with(at) && missing[0].contains("sub_mchid"),
        "{missing:?}"
    );
    let malformed = problems(&good.replace(
        "sub_mchid = \"1900000201\"",
        "sub_mchid = \"19000x\", sub_appid = \"wx-1\"",
    ));
    assert_eq!(
        malformed,
        [
            format!("{at}.sub_mchid: must be 1 to 32 digits"),
            format!("{at}.sub_appid: must be 1 to 32 letters or digits"),
        ],
        "{malformed:?}"
    );
    // Its own official account's OAuth secret needs that account (sub_appid); its pages
    // are URLs like every other.
    let secret_alone = problems(&good.replace(
        "sub_mchid = \"1900000201\"",
        "sub_mchid = \"1900000201\", oauth_app_secret = { file = \"s\" }, oauth_api_url = \"http://example.com\"",
    ));
    assert!(
        secret_alone.len() == 2
            && secret_alone[0].starts_with(&format!("{at}.oauth_app_secret: is the sub_appid"))
            && secret_alone[1].starts_with(&format!("{at}.oauth_api_url:")),
        "{secret_alone:?}"
    );
    // The keys are the provider's: a sub-merchant naming its own is refused.
    let own_keys = problems(&good.replace(
        "sub_mchid = \"1900000201\"",
        "sub_mchid = \"1900000201\", mchid = \"1900000201\"",
    ));
    assert!(
        own_keys.len() == 1 && own_keys[0].contains("mchid"),
        "{own_keys:?}"
    );
    // Two accounts of one provider on the same sub-merchant.
    let twice = problems(&format!(
        "{good}\n[merchants.shop.accounts.again]\nprovider = \"wechatpay\"\npartner = \"wx_sp\"\nsettings = {{ sub_mchid = \"1900000201\" }}\n"
    ));
    assert!(
        twice.len() == 1
            && twice[0].starts_with("merchants.shop.accounts.sub.settings.sub_mchid: sub-merchant 1900000201 of partner \"wx_sp\" is already merchants.shop.accounts.again"),
        "{twice:?}"
    );
    // UnionPay has no partner mode in Moongate.
    let unionpay = problems(
        &good
            .replace(
                "[partners.wx_sp]\nprovider = \"wechatpay\"",
                "[partners.wx_sp]\nprovider = \"unionpay\"",
            )
            .replace(
                "[merchants.shop.accounts.sub]\nprovider = \"wechatpay\"",
                "[merchants.shop.accounts.sub]\nprovider = \"unionpay\"",
            ),
    );
    assert!(
        unionpay.iter().any(|p| p.starts_with(
            "merchants.shop.accounts.sub.partner: unionpay accounts cannot use a partner"
        )),
        "{unionpay:?}"
    );
}

#[test]
fn a_reload_keeps_a_partners_gate_unless_its_settings_change() {
    let good = format!("{GOOD}{WX_SP}").replace("{ env = \"X\" }", "{ file = \"x.secret\" }");
    let dir = key_dir(&[
        ("x.secret", "shop-secret-0123456789abcdef"),
        ("v3.secret", "0123456789abcdef0123456789abcdef"),
    ]);
    let build = |text: &str| parse(text).unwrap().build(dir.path()).unwrap();
    let old = build(&good);
    let gate = &old.partners["wx_sp"];
    let sub = old.merchants["shop"].account("sub").unwrap();
    assert!(Arc::ptr_eq(sub.partner.as_ref().unwrap(), gate));
    assert!(
        old.merchants["shop"]
            .account("main")
            .unwrap()
            .partner
            .is_none()
    );

    let mut same = build(&good);
    same.keep_state_from(&old);
    assert!(Arc::ptr_eq(&same.partners["wx_sp"], gate));
    let kept = same.merchants["shop"].account("sub").unwrap();
    assert!(Arc::ptr_eq(kept.partner.as_ref().unwrap(), gate));
    assert!(Arc::ptr_eq(&kept.circuit, &sub.circuit));

    // New provider credentials: a new gate, and its sub-merchants' own state starts fresh.
    let mut changed = build(&good.replace("F5765756002FDD77", "F5765756002FDD78"));
    changed.keep_state_from(&old);
    let fresh = &changed.partners["wx_sp"];
    assert!(!Arc::ptr_eq(fresh, gate));
    let account = changed.merchants["shop"].account("sub").unwrap();
    assert!(Arc::ptr_eq(account.partner.as_ref().unwrap(), fresh));
    assert!(!Arc::ptr_eq(&account.circuit, &sub.circuit));
    // A partner limit and breaker are checked with their key paths.
    let tuned = good.replace(
        "[partners.wx_sp]\nprovider = \"wechatpay\"",
        "[partners.wx_sp]\nprovider = \"wechatpay\"\nrate_limit = { requests_per_second = 0, burst = 1 }\ncircuit = { error_percent = 0 }",
    );
    let errors = parse(&tuned).unwrap().validate().unwrap_err();
    let paths: Vec<&str> = errors.0.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "partners.wx_sp.rate_limit.requests_per_second",
            "partners.wx_sp.circuit.error_percent"
        ],
        "{errors}"
    );
}

#[test]
fn merchants_come_from_a_folder_one_file_each_with_their_key_paths() {
    let dir = key_dir(&[
        ("x.secret", "shop-secret-0123456789abcdef"),
        ("v3.secret", "0123456789abcdef0123456789abcdef"),
    ]);
    let main = format!("merchants_dir = \"merchants.d\"\n{WX_SP}")
        .replace("\n[merchants.shop.accounts.sub]\nprovider = \"wechatpay\"\npartner = \"wx_sp\"\nsettings = { sub_mchid = \"1900000201\" }\n", "")
        + &GOOD.replace("{ env = \"X\" }", "{ file = \"x.secret\" }");
    let folder = dir.path().join("merchants.d");
    std::fs::create_dir(&folder).unwrap();
    let sub = |sub_mchid: &str| {
        format!(
            "name = \"Stall\"\nkeys = [{{ id = \"k_{sub_mchid}\", secret = {{ file = \"x.secret\" }} }}]\n\n[accounts.wechat]\nprovider = \"wechatpay\"\npartner = \"wx_sp\"\nsettings = {{ sub_mchid = \"{sub_mchid}\" }}\n"
        )
    };
    std::fs::write(folder.join("stall_1.toml"), sub("1900000201")).unwrap();
    std::fs::write(folder.join("stall_2.toml"), sub("1900000202")).unwrap();
    std::fs::write(folder.join("notes.txt"), "not a merchant").unwrap();
    let path = dir.path().join("moongate.toml");
    std::fs::write(&path, &main).unwrap();
    let config = super::load_and_build(&path).unwrap();
    assert_eq!(
        config.merchants.keys().collect::<Vec<_>>(),
        ["shop", "stall_1", "stall_2"]
    );
    let stall = config.merchants["stall_2"].account("wechat").unwrap();
    assert_eq!(stall.partner.as_ref().unwrap().id, "wx_sp");

    let problems = |files: &[(&str, String)]| -> Vec<String> {
        for (name, text) in files {
            std::fs::write(folder.join(name), text).unwrap();
        }
        let found = problem_lines(super::load_and_build(&path).err());
        for (name, _) in files {
            std::fs::remove_file(folder.join(name)).unwrap();
        }
        found
    };
    // A key the merchant table does not have, and a sub-merchant a second file claims.
    let found = problems(&[
        (
            "stall_3.toml",
            sub("1900000203").replace("name = ", "colour = 1\nname = "),
        ),
        ("stall_4.toml", sub("1900000201")),
    ]);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("merchants.stall_3.colour")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains("sub-merchant 1900000201 of partner \"wx_sp\"")),
        "{found:?}"
    );
    // A file that is not TOML, one not named by an id, one for a merchant the file declares.
    let found = problems(&[
        ("stall_5.toml", "name = [".to_owned()),
        ("stall.6.toml", sub("1900000206")),
        ("shop.toml", sub("1900000207")),
    ]);
    assert_eq!(found.len(), 3, "{found:?}");
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("merchants_dir: ") && p.contains("stall.6.toml")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("merchants.shop: declared in the config file and in")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.starts_with("merchants.stall_5: ") && p.contains("line 1")),
        "{found:?}"
    );
}
