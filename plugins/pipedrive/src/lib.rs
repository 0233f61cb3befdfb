//! `pipedrive`: resolves callers to Pipedrive persons and logs every
//! answered or missed call as a call log on the person (API v1, personal
//! API token).

use crm::{Api, App, Call, Match, Options};
use leansync_plugin_api::{ConfigIssue, ConnectorError, export};
use serde::Deserialize;
use serde_json::{Value, json};

/// What an admin fixes when Pipedrive rejects the token.
const CREDENTIALS: &str =
    "set `api_token` to the personal API token shown in Pipedrive under Personal preferences > API";

#[derive(Deserialize)]
struct Config {
    #[serde(default = "default_base_url")]
    base_url: String,
    company_domain: String,
    #[serde(default)]
    user_id: Option<u64>,
    #[serde(flatten)]
    options: Options,
}

fn default_base_url() -> String {
    "https://api.pipedrive.com".into()
}

struct Pipedrive {
    api: Api,
    /// `https://{company}.pipedrive.com/person/`: a person's page.
    person_url: String,
    user_id: Option<u64>,
}

impl Pipedrive {
    fn person(&self, item: &Value) -> Option<Match> {
        let id = crm::api::id_of(&item["id"])?;
        // Search items list phones as strings, person objects as {value}.
        let phones = match &item["phones"] {
            Value::Array(list) => list
                .iter()
                .filter_map(|p| p.as_str())
                .map(String::from)
                .collect(),
            _ => item["phone"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| crm::api::text(p, "value"))
                .collect(),
        };
        let organisation = crm::api::text(&item["organization"], "name")
            .or_else(|| crm::api::text(item, "org_name"));
        Some(Match {
            name: crm::api::text(item, "name").unwrap_or_else(|| format!("person {id}")),
            organisation,
            deep_link: Some(format!("{}{id}", self.person_url)),
            id,
            phones,
        })
    }
}

impl App for Pipedrive {
    const SOURCE: &'static str = "pipedrive";

    fn connect() -> Result<(Self, Options), ConnectorError> {
        let cfg: Config = leansync_plugin_api::config()?;
        let token = crm::secret("api_token", CREDENTIALS)?;
        // The header keeps the token out of URLs (and so out of logs).
        let api =
            Api::new("Pipedrive", &cfg.base_url, CREDENTIALS).with_header("x-api-token", &token);
        let person_url = format!("https://{}.pipedrive.com/person/", cfg.company_domain);
        Ok((
            Pipedrive {
                api,
                person_url,
                user_id: cfg.user_id,
            },
            cfg.options,
        ))
    }

    fn check_config(config: &Value) -> Vec<ConfigIssue> {
        let domain = config["company_domain"].as_str().unwrap_or_default();
        let ok = !domain.is_empty()
            && domain
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if ok {
            return Vec::new();
        }
        vec![ConfigIssue {
            field: "/company_domain".into(),
            message: format!(
                "'{domain}' is not a Pipedrive company domain; enter the part before .pipedrive.com in your browser's address bar, e.g. acme"
            ),
        }]
    }

    fn search(&self, _number: &str, variants: &[String]) -> Result<Vec<Match>, ConnectorError> {
        // The search matches inside stored numbers: the fewest terms that
        // cover every usual spelling, one request each.
        let mut persons = Vec::new();
        for term in crm::substring_terms(variants) {
            let path = format!(
                "/v1/persons/search?term={}&fields=phone&limit=10",
                crm::api::encode(&term)
            );
            let found = self.api.get(&path)?;
            persons.extend(
                found["data"]["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| self.person(&i["item"])),
            );
        }
        Ok(persons)
    }

    fn create_contact(&self, number: &str) -> Result<Match, ConnectorError> {
        let body = json!({
            "name": number,
            "phone": [{ "value": number, "primary": true, "label": "work" }],
        });
        self.api
            .create("/v1/persons", &body, |c| self.person(&c["data"]))
    }

    fn log_call(
        &self,
        call: &Call,
        contact: Option<&Match>,
        _key: &str,
    ) -> Result<(), ConnectorError> {
        let mut body = json!({
            "subject": call.title(contact),
            "note": call.summary(),
            "outcome": if call.answered { "connected" } else { "no_answer" },
            "duration": call.duration_secs.to_string(),
            "from_phone_number": call.from.clone().unwrap_or_default(),
            "to_phone_number": call.to,
            "start_time": crm::time::sql_utc(call.started_at_ms),
            "end_time": crm::time::sql_utc(call.ended_at_ms),
        });
        if let Some(c) = contact {
            body["person_id"] = json!(c.id.parse::<u64>().unwrap_or_default());
        }
        if let Some(user) = self.user_id {
            body["user_id"] = json!(user);
        }
        self.api.post("/v1/callLogs", &body)?;
        Ok(())
    }
}

export!(crm::Crm<Pipedrive>);
