//! The `memu-proxy` binary: parse flags, load and validate the config, bind, run until a signal.

use std::process::ExitCode;

use clap::Parser;
use memu_proxy::cli::{Cli, LogFormat};
use memu_proxy::Listeners;
use tracing_subscriber::EnvFilter;

/// mimalloc: glibc's per-thread arenas grow and trim with an `mprotect` every few requests here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (settings, source) = match cli.settings() {
        Ok(loaded) => loaded,
        Err(error) => return fail(&error),
    };
    let mut config = match settings.validate() {
        Ok(config) => config,
        Err(error) => return fail(&error),
    };
    if cli.check_config {
        print!("# {source}\n{}", settings.to_toml());
        return ExitCode::SUCCESS;
    }
    let logs = tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        );
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    tracing::info!("{source}");
    memu_proxy::server::limits::fit_open_files(&mut config);
    let runtime = match memu_proxy::runtime() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&error),
    };
    runtime.block_on(async {
        let listeners = match Listeners::bind(&config).await {
            Ok(listeners) => listeners,
            Err(error) => return fail(&format!("cannot bind {}: {error}", config.listen)),
        };
        tracing::info!(
            listen = %listeners.local_addr().unwrap_or(config.listen),
            upstream = %format!("{}://{}{}", config.upstream.scheme, config.upstream.authority, config.upstream.base_path),
            "memu-proxy listening"
        );
        match memu_proxy::run(config, listeners, shutdown_signal()).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(&format!("cannot start the workers: {error}")),
        }
    })
}

fn fail(error: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("memu-proxy: {error}");
    ExitCode::from(2)
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
