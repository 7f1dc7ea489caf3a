//! # ferrite-server
//!
//! The `ferrite` server: a TCP listener speaking RESP2 and RESP3 over the
//! database of `ferrite-db`. This crate owns only the network layer: the
//! database (keyspace, commands, commit log) is a library below it.
//!
//! Where to start reading:
//! - [`server`]: the listener; [`conn`]: one client's read → parse →
//!   dispatch → reply loop, blocking waits and durability waits.
//! - [`protocol`]: request parsing with Redis's limits and error wording.
//! - [`ferrite_db`]: everything a command does once parsed.

#![forbid(unsafe_code)]

pub mod conn;
#[doc(hidden)]
pub mod fuzzing;
pub mod protocol;
pub mod server;

use ferrite_db::config::Config;
use ferrite_db::{persist, shared};
use std::process::ExitCode;

fn cli() -> clap::Command {
    let mut c = clap::Command::new("ferrite")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Ferrite: a Redis-protocol-compatible stream database")
        .arg(
            clap::Arg::new("config")
                .long("config")
                .value_name("FILE")
                .help("read options from a TOML file (see ferrite.toml.example)"),
        );
    for (name, default, doc) in Config::params() {
        c = c.arg(
            clap::Arg::new(name)
                .long(name)
                .value_name("VALUE")
                .help(format!("{doc} [default: {default}]")),
        );
    }
    c
}

/// Build the configuration: defaults, then `--config FILE`, then flags.
pub fn config_from_args<I, T>(args: I) -> Result<Config, String>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let m = cli()
        .try_get_matches_from(args)
        .map_err(|e| e.to_string())?;
    let mut cfg = Config::default();
    if let Some(path) = m.get_one::<String>("config") {
        cfg.load_toml(path)?;
    }
    for (name, _, _) in Config::params() {
        if let Some(v) = m.get_one::<String>(name) {
            cfg.set_startup(name, v).map_err(|e| e.to_string())?;
        }
    }
    Ok(cfg)
}

/// The tracing filter for a Redis `loglevel`.
fn level_filter(level: &str) -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::new(match level {
        "debug" => "debug",
        "verbose" => "info",
        "warning" => "warn",
        "nothing" => "off",
        _ => "info",
    })
}

/// Set up the process's logger at `level` (`FERRITE_LOG` overrides it at
/// start-up); the returned function changes the level at run time
/// (CONFIG SET loglevel).
fn init_tracing(level: &str) -> Option<shared::LoglevelHook> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let env = tracing_subscriber::EnvFilter::try_from_env("FERRITE_LOG")
        .unwrap_or_else(|_| level_filter(level));
    let (filter, handle) = tracing_subscriber::reload::Layer::new(env);
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init()
        .ok()?;
    Some(Box::new(move |level: &str| {
        let _ = handle.reload(level_filter(level));
    }))
}

/// Entry point of the `ferrite` binary.
pub fn main_cli() -> ExitCode {
    let cfg = match config_from_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let loglevel_hook = init_tracing(&cfg.loglevel);
    // NOTE: the multi-thread scheduler even with one worker: blocking work
    // (start-up recovery, shutdown) goes to `spawn_blocking`.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.io_threads)
        .on_thread_park(persist::before_park)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_with(cfg, loglevel_hook)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Run a server with `cfg` until SIGINT, SIGTERM or SHUTDOWN.
pub async fn run(cfg: Config) -> Result<(), String> {
    run_with(cfg, None).await
}

async fn run_with(cfg: Config, loglevel_hook: Option<shared::LoglevelHook>) -> Result<(), String> {
    std::fs::create_dir_all(&cfg.dir).map_err(|e| format!("cannot create dir {}: {e}", cfg.dir))?;
    let addr = format!("{}:{}", cfg.bind, cfg.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| format!("Could not create server TCP listening socket {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        port = local.port(),
        config = cfg.config_file.as_deref().unwrap_or("(built-in defaults)"),
        dir = %cfg.dir,
        "Ferrite starting"
    );
    let appendonly = cfg.appendonly;
    let repair = cfg.log_repair;
    let shared = shared::Shared::new(cfg);
    if let Some(hook) = loglevel_hook {
        let _ = shared.loglevel_hook.set(hook);
    }
    shared
        .tcp_port
        .store(local.port() as u64, std::sync::atomic::Ordering::Relaxed);
    // Before recovery: replay hands the engine its logged effects.
    ferrite_pipeline::engine::install(&shared);
    if appendonly {
        let s2 = shared.clone();
        // Recovery reads files: a blocking thread, before any client is served.
        let (p, rec) = tokio::task::spawn_blocking(move || persist::Persistence::open(&s2, repair))
            .await
            .map_err(|e| format!("recovery thread failed: {e}"))??;
        let keys: usize = shared.store.lock().dbs.iter().map(|d| d.len()).sum();
        tracing::info!(
            checkpoint_seq = rec.checkpoint_seq,
            records = rec.records,
            commands = rec.commands,
            replay_errors = rec.replay_errors,
            millis = rec.millis as u64,
            keys,
            "DB loaded from the commit log"
        );
        persist::install(&shared, p);
    }
    let runner = ferrite_pipeline::engine::Runner::start(&shared);
    // NOTE: tests and scripts wait for this exact phrase, as they do for Redis.
    tracing::info!("Ready to accept connections tcp on {local}");
    let signals = {
        let shared = shared.clone();
        async move {
            wait_for_signal().await;
            tracing::info!("Received shutdown signal, shutting down");
            shared.request_shutdown();
        }
    };
    let sig = tokio::spawn(signals);
    let cron = tokio::spawn(server::cron(shared.clone()));
    server::serve(listener, shared.clone()).await;
    sig.abort();
    cron.abort();
    // The runner's last epoch commits before the log closes.
    if let Some(r) = runner {
        let _ = tokio::task::spawn_blocking(move || r.stop()).await;
    }
    let s2 = shared.clone();
    let _ = tokio::task::spawn_blocking(move || persist::shutdown(&s2)).await;
    tracing::info!("Ferrite is now ready to exit, bye bye...");
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            (Ok(mut i), Ok(mut t)) => {
                tokio::select! {
                    _ = i.recv() => {}
                    _ = t.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
