//! `zendesk`: resolves callers to Zendesk users, opens the caller's profile
//! for an agent while the phone rings (Talk agent display), and records
//! every answered or missed call as a ticket requested by the caller
//! (Support API v2, API token).

use crm::{Api, App, Call, Match, Options};
use leansync_plugin_api::{ConfigIssue, ConnectorError, export};
use serde::Deserialize;
use serde_json::{Value, json};

/// What an admin fixes when Zendesk rejects the credentials.
const CREDENTIALS: &str = "set `email` to the sign-in email of a Zendesk agent and `api_token` to an API token of that account (Admin Center > Apps and integrations > Zendesk API, with token access enabled)";

#[derive(Deserialize)]
struct Config {
    base_url: String,
    email: String,
    #[serde(default)]
    display_agent_id: Option<u64>,
    #[serde(flatten)]
    options: Options,
}

struct Zendesk {
    api: Api,
    display_agent_id: Option<u64>,
}

impl Zendesk {
    fn user(&self, u: &Value, organisation: Option<String>) -> Option<Match> {
        let id = crm::api::id_of(&u["id"])?;
        Some(Match {
            name: crm::api::text(u, "name").unwrap_or_else(|| format!("user {id}")),
            organisation,
            deep_link: Some(format!("{}/agent/users/{id}", self.api.base)),
            phones: crm::api::text(u, "phone").into_iter().collect(),
            id,
        })
    }

    fn organisation(&self, id: &Value) -> Result<Option<String>, ConnectorError> {
        let Some(id) = crm::api::id_of(id) else {
            return Ok(None);
        };
        let org = self.api.get(&format!("/api/v2/organizations/{id}.json"))?;
        Ok(crm::api::text(&org["organization"], "name"))
    }
}

impl App for Zendesk {
    const SOURCE: &'static str = "zendesk";
    const SHOWS_RINGING: bool = true;

    fn connect() -> Result<(Self, Options), ConnectorError> {
        let cfg: Config = leansync_plugin_api::config()?;
        let token = crm::secret("api_token", CREDENTIALS)?;
        // Zendesk's API token auth: user `{email}/token`, password the token.
        let api = Api::new("Zendesk", &cfg.base_url, CREDENTIALS)
            .basic(&format!("{}/token", cfg.email), &token);
        Ok((
            Zendesk {
                api,
                display_agent_id: cfg.display_agent_id,
            },
            cfg.options,
        ))
    }

    fn check_config(config: &Value) -> Vec<ConfigIssue> {
        let email = config["email"].as_str().unwrap_or_default();
        if email.contains('@') && !email.contains('/') {
            return Vec::new();
        }
        vec![ConfigIssue {
            field: "/email".into(),
            message: format!(
                "'{email}' is not an email address; enter the sign-in email of the agent whose API token you use"
            ),
        }]
    }

    fn search(&self, _number: &str, variants: &[String]) -> Result<Vec<Match>, ConnectorError> {
        // The user search matches partial phone numbers: the fewest terms
        // that cover every usual spelling, one request each.
        let mut out = Vec::new();
        for term in crm::substring_terms(variants) {
            let query = crm::api::encode(&term);
            let found = self
                .api
                .get(&format!("/api/v2/users/search.json?query={query}"))?;
            for u in found["users"].as_array().into_iter().flatten() {
                let organisation = self.organisation(&u["organization_id"])?;
                out.extend(self.user(u, organisation));
            }
        }
        Ok(out)
    }

    fn create_contact(&self, number: &str) -> Result<Match, ConnectorError> {
        let body = json!({ "user": { "name": number, "phone": number, "role": "end-user" } });
        self.api
            .create("/api/v2/users.json", &body, |c| self.user(&c["user"], None))
    }

    fn log_call(
        &self,
        call: &Call,
        contact: Option<&Match>,
        key: &str,
    ) -> Result<(), ConnectorError> {
        // Answered calls are a solved record; missed ones stay open so
        // someone calls back.
        let (status, tag) = if call.answered {
            ("solved", "answered_call")
        } else {
            ("new", "missed_call")
        };
        let mut ticket = json!({
            "subject": call.title(contact),
            "comment": { "body": call.summary(), "public": false },
            "status": status,
            "tags": ["leansync", "phone_call", tag],
            "via": { "channel": "voice" },
        });
        if let Some(c) = contact {
            ticket["requester_id"] = json!(c.id.parse::<u64>().unwrap_or_default());
        }
        // Zendesk answers a repeated key with the ticket it already made.
        let req = self
            .api
            .request("POST", "/api/v2/tickets.json")
            .json(&json!({ "ticket": ticket }))
            .header("idempotency-key", key);
        self.api.send(req)?;
        Ok(())
    }

    fn show(&self, contact: &Match) -> Result<(), ConnectorError> {
        let Some(agent) = self.display_agent_id else {
            return Ok(());
        };
        let path = format!(
            "/api/v2/channels/voice/agents/{agent}/users/{}/display.json",
            contact.id
        );
        self.api.post(&path, &json!({}))?;
        Ok(())
    }
}

export!(crm::Crm<Zendesk>);
