//! `leansync`: the LeanSync Voice host and its tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use leansync_host::config::Config;

/// mimalloc instead of the system allocator: the call path allocates many
/// small short-lived objects on every worker thread (requests, events,
/// plugin payloads), where glibc's per-arena locking and consolidation
/// showed up in profiles under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Plugin tooling: check, list; for authors: new, build, event, call, test.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Administration: create the first operator.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Calls on the simulated PBX.
    #[command(subcommand)]
    Call(CallCmd),
    /// Reports: usage (Mengenreport) and billing.
    #[command(subcommand)]
    Report(ReportCmd),
}

#[derive(Subcommand)]
enum AdminCmd {
    /// Create the first operator account and print its API token (once).
    Bootstrap {
        /// E-mail of the operator (personal accounts are recommended).
        #[arg(long)]
        email: String,
        /// Portal password (at least 10 characters); can be set later.
        #[arg(long, env = "LEANSYNC_BOOTSTRAP_PASSWORD")]
        password: Option<String>,
    },
    /// Issue a new API token for an account, on the host's database (for a
    /// lost or expired token); the old token stops working at once.
    Token {
        /// E-mail of the account.
        #[arg(long)]
        email: String,
    },
}

#[derive(Subcommand)]
enum CallCmd {
    /// Ring a monitored number on the simulated PBX of a running host.
    Simulate {
        /// Called number (a licensed number), e.g. "044 123 45 67".
        #[arg(long)]
        to: String,
        /// Caller; omit for an anonymous call.
        #[arg(long)]
        from: Option<String>,
        /// Seconds of ringing before it is answered.
        #[arg(long, default_value_t = 2.0)]
        answer_after: f64,
        /// Seconds of talk before hang-up.
        #[arg(long, default_value_t = 5.0, conflicts_with = "missed")]
        hangup_after: f64,
        /// Nobody answers: the call ends as missed.
        #[arg(long)]
        missed: bool,
        /// The device or extension that picks up, e.g. 201 (shown to 1.1.0 connectors).
        #[arg(long, conflicts_with = "missed")]
        answered_by: Option<String>,
        /// Base URL of the running host.
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "LEANSYNC_URL")]
        host: String,
        /// Operator API token.
        #[arg(long, env = "LEANSYNC_TOKEN")]
        token: Option<String>,
    },
}

#[derive(Subcommand)]
enum ReportCmd {
    /// Usage report of a customer, at this moment.
    Usage {
        /// Customer id.
        #[arg(long)]
        customer: String,
        /// Output format.
        #[arg(long, default_value = "json", value_parser = ["json", "csv"])]
        format: String,
    },
    /// Monthly billing statement of a customer.
    Billing {
        /// Customer id.
        #[arg(long)]
        customer: String,
        /// Month, YYYY-MM.
        #[arg(long)]
        month: String,
        /// Output format.
        #[arg(long, default_value = "json", value_parser = ["json", "csv"])]
        format: String,
    },
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
    /// Write a new connector project that builds and passes its own tests.
    New {
        /// Connector name (a-z, 0-9, -), e.g. acme-crm.
        name: String,
        /// Language of the project.
        #[arg(long, default_value = "rust", value_parser = ["rust", "python", "js"])]
        lang: String,
        /// Folder to create (default ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A local leansync-plugin-api folder to build against offline
        /// (default: the checkout this binary was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// Build a connector folder, place its component, and check it.
    Build {
        /// Connector folder (default .).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Print a call event as JSON (input for `plugin call --event`).
    Event {
        /// ringing, answered, ended or missed.
        state: String,
        /// Calling number (E.164); omit for a withheld number.
        #[arg(long)]
        from: Option<String>,
        /// Called number (E.164).
        #[arg(long)]
        to: String,
        /// inbound, outbound or internal.
        #[arg(long, default_value = "inbound")]
        direction: String,
        /// Talk time in seconds (for ended).
        #[arg(long)]
        duration: Option<u32>,
        /// Who picked up, e.g. 201 (connector API 1.1.0).
        #[arg(long)]
        answered_by: Option<String>,
    },
    /// Run one export of a connector alone, in the real sandbox, with no
    /// database, PBX or licensing; prints the result, its log lines and
    /// every outbound request.
    Call {
        /// Connector folder.
        dir: PathBuf,
        /// on-call-event, lookup-contact, validate-config or handle-http.
        export: String,
        /// Call event JSON file, or - for stdin (for on-call-event).
        #[arg(long)]
        event: Option<String>,
        /// Number to look up (for lookup-contact).
        #[arg(long)]
        number: Option<String>,
        /// Webhook request JSON {method, path, query, headers, body} (for handle-http).
        #[arg(long)]
        request: Option<PathBuf>,
        /// The installation's config, a JSON file.
        #[arg(long)]
        settings: Option<PathBuf>,
        /// A secret config field, NAME=VALUE (repeatable).
        #[arg(long = "secret")]
        secrets: Vec<String>,
        /// Grant an outbound host, as an admin would (repeatable).
        #[arg(long = "grant")]
        grants: Vec<String>,
        /// Let this run reach a non-public range, e.g. 127.0.0.1/32 (repeatable).
        #[arg(long = "allow-network")]
        allow_networks: Vec<String>,
        /// Key-value state, a JSON object file: read before, written after.
        #[arg(long)]
        kv: Option<PathBuf>,
        /// Print the outcome as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild a connector on every change and load it into a running
    /// host from its folder (the host needs plugins.dev_installs = true);
    /// prints the plugin's log lines as the host streams them.
    Watch {
        /// Connector folder (default .).
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Base URL of the running host.
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "LEANSYNC_URL")]
        host: String,
        /// Operator API token.
        #[arg(long, env = "LEANSYNC_TOKEN")]
        token: Option<String>,
    },
    /// Run the declarative test cases in DIR/tests against a fake app.
    Test {
        /// Connector folder (default .).
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The author commands print the guest's log and every request
    // themselves; the host's own log would repeat them on stderr.
    let quiet = matches!(
        &cli.command,
        Command::Plugin(
            PluginCmd::New { .. }
                | PluginCmd::Build { .. }
                | PluginCmd::Event { .. }
                | PluginCmd::Call { .. }
                | PluginCmd::Test { .. }
                | PluginCmd::Watch { .. }
        )
    );
    init_tracing(if quiet { "off" } else { "info" });
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
        Command::Admin(AdminCmd::Bootstrap { email, password }) => {
            leansync_host::licensing::cli::bootstrap(&config, &email, password.as_deref()).await
        }
        Command::Admin(AdminCmd::Token { email }) => {
            leansync_host::licensing::cli::token(&config, &email).await
        }
        Command::Call(CallCmd::Simulate {
            to,
            from,
            answer_after,
            hangup_after,
            missed,
            answered_by,
            host,
            token,
        }) => {
            let call = leansync_host::telephony::sim::SimulatedCall {
                to,
                from,
                answer_after,
                hangup_after,
                missed,
                answered_by,
            };
            leansync_host::telephony::cli::simulate(&host, token.as_deref(), call).await
        }
        Command::Report(ReportCmd::Usage { customer, format }) => {
            leansync_host::licensing::cli::usage(&config, &customer, &format).await
        }
        Command::Report(ReportCmd::Billing {
            customer,
            month,
            format,
        }) => leansync_host::licensing::cli::billing(&config, &customer, &month, &format).await,
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
            PluginCmd::New {
                name,
                lang,
                dir,
                sdk,
            } => Action::New {
                name,
                lang,
                dir,
                sdk,
            },
            PluginCmd::Build { dir } => Action::Build {
                dir,
                limits: config.plugins.clone(),
            },
            PluginCmd::Event {
                state,
                from,
                to,
                direction,
                duration,
                answered_by,
            } => Action::Event {
                state,
                from,
                to,
                direction,
                duration,
                answered_by,
            },
            PluginCmd::Call {
                dir,
                export,
                event,
                number,
                request,
                settings,
                secrets,
                grants,
                allow_networks,
                kv,
                json,
            } => Action::Call(Box::new(leansync_host::plugins::cli::CallArgs {
                dir,
                export,
                event,
                number,
                request,
                settings,
                secrets,
                grants,
                allow_networks,
                kv,
                json,
                limits: config.plugins.clone(),
            })),
            PluginCmd::Watch { dir, host, token } => Action::Watch {
                dir,
                host,
                token,
                limits: config.plugins.clone(),
            },
            PluginCmd::Test { dir } => Action::Test {
                dir,
                limits: config.plugins.clone(),
            },
        }
    }
}

fn init_tracing(default: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("LEANSYNC_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
