//! Many sub-merchants under one partner: `cargo bench --bench merchants [-- COUNT [ROUNDS]]`
//! (default 10,000 merchants, 5 rounds).
//!
//! Writes a config whose `merchants_dir` holds COUNT merchant files, each a shop with its own
//! signing key file and one WeChat Pay account that is a sub-merchant of one service provider
//! (`[partners.sp]`), then, each round, times as child processes of the release binary:
//! - `moongate check-config` (wall time and peak memory, by `/usr/bin/time`);
//! - `moongate serve` from spawn until `/readyz` answers 200 (start-up: every file read,
//!   validated and built, the ledger opened), its resident and peak memory then (`VmRSS`,
//!   `VmHWM` of `/proc/<pid>/status`);
//! - a reload after one merchant file changed (SIGHUP to `moongate_config_reloads_total`
//!   counting it), and the memory after it.
//!
//! Issue 20's goal: start-up under 2 s and under 200 MB on the 2-core machine. Reported as
//! medians with min–max.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::float_arithmetic
)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn fixture(path: &str) -> String {
    format!("{}/fixtures/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn merchant_file(index: usize) -> String {
    format!(
        "name = \"小店 Shop {index}\"\nkeys = [{{ id = \"m{index:05}_k1\", secret = {{ file = \"keys/m{index:05}.secret\" }} }}]\n\n[accounts.wechat]\nprovider = \"wechatpay\"\npartner = \"sp\"\nfee_rate = \"0.38%\"\nsettings = {{ sub_mchid = \"{}\" }}\n",
        1_900_100_000 + index
    )
}

/// The config and its COUNT merchant files; returns the config's path.
fn write_config(dir: &Path, count: usize, port: u16, admin: u16) -> PathBuf {
    std::fs::create_dir_all(dir.join("merchants.d")).unwrap();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    std::fs::write(
        dir.join("keys/sp-apiv3.secret"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    for index in 0..count {
        std::fs::write(
            dir.join(format!("keys/m{index:05}.secret")),
            format!("merchant-{index:05}-signing-secret-0123456789\n"),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("merchants.d/m{index:05}.toml")),
            merchant_file(index),
        )
        .unwrap();
    }
    let config = format!(
        r#"merchants_dir = "merchants.d"

[server]
listen = "127.0.0.1:{port}"
public_base_url = "http://127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"

[ledger]
path = "ledger.db"

[partners.sp]
provider = "wechatpay"
rate_limit = {{ requests_per_second = 500, burst = 500 }}
[partners.sp.settings]
mchid = "1900009191"
appid = "wx8888888888888888"
merchant_serial_no = "F5765756002FDD77"
merchant_private_key = {{ file = "{key}" }}
apiv3_key = {{ file = "keys/sp-apiv3.secret" }}
wechatpay_public_key = {{ file = "{public}" }}
wechatpay_public_key_id = "PUB_KEY_ID_0112300001092026112200000000000001"
api_base_url = "http://127.0.0.1:1"
"#,
        key = fixture("keys/wechatpay-go-merchant-private-key.pem"),
        public = fixture("keys/sandbox-wechatpay-public-key.pem"),
    );
    let path = dir.join("moongate.toml");
    std::fs::write(&path, config).unwrap();
    path
}

fn binary() -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/moongate");
    assert!(
        path.exists(),
        "build the release binary first: cargo build --release"
    );
    path
}

/// (`VmRSS`, `VmHWM`) of a running process, MiB.
fn memory(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> f64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kb| kb.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, text))
}

fn reloads_applied(admin: u16) -> u64 {
    let Some((_, text)) = http_get(admin, "/metrics") else {
        return 0;
    };
    text.lines()
        .find(|l| {
            l.starts_with("moongate_config_reloads_total") && l.contains("outcome=\"applied\"")
        })
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse::<f64>().ok())
        .map_or(0, |n| n as u64)
}

struct Round {
    check_secs: f64,
    check_mib: f64,
    start_secs: f64,
    rss_mib: f64,
    hwm_mib: f64,
    reload_secs: f64,
    reload_hwm_mib: f64,
}

fn check_config(config: &Path) -> (f64, f64) {
    let started = Instant::now();
    let output = Command::new("/usr/bin/time")
        .args(["-f", "maxrss_kb=%M"])
        .arg(binary())
        .arg("check-config")
        .arg(config)
        .output()
        .unwrap();
    let secs = started.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "check-config failed: {}{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    let kb: f64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("maxrss_kb="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0.0);
    (secs, kb / 1024.0)
}

fn serve(config: &Path) -> Child {
    let log = std::fs::File::create(config.with_file_name("serve.log")).unwrap();
    Command::new(binary())
        .arg("serve")
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap()
}

fn round(dir: &Path, config: &Path, port: u16, admin: u16, index: usize) -> Round {
    let (check_secs, check_mib) = check_config(config);
    let _ = std::fs::remove_file(dir.join("ledger.db"));
    let started = Instant::now();
    let mut child = serve(config);
    loop {
        if let Some((200, _)) = http_get(port, "/readyz") {
            break;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("moongate serve exited: {status}");
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no start-up");
        std::thread::sleep(Duration::from_millis(5));
    }
    let start_secs = started.elapsed().as_secs_f64();
    let (rss_mib, hwm_mib) = memory(child.id());
    // One merchant's file changes (its name), and the operator asks for a reload.
    let before = reloads_applied(admin);
    let file = dir.join(format!("merchants.d/m{index:05}.toml"));
    std::fs::write(
        &file,
        merchant_file(index).replace("小店", &format!("新店{index}")),
    )
    .unwrap();
    let started = Instant::now();
    Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .unwrap();
    while reloads_applied(admin) == before {
        assert!(started.elapsed() < Duration::from_secs(120), "no reload");
        std::thread::sleep(Duration::from_millis(2));
    }
    let reload_secs = started.elapsed().as_secs_f64();
    let (_, reload_hwm_mib) = memory(child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    Round {
        check_secs,
        check_mib,
        start_secs,
        rss_mib,
        hwm_mib,
        reload_secs,
        reload_hwm_mib,
    }
}

fn summary(name: &str, unit: &str, mut values: Vec<f64>) {
    values.sort_by(f64::total_cmp);
    let median = values[values.len() / 2];
    println!(
        "  {name:<34} {median:>9.3} {unit}  (min {:.3}, max {:.3})",
        values[0],
        values[values.len() - 1]
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let count: usize = args.first().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5);
    // MOONGATE_BENCH_DIR keeps the files (config, merchant files, serve.log) for a look after.
    let temp = tempfile::tempdir().unwrap();
    let kept = std::env::var_os("MOONGATE_BENCH_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from);
    let dir = kept.as_deref().unwrap_or(temp.path());
    let (port, admin) = (free_port(), free_port());
    let written = Instant::now();
    let config = write_config(dir, count, port, admin);
    println!(
        "{count} merchants, each a sub-merchant of one WeChat Pay service provider, in {count} files (written in {:.1} s); {rounds} rounds",
        written.elapsed().as_secs_f64()
    );
    let results: Vec<Round> = (0..rounds)
        .map(|i| round(dir, &config, port, admin, i))
        .collect();
    let column = |f: fn(&Round) -> f64| results.iter().map(f).collect::<Vec<_>>();
    summary("check-config", "s", column(|r| r.check_secs));
    summary("check-config peak memory", "MiB", column(|r| r.check_mib));
    summary("serve: spawn to /readyz 200", "s", column(|r| r.start_secs));
    summary(
        "serve: resident after start-up",
        "MiB",
        column(|r| r.rss_mib),
    );
    summary("serve: peak during start-up", "MiB", column(|r| r.hwm_mib));
    summary(
        "reload after one file changed",
        "s",
        column(|r| r.reload_secs),
    );
    summary(
        "serve: peak after the reload",
        "MiB",
        column(|r| r.reload_hwm_mib),
    );
}
