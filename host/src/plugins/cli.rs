//! `leansync plugin check|list` (against a host) and the author commands
//! `new|build|event|call|test` (no host needed, see [`super::dev`]).

use std::path::PathBuf;
use std::process::ExitCode;

use super::runtime::{PluginInfo, PluginRuntime};
use crate::config::PluginLimits;

/// A plugin command with its inputs resolved.
pub enum Action {
    /// Validate one plugin folder.
    Check {
        /// The folder.
        path: PathBuf,
        /// Sandbox limits to load it with.
        limits: PluginLimits,
    },
    /// List plugins.
    List {
        /// Running host to ask first.
        host: String,
        /// Directory to scan if the host does not answer.
        plugins_dir: PathBuf,
        /// Sandbox limits to load with.
        limits: PluginLimits,
    },
    /// Write a new connector project.
    New {
        /// Connector name.
        name: String,
        /// `rust`, `python` or `js`.
        lang: String,
        /// Folder to create (default ./NAME).
        dir: Option<PathBuf>,
        /// Local SDK folder (default: this checkout's plugin-api).
        sdk: Option<PathBuf>,
    },
    /// Build a connector folder and check the result.
    Build {
        /// The folder.
        dir: PathBuf,
        /// Sandbox limits to check it with.
        limits: PluginLimits,
    },
    /// Print a call event as JSON.
    Event {
        /// `ringing`, `answered`, `ended`, `missed`.
        state: String,
        /// Calling number.
        from: Option<String>,
        /// Called number.
        to: String,
        /// `inbound`, `outbound`, `internal`.
        direction: String,
        /// Talk time for `ended`.
        duration: Option<u32>,
        /// Who picked up (answered, ended).
        answered_by: Option<String>,
    },
    /// Run one export of one connector folder alone.
    Call(Box<CallArgs>),
    /// Rebuild on change and load into a running host.
    Watch {
        /// The folder.
        dir: PathBuf,
        /// Base URL of the host.
        host: String,
        /// Operator token.
        token: Option<String>,
        /// Sandbox limits to check builds with.
        limits: PluginLimits,
    },
    /// Run the declarative cases in `DIR/tests`.
    Test {
        /// The folder.
        dir: PathBuf,
        /// Sandbox limits.
        limits: PluginLimits,
    },
}

/// Inputs of `plugin call`.
pub struct CallArgs {
    /// The connector folder.
    pub dir: PathBuf,
    /// `on-call-event`, `lookup-contact`, `validate-config`, `handle-http`.
    pub export: String,
    /// Event JSON file, or `-` for stdin.
    pub event: Option<String>,
    /// Number for `lookup-contact`.
    pub number: Option<String>,
    /// Webhook request JSON file for `handle-http`.
    pub request: Option<PathBuf>,
    /// Installation config JSON file.
    pub settings: Option<PathBuf>,
    /// Secrets `k=v`.
    pub secrets: Vec<String>,
    /// Granted hosts.
    pub grants: Vec<String>,
    /// Non-public ranges the call may reach.
    pub allow_networks: Vec<String>,
    /// Key-value state file (JSON object), read before and written after.
    pub kv: Option<PathBuf>,
    /// Print the outcome as JSON.
    pub json: bool,
    /// Sandbox limits.
    pub limits: PluginLimits,
}

/// Runs a plugin command; the exit code is non-zero on any problem.
pub async fn run(action: Action) -> anyhow::Result<ExitCode> {
    match action {
        a @ (Action::Check { .. } | Action::List { .. }) => run_host(a).await,
        a => match run_dev(a).await {
            Ok(code) => Ok(code),
            Err(msg) => {
                eprintln!("error: {msg}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

async fn run_dev(action: Action) -> Result<ExitCode, String> {
    use super::dev::{self, Harness, Input, Setup, Verdict, build, cases, scaffold};
    match action {
        Action::New {
            name,
            lang,
            dir,
            sdk,
        } => {
            let lang = build::Lang::parse(&lang)?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let sdk = sdk.or_else(scaffold::default_sdk);
            let files = scaffold::new_connector(&name, lang, &dir, sdk.as_deref())?;
            for f in &files {
                println!("  wrote {}", f.display());
            }
            if sdk.is_none() {
                println!(
                    "note: no local SDK found; cargo will fetch leansync-plugin-api from crates.io (pass --sdk PATH/plugin-api to build offline)"
                );
            }
            println!(
                "next: cd {} && leansync plugin build . && leansync plugin test .",
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Action::Build { dir, limits } => {
            build::build(&dir, &limits)?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Watch {
            dir,
            host,
            token,
            limits,
        } => {
            dev::watch::watch(&dir, &host, token.as_deref(), &limits).await?;
            Ok(ExitCode::SUCCESS)
        }
        Action::Event {
            state,
            from,
            to,
            direction,
            duration,
            answered_by,
        } => {
            let state =
                serde_json::from_value(serde_json::Value::String(state.clone())).map_err(|_| {
                    format!("state {state:?}: choose ringing, answered, ended or missed")
                })?;
            let direction = serde_json::from_value(serde_json::Value::String(direction.clone()))
                .map_err(|_| {
                    format!("--direction {direction:?}: choose inbound, outbound or internal")
                })?;
            let mut ev = dev::EventFile::make(state, from.as_deref(), &to, direction, duration)?;
            ev.answered_by = answered_by;
            println!(
                "{}",
                serde_json::to_string_pretty(&ev).map_err(|e| e.to_string())?
            );
            Ok(ExitCode::SUCCESS)
        }
        Action::Test { dir, limits } => {
            let harness = Harness::open(&dir, limits)?;
            let failed = cases::run_all(&dir, &harness).await?;
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Action::Call(args) => {
            let a = *args;
            let read_json =
                |path: &std::path::Path, what: &str| -> Result<serde_json::Value, String> {
                    let text = std::fs::read_to_string(path)
                        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
                    serde_json::from_str(&text)
                        .map_err(|e| format!("{what} {}: not JSON: {e}", path.display()))
                };
            let input = match a.export.as_str() {
                "on-call-event" => {
                    let text = match a.event.as_deref() {
                        None => return Err("on-call-event needs --event FILE (or - for stdin); make one with `leansync plugin event ringing --from +4930123456 --to +4989123456`".into()),
                        Some("-") => {
                            let mut s = String::new();
                            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                                .map_err(|e| format!("--event -: {e}"))?;
                            s
                        }
                        Some(f) => std::fs::read_to_string(f).map_err(|e| format!("--event {f}: {e}"))?,
                    };
                    let ev: dev::EventFile = serde_json::from_str(&text).map_err(|e| {
                        format!(
                            "--event: not a call event ({e}); make one with `leansync plugin event`"
                        )
                    })?;
                    Input::Event(Box::new(ev))
                }
                "lookup-contact" => Input::Lookup(
                    a.number
                        .clone()
                        .ok_or("lookup-contact needs --number +E164")?,
                ),
                "validate-config" => Input::Validate,
                "handle-http" => {
                    let v = match &a.request {
                        Some(p) => read_json(p, "--request")?,
                        None => serde_json::json!({}),
                    };
                    let s = |k: &str, d: &str| {
                        v.get(k).and_then(|x| x.as_str()).unwrap_or(d).to_string()
                    };
                    Input::Http(super::HttpRequest {
                        method: s("method", "GET"),
                        path: s("path", "/"),
                        query: s("query", ""),
                        headers: v
                            .get("headers")
                            .and_then(|h| h.as_object())
                            .map(|h| {
                                h.iter()
                                    .map(|(k, x)| {
                                        (k.clone(), x.as_str().unwrap_or_default().to_string())
                                    })
                                    .collect()
                            })
                            .unwrap_or_default(),
                        body: s("body", "").into_bytes(),
                    })
                }
                other => {
                    return Err(format!(
                        "export {other:?}: choose on-call-event, lookup-contact, validate-config or handle-http"
                    ));
                }
            };
            let config = match &a.settings {
                Some(p) => read_json(p, "--settings")?,
                None => serde_json::json!({}),
            };
            let mut secrets = std::collections::HashMap::new();
            for kv in &a.secrets {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("--secret {kv:?}: write NAME=VALUE"))?;
                secrets.insert(k.to_owned(), v.to_owned());
            }
            let mut allow_networks = Vec::new();
            for n in &a.allow_networks {
                allow_networks.push(n.parse().map_err(|e| {
                    format!("--allow-network {n:?}: {e}; write a CIDR range like 127.0.0.1/32")
                })?);
            }
            let kv_in: std::collections::BTreeMap<String, String> = match &a.kv {
                Some(p) if p.exists() => {
                    serde_json::from_value(read_json(p, "--kv")?).map_err(|e| {
                        format!("--kv {}: expected an object of strings: {e}", p.display())
                    })?
                }
                _ => Default::default(),
            };
            let setup = Setup {
                config,
                secrets,
                grants: a.grants.clone(),
                allow_networks,
                kv: kv_in,
                fake: None,
            };
            let harness = Harness::open(&a.dir, a.limits)?;
            let outcome = harness.run(&setup, input).await?;
            if let Some(p) = &a.kv {
                let text = serde_json::to_string_pretty(&outcome.kv).map_err(|e| e.to_string())?;
                std::fs::write(p, text).map_err(|e| format!("--kv {}: {e}", p.display()))?;
            }
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&outcome).map_err(|e| e.to_string())?
                );
            } else {
                dev::print_outcome(&outcome);
                for r in &outcome.requests {
                    if r.error
                        .as_deref()
                        .is_some_and(|e| e.contains("has not granted"))
                    {
                        println!(
                            "hint: grant a host for this run with --grant HOST (the manifest must list it under outbound-hosts)"
                        );
                        break;
                    }
                }
            }
            Ok(if matches!(outcome.verdict, Verdict::Ok { .. }) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Action::Check { .. } | Action::List { .. } => unreachable!("handled by run_host"),
    }
}

async fn run_host(action: Action) -> anyhow::Result<ExitCode> {
    match action {
        Action::Check { path, limits } => {
            let rt = PluginRuntime::new(limits, &super::dev::cache_dir())?;
            let result = rt.load(&path);
            match result {
                Ok(p) => {
                    println!(
                        "ok: {} {} (connector API {}), component {} ({})",
                        p.manifest.name,
                        p.manifest.version,
                        p.api_version,
                        p.manifest.component.display(),
                        &p.digest[..12]
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(msg) => {
                    eprintln!("error: {msg}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Action::List {
            host,
            plugins_dir,
            limits,
        } => {
            let url = format!("{}/api/v1/plugins", host.trim_end_matches('/'));
            let from_host = async {
                let resp = reqwest::Client::new()
                    .get(&url)
                    .timeout(std::time::Duration::from_secs(2))
                    .send()
                    .await
                    .ok()?;
                resp.json::<Vec<serde_json::Value>>().await.ok()
            }
            .await;
            let rows: Vec<[String; 5]> = match from_host {
                Some(list) => list.iter().map(row_from_json).collect(),
                None => {
                    eprintln!(
                        "no host answers at {host}; showing plugins found in {}",
                        plugins_dir.display()
                    );
                    let rt = PluginRuntime::new(limits, &super::dev::cache_dir())?;
                    rt.reload_dir(&plugins_dir);
                    rt.list().iter().map(row).collect()
                }
            };
            print_table(&rows);
            let failed = rows.iter().any(|r| r[3] != "active");
            Ok(if failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        _ => unreachable!("author commands run in run_dev"),
    }
}

fn row(p: &PluginInfo) -> [String; 5] {
    let v = serde_json::to_value(p).unwrap_or_default();
    row_from_json(&v)
}

fn row_from_json(v: &serde_json::Value) -> [String; 5] {
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string();
    [
        s("name"),
        s("version"),
        s("api_version"),
        s("status"),
        s("last_error"),
    ]
}

fn print_table(rows: &[[String; 5]]) {
    let header = ["NAME", "VERSION", "API", "STATUS", "LAST ERROR"].map(String::from);
    let mut widths = [0usize; 4];
    for r in std::iter::once(&header).chain(rows) {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.len());
        }
    }
    for r in std::iter::once(&header).chain(rows) {
        println!(
            "{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    }
}
