//! The `moongate` command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use moongate::config;
use moongate::reconcile::{self, BreakStatus};
use moongate::server;
use moongate_testkit::sandbox::{self, standard::Standard};

mod demo;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of the system allocator (see ARCHITECTURE.md "Dependencies").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "moongate", version, about = "Payment interoperability gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Gateway + strict Alipay and WeChat Pay sandboxes + webhook receiver on loopback, no
    /// credentials needed.
    Demo {
        /// Where the fixtures (demo config, test keys) are.
        #[arg(long, default_value = "fixtures")]
        fixtures: PathBuf,
        /// Skip the scripted payment.
        #[arg(long)]
        no_walkthrough: bool,
        /// Stop after the scripted payment.
        #[arg(long)]
        exit: bool,
    },
    /// Serve the gateway from a config file.
    Serve {
        /// The TOML config.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Apply the ledger's pending schema migrations (PostgreSQL; `serve` also applies them at
    /// start) and say which ran.
    Migrate {
        /// The TOML config.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Check a config file and report every problem with its key path.
    CheckConfig {
        /// The TOML config.
        file: PathBuf,
    },
    /// Download a WeChat Pay account's platform certificates (certificate mode) as PEM files.
    WechatpayCertificates {
        /// The TOML config.
        #[arg(long, short)]
        config: PathBuf,
        /// Merchant id in the config.
        #[arg(long)]
        merchant: String,
        /// WeChat Pay account id of that merchant.
        #[arg(long)]
        account: String,
        /// Where to write `wechatpay-platform-<serial>.pem`.
        #[arg(long, default_value = ".")]
        out: PathBuf,
    },
    /// Start a merchant's authorisation of its partner's app (an Alipay ISV account with no
    /// configured token): prints the link the merchant opens (alive 24 hours), as the admin
    /// listener's `POST /authorisations` does.
    Authorise {
        /// The TOML config.
        #[arg(long, short)]
        config: PathBuf,
        /// Merchant id in the config.
        #[arg(long)]
        merchant: String,
        /// Its account that authorises the partner's app.
        #[arg(long)]
        account: String,
    },
    /// Reconcile one account's statement day against the ledger: writes a JSON report, a CSV
    /// of breaks and an HTML report.
    Reconcile {
        /// The TOML config.
        #[arg(long, short)]
        config: PathBuf,
        /// Merchant id in the config.
        #[arg(long)]
        merchant: String,
        /// Provider account of that merchant.
        #[arg(long)]
        account: String,
        /// Statement day, yyyy-MM-dd (Beijing); default: yesterday in Beijing.
        #[arg(long)]
        date: Option<String>,
        /// Import this statement file (the provider's own format) instead of downloading it.
        #[arg(long)]
        statement: Option<PathBuf>,
        /// Where to write the reports.
        #[arg(long, default_value = ".")]
        out: PathBuf,
        /// Show the progress bar even when stderr is not a terminal.
        #[arg(long)]
        progress: bool,
    },
    /// List reconciliation breaks, or set their status.
    Breaks {
        /// The TOML config.
        #[arg(long, short)]
        config: PathBuf,
        #[command(subcommand)]
        action: BreakAction,
    },
    /// List a merchant's webhook events, or queue its parked ones for delivery again.
    Events {
        /// The TOML config.
        #[arg(long, short)]
        config: PathBuf,
        #[command(subcommand)]
        action: EventAction,
    },
    /// Repair a missing_in_ledger break from the provider's record (the provider must confirm
    /// the payment); resolves the break.
    Repair {
        /// The TOML config.
        #[arg(long, short)]
        config: PathBuf,
        /// The break id (`brk_…`).
        #[arg(long = "break")]
        break_id: String,
    },
    /// Serve the strict provider sandboxes (every provider when none is named), each on the
    /// address given, and print the keys and ids a client needs (official SDKs, other clients).
    Sandbox {
        /// Where the fixtures (test keys) are.
        #[arg(long, default_value = "fixtures")]
        fixtures: PathBuf,
        /// Serve the Alipay sandbox here (default 127.0.0.1:8090 when no provider is named).
        #[arg(long)]
        alipay: Option<SocketAddr>,
        /// Serve the WeChat Pay sandbox here (default 127.0.0.1:8092 when no provider is named).
        #[arg(long)]
        wechatpay: Option<SocketAddr>,
        /// Serve the UnionPay sandbox here (default 127.0.0.1:8094 when no provider is named).
        #[arg(long)]
        unionpay: Option<SocketAddr>,
        /// Divide the providers' notification retry schedules (and WeChat Pay's refund settling)
        /// by this.
        #[arg(long, default_value_t = 1)]
        time_divisor: u32,
    },
}

#[derive(Debug, Subcommand)]
enum EventAction {
    /// List events, newest first.
    List {
        /// The merchant.
        #[arg(long)]
        merchant: String,
        /// Only events whose delivery is pending, delivered or parked.
        #[arg(long)]
        status: Option<String>,
        /// Only events of this type (payment.succeeded, …).
        #[arg(long = "type")]
        kind: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Queue every parked event (of a type, when given) for delivery again now.
    Resend {
        /// The merchant.
        #[arg(long)]
        merchant: String,
        /// Only events of this type.
        #[arg(long = "type")]
        kind: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum BreakAction {
    /// List breaks.
    List {
        /// Only this merchant's.
        #[arg(long)]
        merchant: Option<String>,
        /// Only breaks in this status (open, resolved, ignored).
        #[arg(long)]
        status: Option<String>,
    },
    /// Mark a break resolved.
    Resolve {
        /// Break id.
        id: String,
        /// Resolution note.
        #[arg(long)]
        note: Option<String>,
    },
    /// Mark a break ignored (accepted as is).
    Ignore {
        /// Break id.
        id: String,
        /// Why.
        #[arg(long)]
        note: Option<String>,
    },
    /// Open a break again.
    Reopen {
        /// Break id.
        id: String,
        /// Why.
        #[arg(long)]
        note: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo prints its own story; its logs stay quiet unless RUST_LOG asks for more.
    let default_filter = match cli.command {
        Command::Demo { .. } => "warn",
        _ => "warn,moongate=info",
    };
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| default_filter.to_owned());
    // Colours only for a terminal: logs sent to a file or a collector stay plain text.
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    if let Command::CheckConfig { file } = &cli.command {
        return check_config(file);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

fn check_config(file: &std::path::Path) -> ExitCode {
    match config::load_and_build(file) {
        Ok(config) => {
            let accounts: usize = config.merchants.values().map(|m| m.accounts.len()).sum();
            println!(
                "{}: ok ({} merchant(s), {accounts} account(s), {} partner(s))",
                file.display(),
                config.merchants.len(),
                config.partners.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{}: {errors}", file.display());
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Demo {
            fixtures,
            no_walkthrough,
            exit,
        } => {
            demo::run(demo::DemoOptions {
                fixtures,
                walkthrough: !no_walkthrough,
                exit_after_walkthrough: exit,
            })
            .await
        }
        Command::Serve { config: path } => {
            let config = config::load_and_build(&path)?;
            let listener = tokio::net::TcpListener::bind(config.listen).await?;
            let store = server::open_store(&config).await?;
            let running = server::start_on(config, store, listener).await?;
            tracing::info!(addr = %running.addr, "moongate serving");
            // Hot reload: on SIGHUP or when the file's content changes.
            tokio::spawn(server::watch_config(
                std::sync::Arc::clone(&running.gateway),
                path.clone(),
                std::time::Duration::from_secs(2),
            ));
            stop_signal().await?;
            tracing::info!("stopping: finishing the requests in flight");
            running.shutdown(std::time::Duration::from_secs(30)).await;
            Ok(())
        }
        Command::Authorise {
            config: path,
            merchant,
            account,
        } => {
            let gateway = reconcile::cli::open(&path).await?;
            let started = gateway.start_authorisation(&merchant, &account).await?;
            let expires = started
                .expires_at
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default();
            println!("{}", started.url);
            println!("open it in the merchant's browser before {expires}");
            Ok(())
        }
        Command::WechatpayCertificates {
            config: path,
            merchant,
            account,
            out,
        } => {
            let written =
                moongate::certificates::download(&path, &merchant, &account, &out).await?;
            for file in &written {
                println!("{}", file.display());
            }
            println!(
                "{} certificate(s); list them under platform_certificates of merchants.{merchant}.accounts.{account}.settings",
                written.len()
            );
            Ok(())
        }
        Command::Sandbox {
            fixtures,
            alipay,
            wechatpay,
            unionpay,
            time_divisor,
        } => {
            let (alipay, wechatpay, unionpay) = match (alipay, wechatpay, unionpay) {
                (None, None, None) => (
                    Some(SocketAddr::from(([127, 0, 0, 1], 8090))),
                    Some(SocketAddr::from(([127, 0, 0, 1], 8092))),
                    Some(SocketAddr::from(([127, 0, 0, 1], 8094))),
                ),
                chosen => chosen,
            };
            let standard = Standard::load(&fixtures, time_divisor).map_err(anyhow::Error::msg)?;
            let alipay = match alipay {
                Some(addr) => Some((addr, tokio::net::TcpListener::bind(addr).await?)),
                None => None,
            };
            let wechatpay = match wechatpay {
                Some(addr) => Some((addr, tokio::net::TcpListener::bind(addr).await?)),
                None => None,
            };
            let unionpay = match unionpay {
                Some(addr) => Some((addr, tokio::net::TcpListener::bind(addr).await?)),
                None => None,
            };
            if let Some((addr, _)) = &alipay {
                print!("{}", standard.describe_alipay(&format!("http://{addr}")));
            }
            if let Some((addr, _)) = &wechatpay {
                print!("{}", standard.describe_wechatpay(&format!("http://{addr}")));
            }
            if let Some((addr, _)) = &unionpay {
                print!("{}", standard.describe_unionpay(&format!("http://{addr}")));
            }
            std::io::Write::flush(&mut std::io::stdout())?;
            let mut tasks = Vec::new();
            let mut keep = (None, None, None);
            if let Some((_, listener)) = alipay {
                let (sandbox, task) = sandbox::start_on(standard.alipay, listener).await?;
                keep.0 = Some(sandbox);
                tasks.push(task);
            }
            if let Some((_, listener)) = wechatpay {
                let (sandbox, task) =
                    sandbox::wechat::start_on(standard.wechatpay, listener).await?;
                keep.1 = Some(sandbox);
                tasks.push(task);
            }
            if let Some((_, listener)) = unionpay {
                let (sandbox, task) =
                    sandbox::unionpay::start_on(standard.unionpay, listener).await?;
                keep.2 = Some(sandbox);
                tasks.push(task);
            }
            let stopped = async {
                for task in tasks {
                    let _ = task.await;
                }
            };
            tokio::select! {
                _ = stopped => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            drop(keep);
            Ok(())
        }
        Command::Reconcile {
            config,
            merchant,
            account,
            date,
            statement,
            out,
            progress,
        } => reconcile::cli::reconcile(&config, merchant, account, date, statement, &out, progress)
            .await
            .map(|_| ()),
        Command::Breaks { config, action } => match action {
            BreakAction::List { merchant, status } => {
                reconcile::cli::list_breaks(&config, merchant, status).await
            }
            BreakAction::Resolve { id, note } => {
                reconcile::cli::set_break(&config, &id, BreakStatus::Resolved, note).await
            }
            BreakAction::Ignore { id, note } => {
                reconcile::cli::set_break(&config, &id, BreakStatus::Ignored, note).await
            }
            BreakAction::Reopen { id, note } => {
                reconcile::cli::set_break(&config, &id, BreakStatus::Open, note).await
            }
        },
        Command::Events { config, action } => events_command(&config, action).await,
        Command::Repair { config, break_id } => reconcile::cli::repair(&config, &break_id).await,
        Command::Migrate { config: path } => {
            let config = config::load_and_build(&path)?;
            match &config.ledger {
                config::LedgerBackend::Sqlite(file) => {
                    // SQLite ledgers bring themselves up to date when opened.
                    moongate::store::sqlite::SqliteStore::open(file)?;
                    println!("SQLite ledger {} is up to date", file.display());
                }
                config::LedgerBackend::Postgres {
                    url,
                    max_connections: _,
                } => {
                    let store =
                        moongate::store::postgres::PgStore::connect(url.expose(), 1).await?;
                    let applied = store.migrate().await?;
                    if applied.is_empty() {
                        println!("PostgreSQL ledger is up to date");
                    }
                    for name in applied {
                        println!("applied {name}");
                    }
                }
            }
            Ok(())
        }
        Command::CheckConfig { .. } => Ok(()),
    }
}

/// `moongate events list | resend`: the same store calls as `GET /v1/events` and
/// `POST /v1/events/resend`, for an operator on the ledger's machine.
async fn events_command(config_path: &std::path::Path, action: EventAction) -> anyhow::Result<()> {
    use moongate::store::{DeliveryStatus, EventFilter};
    let gateway = reconcile::cli::open(config_path).await?;
    let known = |merchant: &str| {
        if gateway.config().merchants.contains_key(merchant) {
            Ok(())
        } else {
            Err(anyhow::anyhow!("no merchant {merchant} in the config"))
        }
    };
    match action {
        EventAction::List {
            merchant,
            status,
            kind,
            limit,
        } => {
            known(&merchant)?;
            let delivery = match status.as_deref() {
                None => None,
                Some(text) => Some(DeliveryStatus::parse(text).ok_or_else(|| {
                    anyhow::anyhow!("--status must be pending, delivered or parked")
                })?),
            };
            let filter = EventFilter {
                kind,
                delivery,
                ..EventFilter::default()
            };
            let ids = gateway
                .store
                .event_ids(&merchant, filter, limit.clamp(1, 1000))
                .await?;
            for id in &ids {
                if let Some(record) = gateway.store.event(&merchant, id).await? {
                    let body: serde_json::Value =
                        serde_json::from_str(&record.body).unwrap_or_default();
                    let state = record.delivery_status().as_str();
                    let text = |pointer: &str| {
                        body.pointer(pointer)
                            .and_then(serde_json::Value::as_str)
                            .unwrap_or("")
                            .to_owned()
                    };
                    println!(
                        "{id}  {:<24} {}  {state:<9} {} attempt(s)  {}",
                        text("/type"),
                        text("/created_at"),
                        record.attempts,
                        text("/data/object/id"),
                    );
                }
            }
            println!("{} event(s)", ids.len());
        }
        EventAction::Resend { merchant, kind } => {
            known(&merchant)?;
            let filter = EventFilter {
                kind,
                ..EventFilter::default()
            };
            let mut total = 0;
            loop {
                let queued = gateway
                    .store
                    .resend_parked(&merchant, filter.clone(), 1000, gateway.now())
                    .await?;
                total += queued;
                if queued < 1000 {
                    break;
                }
            }
            println!("{total} parked event(s) of {merchant} queued for delivery again");
        }
    }
    Ok(())
}
