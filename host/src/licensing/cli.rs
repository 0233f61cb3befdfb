//! `leansync admin bootstrap` and `leansync report usage|billing`: run on
//! the database directly, as the operator of the machine.

use std::process::ExitCode;

use super::Actor;
use crate::config::Config;
use crate::plugins::PluginRuntime;

async fn open(config: &Config) -> anyhow::Result<super::Licensing> {
    // Reports and bootstrap need no plugins; an empty runtime suffices.
    let plugins = PluginRuntime::new(config.plugins.clone(), &config.cache_dir())?;
    Ok(crate::app::open_licensing(config, plugins).await?.1)
}

fn machine_operator() -> Actor {
    Actor {
        account_id: "cli".into(),
        name: format!(
            "cli:{}",
            std::env::var("USER").unwrap_or_else(|_| "operator".into())
        ),
        customer_id: None,
        impersonal: false,
    }
}

/// Creates the first operator and prints its token.
pub async fn bootstrap(
    config: &Config,
    email: &str,
    password: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let l = open(config).await?;
    if l.has_operator().await? {
        eprintln!(
            "error: an operator already exists; create further accounts with POST /api/v1/accounts as that operator"
        );
        return Ok(ExitCode::FAILURE);
    }
    let actor = machine_operator();
    let (acc, token) = match l.create_account(&actor, None, email, false).await {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    };
    if let Some(p) = password
        && let Err(e) = l.set_password(&actor, &acc.id, p).await
    {
        eprintln!("error: {e}");
        return Ok(ExitCode::FAILURE);
    }
    println!("operator {} created ({})", acc.email, acc.id);
    println!("API token (shown only now): {}", token.expose());
    Ok(ExitCode::SUCCESS)
}

/// Issues and prints a new API token for the account with `email`.
pub async fn token(config: &Config, email: &str) -> anyhow::Result<ExitCode> {
    let l = open(config).await?;
    let Some(id) = l.account_id_by_email(email).await? else {
        eprintln!(
            "error: no account has the e-mail '{email}'; list them with GET /api/v1/accounts, or create the first operator with `leansync admin bootstrap`"
        );
        return Ok(ExitCode::FAILURE);
    };
    match l.rotate_token(&machine_operator(), &id).await {
        Ok((acc, token)) => {
            println!("new API token for {} ({})", acc.email, acc.id);
            println!("API token (shown only now): {}", token.expose());
            if let Some(why) = acc.disabled_reason {
                println!(
                    "note: the account is disabled ({why}); enable it with POST /api/v1/accounts/{}/enable",
                    acc.id
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Prints a customer's usage report.
pub async fn usage(config: &Config, customer: &str, format: &str) -> anyhow::Result<ExitCode> {
    let l = open(config).await?;
    match l.usage(&machine_operator(), customer).await {
        Ok(r) if format == "csv" => print!("{}", r.to_csv()),
        Ok(r) => println!("{}", serde_json::to_string_pretty(&r)?),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a customer's billing statement for a month.
pub async fn billing(
    config: &Config,
    customer: &str,
    month: &str,
    format: &str,
) -> anyhow::Result<ExitCode> {
    let l = open(config).await?;
    match l.billing(&machine_operator(), customer, month).await {
        Ok(s) if format == "csv" => print!("{}", s.to_csv()),
        Ok(s) => println!("{}", serde_json::to_string_pretty(&s)?),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}
