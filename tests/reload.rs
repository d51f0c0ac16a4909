//! Hot reload: a valid new config takes effect without a restart; an invalid one is refused
//! with its problems and the old one keeps serving.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::Harness;
use moongate::server::{self, ReloadError};
use moongate_testkit::client::MerchantClient;

const K2_SECRET: &str = "shop-a-second-key-0123456789abcd";

fn with_second_key(text: &str) -> String {
    text.replace(
        r#"keys = [{ id = "shop_a_k1", secret = { file = "a.secret" } }]"#,
        r#"keys = [{ id = "shop_a_k1", secret = { file = "a.secret" } }, { id = "shop_a_k2", secret = { file = "a2.secret" } }]"#,
    )
}

async fn status_with(h: &Harness, client: &MerchantClient) -> u16 {
    h.get(client, "/v1/payments").await.0
}

#[tokio::test]
async fn valid_reloads_apply_and_invalid_ones_keep_the_old_config() {
    let h = Harness::start().await;
    let dir = h.config_path.parent().unwrap().to_path_buf();
    std::fs::write(dir.join("a2.secret"), K2_SECRET).unwrap();
    let original = std::fs::read_to_string(&h.config_path).unwrap();
    let rotated = with_second_key(&original);
    assert_ne!(rotated, original, "the fixture must contain the key line");
    let base = format!("http://{}", h.gateway.addr);
    let k2 = common::client(&base, "shop_a_k2", K2_SECRET);
    assert_eq!(
        status_with(&h, &k2).await,
        401,
        "unknown key before the reload"
    );

    // A valid change (a second signing key, as in a key rotation) takes effect.
    std::fs::write(&h.config_path, &rotated).unwrap();
    server::reload(&h.gateway.gateway, &h.config_path).unwrap();
    assert_eq!(status_with(&h, &k2).await, 200);
    assert_eq!(status_with(&h, &h.shop_a).await, 200);

    // An invalid file is refused with its key paths; the config in force keeps serving.
    let broken = rotated.replace("name = \"Shop A\"", "name = \"Shop A\"\ncolour = \"red\"");
    std::fs::write(&h.config_path, &broken).unwrap();
    let error = server::reload(&h.gateway.gateway, &h.config_path).unwrap_err();
    match &error {
        ReloadError::Invalid(errors) => assert_eq!(errors.0[0].path, "merchants.shop_a.colour"),
        other => panic!("expected an invalid config, got {other}"),
    }
    assert_eq!(status_with(&h, &k2).await, 200);

    // Changing what needs a restart is refused as a whole.
    let moved = rotated.replace(
        &format!("listen = \"{}\"", h.gateway.addr),
        "listen = \"127.0.0.1:1\"",
    );
    std::fs::write(&h.config_path, &moved).unwrap();
    let error = server::reload(&h.gateway.gateway, &h.config_path).unwrap_err();
    assert!(
        matches!(&error, ReloadError::NeedsRestart(keys) if keys == &["server.listen"]),
        "{error}"
    );
    assert_eq!(status_with(&h, &k2).await, 200);
}

#[tokio::test]
async fn the_watcher_applies_a_changed_file() {
    let h = Harness::start().await;
    let dir = h.config_path.parent().unwrap().to_path_buf();
    std::fs::write(dir.join("a2.secret"), K2_SECRET).unwrap();
    let original = std::fs::read_to_string(&h.config_path).unwrap();
    tokio::spawn(server::watch_config(
        std::sync::Arc::clone(&h.gateway.gateway),
        h.config_path.clone(),
        Duration::from_millis(20),
    ));
    let base = format!("http://{}", h.gateway.addr);
    let k2 = common::client(&base, "shop_a_k2", K2_SECRET);
    std::fs::write(&h.config_path, with_second_key(&original)).unwrap();
    let mut status = 0;
    for _ in 0..200 {
        status = status_with(&h, &k2).await;
        if status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 200, "the watcher never applied the new key");
}

/// A merchant added as a file of `merchants_dir` is served once the watcher sees the file, and
/// one removed is gone; the merchants of the config file itself go on.
#[tokio::test]
async fn the_watcher_applies_a_merchant_file_added_or_removed() {
    let h = Harness::start().await;
    let dir = h.config_path.parent().unwrap().to_path_buf();
    let folder = dir.join("merchants.d");
    std::fs::create_dir(&folder).unwrap();
    std::fs::write(dir.join("x.secret"), K2_SECRET).unwrap();
    let original = std::fs::read_to_string(&h.config_path).unwrap();
    std::fs::write(
        &h.config_path,
        format!("merchants_dir = \"merchants.d\"\n{original}"),
    )
    .unwrap();
    server::reload(&h.gateway.gateway, &h.config_path).unwrap();
    tokio::spawn(server::watch_config(
        std::sync::Arc::clone(&h.gateway.gateway),
        h.config_path.clone(),
        Duration::from_millis(20),
    ));
    let base = format!("http://{}", h.gateway.addr);
    let shop_x = common::client(&base, "shop_x_k1", K2_SECRET);
    assert_eq!(status_with(&h, &shop_x).await, 401);
    let file = folder.join("shop_x.toml");
    // Its Alipay account as shop A's (the harness writes key paths in full).
    let alipay = original
        .lines()
        .find(|l| l.starts_with("settings = { app_id = "))
        .unwrap();
    std::fs::write(
        &file,
        format!(
            "name = \"Shop X\"\nkeys = [{{ id = \"shop_x_k1\", secret = {{ file = \"x.secret\" }} }}]\n[accounts.alipay_main]\nprovider = \"alipay\"\n{alipay}\n"
        ),
    )
    .unwrap();
    let wait_for = |want: u16| {
        let (h, shop_x) = (&h, &shop_x);
        async move {
            let mut status = 0;
            for _ in 0..200 {
                status = status_with(h, shop_x).await;
                if status == want {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            status
        }
    };
    assert_eq!(wait_for(200).await, 200, "the watcher never added shop_x");
    assert_eq!(status_with(&h, &h.shop_a).await, 200);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(wait_for(401).await, 401, "the watcher never removed shop_x");
    assert_eq!(status_with(&h, &h.shop_a).await, 200);
}

/// Merchant files are reloaded one by one: a file at fault is refused alone (its merchant
/// keeps serving as before, or stays out if it is new) while the other files' changes apply;
/// a fault outside the merchant files still refuses the whole reload.
#[tokio::test]
async fn a_merchant_file_at_fault_is_refused_alone() {
    let h = Harness::start().await;
    let dir = h.config_path.parent().unwrap().to_path_buf();
    let folder = dir.join("merchants.d");
    std::fs::create_dir(&folder).unwrap();
    for name in ["x", "y", "z"] {
        std::fs::write(dir.join(format!("{name}.secret")), K2_SECRET).unwrap();
    }
    let original = std::fs::read_to_string(&h.config_path).unwrap();
    let with_dir = format!("merchants_dir = \"merchants.d\"\n{original}");
    std::fs::write(&h.config_path, &with_dir).unwrap();
    let alipay = original
        .lines()
        .find(|l| l.starts_with("settings = { app_id = "))
        .unwrap()
        .to_owned();
    let merchant = |id: &str, key: &str| {
        format!(
            "name = \"Shop {id}\"\nkeys = [{{ id = \"{key}\", secret = {{ file = \"{id}.secret\" }} }}]\n[accounts.alipay_main]\nprovider = \"alipay\"\n{alipay}\n"
        )
    };
    let base = format!("http://{}", h.gateway.addr);
    let client = |key: &str| common::client(&base, key, K2_SECRET);
    let reload = || server::reload(&h.gateway.gateway, &h.config_path);

    // shop_x is good, shop_y names a setting that does not exist: y alone is refused.
    std::fs::write(folder.join("x.toml"), merchant("x", "x_k1")).unwrap();
    std::fs::write(
        folder.join("y.toml"),
        format!("colour = \"red\"\n{}", merchant("y", "y_k1")),
    )
    .unwrap();
    let refused = reload().unwrap();
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].path, "merchants.y.colour", "{refused:?}");
    assert_eq!(status_with(&h, &client("x_k1")).await, 200);
    assert_eq!(status_with(&h, &client("y_k1")).await, 401);

    // shop_x's file breaks (its key moves to k2 but the file no longer parses) while shop_z
    // arrives: z applies, x keeps serving with its key in force, y is still refused.
    std::fs::write(folder.join("x.toml"), merchant("x", "x_k2") + "[[[").unwrap();
    std::fs::write(folder.join("z.toml"), merchant("z", "z_k1")).unwrap();
    let refused = reload().unwrap();
    let paths: Vec<&str> = refused.iter().map(|p| p.path.as_str()).collect();
    assert!(
        paths.contains(&"merchants.x") && paths.contains(&"merchants.y.colour"),
        "{paths:?}"
    );
    assert_eq!(status_with(&h, &client("x_k1")).await, 200);
    assert_eq!(status_with(&h, &client("x_k2")).await, 401);
    assert_eq!(status_with(&h, &client("z_k1")).await, 200);
    assert_eq!(status_with(&h, &h.shop_a).await, 200);

    // Fixed, shop_x's change applies.
    std::fs::write(folder.join("x.toml"), merchant("x", "x_k2")).unwrap();
    std::fs::remove_file(folder.join("y.toml")).unwrap();
    assert!(reload().unwrap().is_empty());
    assert_eq!(status_with(&h, &client("x_k2")).await, 200);

    // A fault in the config file itself refuses everything, the merchant files' changes too.
    std::fs::write(folder.join("z.toml"), merchant("z", "z_k2")).unwrap();
    std::fs::write(
        &h.config_path,
        with_dir.replacen("[server]\n", "[server]\nport = 1\n", 1),
    )
    .unwrap();
    assert!(matches!(reload(), Err(ReloadError::Invalid(_))));
    assert_eq!(status_with(&h, &client("z_k1")).await, 200);
    assert_eq!(status_with(&h, &client("z_k2")).await, 401);
}
