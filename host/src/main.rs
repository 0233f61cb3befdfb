//! `leansync`: the LeanSync Voice host and its tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use leansync_host::config::Config;

#[derive(Parser)]
#[command(
    name = "leansync",
    version,
    about = "LeanSync Voice: business phone numbers meet business apps"
)]
struct Cli {
    /// TOML config file (keys: see README.md, section Configuration).
    #[arg(long, global = true, env = "LEANSYNC_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the host: HTTP API, portal, telephony, plugins.
    Serve(ServeArgs),
    /// Plugin tooling: check, list.
    #[command(subcommand)]
    Plugin(PluginCmd),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Listen address (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Data directory (default ./data).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Plugins directory (default ./plugins).
    #[arg(long)]
    plugins_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum PluginCmd {
    /// Validate a plugin folder (manifest and component); non-zero exit on any problem.
    Check {
        /// Folder holding plugin.toml and the component.
        path: PathBuf,
    },
    /// List plugins of the running host, or of the plugins directory when no host answers.
    List {
        /// Base URL of a running host.
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "LEANSYNC_URL")]
        host: String,
        /// Plugins directory to scan when no host answers (default from config).
        #[arg(long)]
        plugins_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Serve(args) => {
            if let Some(v) = args.listen {
                config.listen = v;
            }
            if let Some(v) = args.data_dir {
                config.data_dir = v;
            }
            if let Some(v) = args.plugins_dir {
                config.plugins_dir = v;
            }
            leansync_host::app::serve(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin(cmd) => leansync_host::plugins::cli::run(cmd.into_action(&config)).await,
    }
}

impl PluginCmd {
    fn into_action(self, config: &Config) -> leansync_host::plugins::cli::Action {
        use leansync_host::plugins::cli::Action;
        match self {
            PluginCmd::Check { path } => Action::Check {
                path,
                limits: config.plugins.clone(),
            },
            PluginCmd::List { host, plugins_dir } => Action::List {
                host,
                plugins_dir: plugins_dir.unwrap_or_else(|| config.plugins_dir.clone()),
                limits: config.plugins.clone(),
            },
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("LEANSYNC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
