//! `hubspot`: resolves callers to HubSpot contacts and logs every answered
//! or missed call as a call engagement on the contact (CRM API v3, private
//! app token).

use crm::{Api, App, Call, Match, Options};
use leansync_plugin_api::{ConfigIssue, ConnectorError, export};
use serde::Deserialize;
use serde_json::{Value, json};

/// HubSpot's id of the "call to contact" association.
const CALL_TO_CONTACT: u32 = 194;

/// What an admin fixes when HubSpot rejects the token.
const CREDENTIALS: &str = "set `access_token` to the access token of a HubSpot private app (Settings > Integrations > Private Apps) with the scopes crm.objects.contacts.read and crm.objects.contacts.write";

#[derive(Deserialize)]
struct Config {
    #[serde(default = "default_base_url")]
    base_url: String,
    portal_id: String,
    #[serde(default = "default_app_url")]
    app_url: String,
    #[serde(flatten)]
    options: Options,
}

fn default_base_url() -> String {
    "https://api.hubapi.com".into()
}

fn default_app_url() -> String {
    "https://app.hubspot.com".into()
}

struct HubSpot {
    api: Api,
    /// `{app_url}/contacts/{portal_id}/record/0-1/`: a contact's page.
    record_url: String,
}

impl HubSpot {
    fn contact(&self, record: &Value) -> Option<Match> {
        let id = crm::api::id_of(&record["id"])?;
        let p = &record["properties"];
        let phones: Vec<String> = ["phone", "mobilephone"]
            .iter()
            .filter_map(|k| crm::api::text(p, k))
            .collect();
        let name = [
            crm::api::text(p, "firstname"),
            crm::api::text(p, "lastname"),
        ]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
        Some(Match {
            name: if name.is_empty() {
                phones
                    .first()
                    .cloned()
                    .unwrap_or_else(|| format!("contact {id}"))
            } else {
                name
            },
            organisation: crm::api::text(p, "company"),
            deep_link: Some(format!("{}{id}", self.record_url)),
            id,
            phones,
        })
    }
}

impl App for HubSpot {
    const SOURCE: &'static str = "hubspot";

    fn connect() -> Result<(Self, Options), ConnectorError> {
        let cfg: Config = leansync_plugin_api::config()?;
        let token = crm::secret("access_token", CREDENTIALS)?;
        let api = Api::new("HubSpot", &cfg.base_url, CREDENTIALS).bearer(&token);
        let record_url = format!(
            "{}/contacts/{}/record/0-1/",
            cfg.app_url.trim_end_matches('/'),
            cfg.portal_id
        );
        Ok((HubSpot { api, record_url }, cfg.options))
    }

    fn check_config(config: &Value) -> Vec<ConfigIssue> {
        let portal = config["portal_id"].as_str().unwrap_or_default();
        if !portal.is_empty() && portal.chars().all(|c| c.is_ascii_digit()) {
            return Vec::new();
        }
        vec![ConfigIssue {
            field: "/portal_id".into(),
            message: format!(
                "'{portal}' is not a HubSpot account id; copy the digits shown as \"Account ID\" in HubSpot's account menu"
            ),
        }]
    }

    fn search(&self, _number: &str, variants: &[String]) -> Result<Vec<Match>, ConnectorError> {
        // Filter groups are ORed: the number in either phone field, in any
        // of its usual spellings.
        let groups: Vec<Value> = ["phone", "mobilephone"]
            .iter()
            .map(|field| {
                json!({ "filters": [{
                    "propertyName": field,
                    "operator": "IN",
                    "values": variants,
                }]})
            })
            .collect();
        let body = json!({
            "filterGroups": groups,
            "properties": ["firstname", "lastname", "company", "phone", "mobilephone"],
            "sorts": [{ "propertyName": "createdate", "direction": "ASCENDING" }],
            "limit": 10,
        });
        let found = self.api.post("/crm/v3/objects/contacts/search", &body)?;
        Ok(found["results"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| self.contact(r))
            .collect())
    }

    fn create_contact(&self, number: &str) -> Result<Match, ConnectorError> {
        let body = json!({ "properties": { "phone": number } });
        self.api
            .create("/crm/v3/objects/contacts", &body, |c| self.contact(c))
    }

    fn log_call(
        &self,
        call: &Call,
        contact: Option<&Match>,
        _key: &str,
    ) -> Result<(), ConnectorError> {
        let status = if call.answered {
            "COMPLETED"
        } else {
            "NO_ANSWER"
        };
        let direction = if call.inbound() {
            "INBOUND"
        } else {
            "OUTBOUND"
        };
        let associations: Vec<Value> = contact
            .iter()
            .map(|c| {
                json!({
                    "to": { "id": c.id },
                    "types": [{
                        "associationCategory": "HUBSPOT_DEFINED",
                        "associationTypeId": CALL_TO_CONTACT,
                    }],
                })
            })
            .collect();
        let body = json!({
            "properties": {
                "hs_timestamp": leansync_plugin_api::time::iso8601_utc(call.started_at_ms),
                "hs_call_title": call.title(contact),
                "hs_call_body": call.summary(),
                "hs_call_status": status,
                "hs_call_direction": direction,
                "hs_call_duration": call.duration_ms().to_string(),
                "hs_call_from_number": call.from.clone().unwrap_or_default(),
                "hs_call_to_number": call.to,
            },
            "associations": associations,
        });
        self.api.post("/crm/v3/objects/calls", &body)?;
        Ok(())
    }
}

export!(crm::Crm<HubSpot>);
