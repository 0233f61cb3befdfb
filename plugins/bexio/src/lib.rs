//! `bexio`: resolves callers to bexio contacts and logs every answered or
//! missed call as a note on the contact (API 2.0, personal access token).

use crm::{Api, App, Call, Match, Options};
use leansync_plugin_api::{ConfigIssue, ConnectorError, export};
use serde::Deserialize;
use serde_json::{Value, json};

/// What an admin fixes when bexio rejects the token.
const CREDENTIALS: &str = "set `access_token` to a bexio personal access token (developer.bexio.com > Personal Access Tokens) of a user allowed to read contacts and write notes";

/// The phone fields a contact search looks at.
const PHONE_FIELDS: [&str; 2] = ["phone_fixed", "phone_mobile"];

/// `contact_type_id` of a company.
const COMPANY: u64 = 1;

#[derive(Deserialize)]
struct Config {
    #[serde(default = "default_base_url")]
    base_url: String,
    user_id: u64,
    #[serde(flatten)]
    options: Options,
}

fn default_base_url() -> String {
    "https://api.bexio.com".into()
}

struct Bexio {
    api: Api,
    user_id: u64,
}

fn contact(c: &Value) -> Option<Match> {
    let id = crm::api::id_of(&c["id"])?;
    let company = c["contact_type_id"].as_u64() == Some(COMPANY);
    let (last, first) = (crm::api::text(c, "name_1"), crm::api::text(c, "name_2"));
    // Companies keep their name in name_1; persons their last name in
    // name_1 and first name in name_2.
    let name = if company {
        last.clone()
    } else {
        match (&first, &last) {
            (Some(f), Some(l)) => Some(format!("{f} {l}")),
            _ => first.clone().or(last.clone()),
        }
    };
    Some(Match {
        name: name.unwrap_or_else(|| format!("contact {id}")),
        organisation: if company { last } else { None },
        deep_link: Some(format!(
            "https://office.bexio.com/index.php/kontakt/show/id/{id}"
        )),
        phones: ["phone_fixed", "phone_fixed_second", "phone_mobile"]
            .iter()
            .filter_map(|k| crm::api::text(c, k))
            .collect(),
        id,
    })
}

impl Bexio {
    /// The company a person belongs to, through bexio's contact relations.
    fn company_of(&self, person: &str) -> Result<Option<String>, ConnectorError> {
        let criteria = json!([{ "field": "contact_sub_id", "value": person, "criteria": "=" }]);
        let relations = self.api.post("/2.0/contact_relation/search", &criteria)?;
        let Some(company) = relations
            .as_array()
            .and_then(|r| r.first())
            .and_then(|r| crm::api::id_of(&r["contact_id"]))
        else {
            return Ok(None);
        };
        let company = self.api.get(&format!("/2.0/contact/{company}"))?;
        Ok(crm::api::text(&company, "name_1"))
    }
}

impl App for Bexio {
    const SOURCE: &'static str = "bexio";

    fn connect() -> Result<(Self, Options), ConnectorError> {
        let cfg: Config = leansync_plugin_api::config()?;
        let token = crm::secret("access_token", CREDENTIALS)?;
        let api = Api::new("bexio", &cfg.base_url, CREDENTIALS).bearer(&token);
        Ok((
            Bexio {
                api,
                user_id: cfg.user_id,
            },
            cfg.options,
        ))
    }

    fn check_config(config: &Value) -> Vec<ConfigIssue> {
        if config["user_id"].as_u64().is_some_and(|u| u > 0) {
            return Vec::new();
        }
        vec![ConfigIssue {
            field: "/user_id".into(),
            message: "enter the id of the bexio user the call notes are written for (Settings > Users; the account owner is usually 1)".into(),
        }]
    }

    fn search(&self, _number: &str, variants: &[String]) -> Result<Vec<Match>, ConnectorError> {
        // Criteria of one search are ANDed, so one search per phone field.
        let mut found = Vec::new();
        for field in PHONE_FIELDS {
            let criteria = json!([{ "field": field, "value": variants, "criteria": "in" }]);
            let list = self.api.post("/2.0/contact/search?limit=10", &criteria)?;
            for c in list.as_array().into_iter().flatten() {
                if let Some(mut m) = contact(c) {
                    if m.organisation.is_none() {
                        m.organisation = self.company_of(&m.id)?;
                    }
                    found.push(m);
                }
            }
        }
        Ok(found)
    }

    fn create_contact(&self, number: &str) -> Result<Match, ConnectorError> {
        let field = if number.starts_with("+417") {
            "phone_mobile"
        } else {
            "phone_fixed"
        };
        let mut body = json!({
            "contact_type_id": 2,
            "name_1": number,
            "user_id": self.user_id,
            "owner_id": self.user_id,
        });
        body[field] = json!(number);
        self.api.create("/2.0/contact", &body, contact)
    }

    fn log_call(
        &self,
        call: &Call,
        contact: Option<&Match>,
        _key: &str,
    ) -> Result<(), ConnectorError> {
        let mut body = json!({
            "user_id": self.user_id,
            // bexio shows times as entered, in the company's (Swiss) time.
            "event_start": crm::time::sql_zurich(call.started_at_ms),
            "subject": call.title(contact),
            "info": call.summary(),
        });
        if let Some(c) = contact {
            body["contact_id"] = json!(c.id.parse::<u64>().unwrap_or_default());
        }
        self.api.post("/2.0/note", &body)?;
        Ok(())
    }
}

export!(crm::Crm<Bexio>);
