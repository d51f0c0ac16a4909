//! Starting a gateway: ledger, background workers and the HTTP(S) listener.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::outbound::Outbound;
use crate::store::Store;
use crate::webhooks;

/// A running gateway.
#[derive(Debug)]
pub struct Running {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Where `/metrics` is served, when `server.admin_listen` is set.
    pub admin_addr: Option<SocketAddr>,
    /// Shared state (tests inspect the ledger through it).
    pub gateway: Arc<Gateway>,
    shutdown: tokio::sync::watch::Sender<bool>,
    server: JoinHandle<()>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops everything at once (tests; a crash is what `kill -9` is for).
    pub fn stop(self) {
        self.server.abort();
        for task in self.tasks {
            task.abort();
        }
    }

    /// Graceful shutdown: stop accepting connections, let requests in flight finish (up to
    /// `grace`), then stop the workers. Everything acknowledged is already in the ledger; what
    /// the workers had not done yet, the next start resumes.
    pub async fn shutdown(self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let mut server = self.server;
        if tokio::time::timeout(grace, &mut server).await.is_err() {
            tracing::warn!("requests still running after the grace period; stopping anyway");
            server.abort();
        }
        for task in self.tasks {
            task.abort();
        }
    }
}

/// Errors starting up.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Ledger.
    #[error("ledger: {0}")]
    Store(#[from] crate::store::StoreError),
    /// Network or TLS.
    #[error("{0}")]
    Io(String),
}

/// Opens the configured ledger: the SQLite file, or the PostgreSQL database with its pending
/// migrations applied (instances starting together take turns).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, StartError> {
    Ok(crate::store::open(&config.ledger).await?)
}

/// Starts on an already bound listener (so tests and the demo can pick free ports first).
pub async fn start_on(
    config: Config,
    store: Arc<dyn Store>,
    listener: TcpListener,
) -> Result<Running, StartError> {
    start_with_clock(config, store, listener, Clock::system()).await
}

/// [`start_on`] with a given clock (tests step its system clock).
pub async fn start_with_clock(
    config: Config,
    store: Arc<dyn Store>,
    listener: TcpListener,
    clock: Clock,
) -> Result<Running, StartError> {
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Io(e.to_string()))?;
    let providers = Outbound::new(
        Duration::from_millis(config.providers.connect_timeout_ms),
        Duration::from_millis(config.providers.call_timeout_ms),
    )
    .map_err(StartError::Io)?;
    let webhooks_client = Outbound::new(
        Duration::from_millis(config.providers.connect_timeout_ms),
        Duration::from_millis(config.webhooks.timeout_ms),
    )
    .map_err(StartError::Io)?;
    let tls = match &config.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let shared = match &config.shared_limits {
        Some(settings) => Some(
            crate::shared_limits::SharedLimiter::new(
                settings.url.expose(),
                settings.timeout,
                &settings.prefix,
            )
            .map_err(StartError::Io)?,
        ),
        None => None,
    };
    let cashier = config
        .cashier_key
        .load()
        .map_err(|e| StartError::Io(format!("cashier key: {e}")))?;
    let gateway = Arc::new(
        Gateway::new(config, store, providers, webhooks_client, cashier, clock)
            .with_shared_limits(shared),
    );
    // A ledger that cannot take the mark now (a full disk) still serves what it can; the
    // janitor's next pass syncs again.
    if let Err(error) = gateway.sync_clock().await {
        tracing::warn!(%error, "clock sync at start failed");
    }
    // The tokens of merchants who authorised through Moongate, before the first call.
    if let Err(error) = gateway.sync_authorisations().await {
        tracing::warn!(%error, "authorisations not loaded at start");
    }
    let app = crate::http::router(Arc::clone(&gateway));
    let (shutdown, stopping) = tokio::sync::watch::channel(false);
    let limits = ConnectionLimits {
        header_timeout: Duration::from_millis(gateway.config().header_read_timeout_ms),
        max_connections: gateway.config().max_connections,
    };
    let server = tokio::spawn(serve(listener, tls, app, limits, stopping));
    let mut admin_addr = None;
    let mut tasks = Vec::new();
    if let Some(listen) = gateway.config().admin_listen {
        let admin = TcpListener::bind(listen)
            .await
            .map_err(|e| StartError::Io(format!("admin listener {listen}: {e}")))?;
        admin_addr = Some(
            admin
                .local_addr()
                .map_err(|e| StartError::Io(e.to_string()))?,
        );
        let app = crate::http::admin_router(Arc::clone(&gateway));
        tasks.push(tokio::spawn(async move {
            if let Err(error) = axum::serve(admin, app).await {
                tracing::error!(%error, "admin server stopped");
            }
        }));
    }
    tasks.extend([
        tokio::spawn(webhooks::run(Arc::clone(&gateway))),
        tokio::spawn(Arc::clone(&gateway).recheck_loop()),
        tokio::spawn(Arc::clone(&gateway).refusal_loop()),
        tokio::spawn(crate::reconcile::schedule::daily_loop(Arc::clone(&gateway))),
    ]);
    Ok(Running {
        addr,
        admin_addr,
        gateway,
        shutdown,
        server,
        tasks,
    })
}

/// Loads a PEM certificate chain and key for serving HTTPS.
pub fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, StartError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StartError::Io(format!("{}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| StartError::Io(format!("{}: {e}", key.display())))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| StartError::Io(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| StartError::Io(format!("TLS certificate: {e}")))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// What the accept loop holds clients to (the body read timeout is the router's).
#[derive(Clone, Copy, Debug)]
struct ConnectionLimits {
    header_timeout: Duration,
    max_connections: usize,
}

/// The accept loop, plain or TLS: a header read timeout against slow clients, at most
/// `max_connections` served at once (beyond that, new connections wait in the kernel's listen
/// queue: nothing is accepted until one closes), and on shutdown no new connections while
/// the ones open finish their requests.
async fn serve(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    app: axum::Router,
    limits: ConnectionLimits,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let header_timeout = limits.header_timeout;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => slot,
            _ = stopping.changed() => break,
        };
        let Ok(slot) = slot else { break };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.changed() => break,
        };
        // Reap finished connections so the set stays small.
        while connections.try_join_next().is_some() {}
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (tls, app, mut stopping) = (tls.clone(), app.clone(), stopping.clone());
        connections.spawn(async move {
            // Held for as long as the connection is open.
            let _slot = slot;
            // The peer address rides along in each request (the cashier needs the shopper's
            // IP for WeChat Pay H5).
            let app = tower::ServiceExt::map_request(
                app,
                move |mut request: axum::http::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(crate::http::extract::PeerAddr(peer));
                    request
                },
            );
            let service = hyper_util::service::TowerToHyperService::new(app);
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(header_timeout);
            match tls {
                None => {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let connection = builder.serve_connection(io, service);
                    drive(connection, &mut stopping, peer).await;
                }
                Some(acceptor) => {
                    let handshake =
                        tokio::time::timeout(header_timeout, acceptor.accept(stream)).await;
                    let tls = match handshake {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(error)) => {
                            tracing::debug!(%error, %peer, "TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let io = hyper_util::rt::TokioIo::new(tls);
                    let connection = builder.serve_connection(io, service);
                    drive(connection, &mut stopping, peer).await;
                }
            }
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Serves one connection; on shutdown, lets its request in flight finish, then closes it.
async fn drive<I, S>(
    connection: hyper::server::conn::http1::Connection<I, S>,
    stopping: &mut tokio::sync::watch::Receiver<bool>,
    peer: SocketAddr,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming> + Send,
    S::ResBody: hyper::body::Body + Send + 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connection = std::pin::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stopping.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%error, %peer, "connection ended with an error");
    }
}

/// Why a config reload was refused; the config in force keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file is invalid.
    #[error("{0}")]
    Invalid(#[from] crate::config::ConfigErrors),
    /// It changes settings only a restart can apply.
    #[error("changing {} needs a restart; nothing was reloaded", .0.join(", "))]
    NeedsRestart(Vec<&'static str>),
}

/// Loads, validates and builds the config file, then puts it in force, unless it is invalid
/// or changes what only a restart can (listen addresses, TLS files, the ledger). Requests in
/// flight finish with the config they started with. Merchant files of `merchants_dir` are
/// taken one by one ([`crate::config::reload_build`]): a file at fault is refused alone, its
/// merchant served as before; `Ok` carries the problems of the files refused.
pub fn reload(
    gateway: &Gateway,
    path: &Path,
) -> Result<Vec<crate::config::ConfigProblem>, ReloadError> {
    let old = gateway.config();
    let new = crate::config::reload_build(path, &old);
    let outcome = new
        .map_err(ReloadError::from)
        .and_then(|(mut new, refused)| {
            let mut restart = Vec::new();
            if new.listen != old.listen {
                restart.push("server.listen");
            }
            if new.admin_listen != old.admin_listen {
                restart.push("server.admin_listen");
            }
            if new.tls != old.tls {
                restart.push("server.tls");
            }
            if new.max_connections != old.max_connections {
                restart.push("server.max_connections");
            }
            if new.header_read_timeout_ms != old.header_read_timeout_ms {
                restart.push("server.header_read_timeout_ms");
            }
            if !new.ledger.same_as(&old.ledger) {
                restart.push("ledger");
            }
            let shared = |c: &crate::config::Config| {
                c.shared_limits
                    .as_ref()
                    .map(|s| (s.url.expose().clone(), s.timeout, s.prefix.clone()))
            };
            if shared(&new) != shared(&old) {
                restart.push("rate_limits");
            }
            if restart.is_empty() {
                new.keep_state_from(&old);
                gateway.replace_config(new);
                Ok(refused)
            } else {
                Err(ReloadError::NeedsRestart(restart))
            }
        });
    let label = match &outcome {
        Ok(refused) if refused.is_empty() => "applied",
        Ok(_) => "partial",
        Err(_) => "refused",
    };
    gateway
        .metrics
        .config_reloads
        .get_or_create(&crate::metrics::OutcomeLabels {
            source: "file".to_owned(),
            outcome: label.to_owned(),
        })
        .inc();
    match &outcome {
        Ok(refused) if refused.is_empty() => {
            tracing::info!(path = %path.display(), "config reloaded")
        }
        Ok(refused) => {
            let problems: Vec<String> = refused.iter().map(ToString::to_string).collect();
            tracing::error!(
                path = %path.display(),
                problems = %problems.join("; "),
                "config reloaded without the merchant files at fault; their merchants are served as before (or not at all, if new)"
            )
        }
        Err(error) => {
            tracing::error!(path = %path.display(), %error, "config reload refused; the previous config keeps serving")
        }
    }
    outcome
}

/// What the watcher compares: the config file's content, and the name, size and modification
/// time of each file of its `merchants_dir` (thousands of merchant files are not read again
/// every few seconds).
fn config_fingerprint(path: &Path) -> Option<Vec<u8>> {
    use sha2::{Digest, Sha256};
    let text = std::fs::read(path).ok()?;
    let mut hash = Sha256::new();
    hash.update(&text);
    let dir = std::str::from_utf8(&text)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| crate::config::merchants_dir(path, &t));
    if let Some(dir) = dir
        && let Ok(entries) = std::fs::read_dir(dir)
    {
        let mut files: Vec<(std::ffi::OsString, u64, Option<std::time::SystemTime>)> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let meta = e.metadata().ok()?;
                Some((e.file_name(), meta.len(), meta.modified().ok()))
            })
            .collect();
        files.sort();
        for (name, len, modified) in files {
            hash.update(name.as_encoded_bytes());
            hash.update(len.to_le_bytes());
            let nanos = modified
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            hash.update(nanos.to_le_bytes());
        }
    }
    Some(hash.finalize().to_vec())
}

/// Reloads the config file when its content changes, or a file of its `merchants_dir` is
/// added, removed or changed (checked every `every`), or on SIGHUP. The content is taken as
/// "current", and SIGHUP is caught, when this is called, not when the future first runs.
pub fn watch_config(
    gateway: Arc<Gateway>,
    path: std::path::PathBuf,
    every: Duration,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    // Listening for SIGHUP from now on, before anything else (not from the future's first
    // poll): a SIGHUP before that would end the process.
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = config_fingerprint(&path);
    async move {
        loop {
            #[cfg(unix)]
            let signalled = match hangup.as_mut() {
                Some(signal) => tokio::select! {
                    _ = signal.recv() => true,
                    _ = tokio::time::sleep(every) => false,
                },
                None => {
                    tokio::time::sleep(every).await;
                    false
                }
            };
            #[cfg(not(unix))]
            let signalled = {
                tokio::time::sleep(every).await;
                false
            };
            let now = config_fingerprint(&path);
            if signalled || now != seen {
                seen = now;
                // Errors are logged and counted by `reload`; the old config keeps serving.
                if reload(&gateway, &path).is_ok()
                    && let Err(error) = gateway.sync_authorisations().await
                {
                    tracing::warn!(%error, "authorisations not loaded after the reload");
                }
            }
        }
    }
}
