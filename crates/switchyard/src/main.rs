//! The `switchyard` binary: wiring only; the product lives in the `gateway` crate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use gateway::Config;
use gateway::server::{Server, build_app, shutdown_signal};

#[derive(Parser)]
#[command(name = "switchyard", version, about = "One endpoint for every model.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the server.
    Serve {
        /// The config file (TOML). Without one, the embedded defaults are served.
        #[arg(long, short, env = "SWITCHYARD_CONFIG")]
        config: Option<PathBuf>,
        /// Listen here instead of `server.address`.
        #[arg(long)]
        address: Option<String>,
    },
    /// Check a config file and exit: 0 if it is valid.
    CheckConfig {
        /// The config file (TOML).
        file: PathBuf,
    },
}

fn load(path: Option<&PathBuf>) -> Result<Config, String> {
    match path {
        Some(p) => Config::load(p).map_err(|e| e.to_string()),
        None => Ok(Config::default()),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => match c.check_auth_exposure() {
                Ok(()) => {
                    println!(
                        "{}: ok ({} providers, {} models)",
                        file.display(),
                        c.providers.len(),
                        c.models.len()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {}: {e}", file.display());
                    ExitCode::FAILURE
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve { config, address } => {
            let mut config = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            if let Some(a) = address {
                config.server.address = toml::Spanned::new(0..0, a);
            }
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let app = build_app(&config)?;
    let server = Server::bind(&config, app.clone()).await?;
    let addr = server.local_addr()?;
    tracing::info!(
        models = app.catalog.len(),
        "switchyard listening on http://{addr}"
    );
    println!("switchyard listening on http://{addr}");
    server.run(shutdown_signal()).await
}
