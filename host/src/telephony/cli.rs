//! `leansync call simulate`: places a simulated call on a running host.

use std::process::ExitCode;

use super::sim::SimulatedCall;

/// Sends `call` to the host at `host` with operator `token`.
pub async fn simulate(
    host: &str,
    token: Option<&str>,
    call: SimulatedCall,
) -> anyhow::Result<ExitCode> {
    let url = format!("{}/api/v1/sim/calls", host.trim_end_matches('/'));
    let mut req = reqwest::Client::new().post(&url).json(&call);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => {
            eprintln!(
                "error: no LeanSync host answers at {host} ({e}); start one with ./scripts/run.sh or pass --host"
            );
            return Ok(ExitCode::FAILURE);
        }
    };
    let status = resp.status();
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    if !status.is_success() {
        let msg = body["error"]["message"]
            .as_str()
            .unwrap_or("unexpected answer");
        eprintln!("error: {status}: {msg}");
        return Ok(ExitCode::FAILURE);
    }
    let id = body["call_id"].as_str().unwrap_or("?");
    let who = call.from.as_deref().unwrap_or("anonymous");
    if call.missed {
        println!(
            "call {id}: {who} → {} rings {} s, then missed",
            call.to, call.answer_after
        );
    } else {
        println!(
            "call {id}: {who} → {} rings {} s, answered, hangs up after {} s",
            call.to, call.answer_after, call.hangup_after
        );
    }
    Ok(ExitCode::SUCCESS)
}
