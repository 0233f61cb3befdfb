//! HubSpot CRM API v3 as the `hubspot` connector uses it: contact search
//! with filter groups, contact and call creation, private app tokens.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Fake, Journaled, Saas, Vendor, credentials, field, reply};

/// The private app token the fake accepts.
pub const TOKEN: &str = "pat-eu1-11111111-2222-3333-4444-555555555555";

/// HubSpot's "call to contact" association type.
const CALL_TO_CONTACT: u64 = 194;

/// The fake HubSpot.
#[derive(Default)]
pub struct HubSpot;

impl Vendor for HubSpot {
    fn authorized(&self, headers: &HeaderMap, _query: &str) -> bool {
        credentials(headers, "Bearer") == Some(TOKEN)
    }

    fn unauthorized(&self) -> Response {
        reply(
            401,
            &[],
            json!({
                "status": "error",
                "message": "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                "correlationId": "2c4e3fd2-1a3b-4a8e-9f0e-0c4bd3d1f8a1",
                "category": "INVALID_AUTHENTICATION",
            }),
        )
    }

    fn throttled(&self, secs: u64) -> Response {
        // HubSpot names the window, not a Retry-After.
        reply(
            429,
            &[
                (
                    "x-hubspot-ratelimit-interval-milliseconds",
                    (secs * 1000).to_string(),
                ),
                ("x-hubspot-ratelimit-max", "100".into()),
                ("x-hubspot-ratelimit-remaining", "0".into()),
                ("x-hubspot-ratelimit-daily", "250000".into()),
                ("x-hubspot-ratelimit-daily-remaining", "249000".into()),
            ],
            json!({
                "status": "error",
                "message": "You have reached your ten_secondly_rolling limit.",
                "errorType": "RATE_LIMIT",
                "correlationId": "8b0c1a3e-4b2d-4f6a-9c1e-7d2f3a4b5c6d",
                "policyName": "TEN_SECONDLY_ROLLING",
                "groupName": "publicapi",
            }),
        )
    }

    fn routes(&self) -> Router<Fake> {
        Router::new()
            .route("/crm/v3/objects/contacts/search", post(search))
            .route("/crm/v3/objects/contacts", post(create_contact))
            .route("/crm/v3/objects/calls", post(create_call))
    }
}

fn invalid(message: &str) -> Response {
    reply(
        400,
        &[],
        json!({
            "status": "error",
            "message": message,
            "correlationId": "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0",
            "category": "VALIDATION_ERROR",
        }),
    )
}

/// `POST /crm/v3/objects/contacts/search`: filters in a group are ANDed,
/// groups ORed; `EQ`, `IN` and `CONTAINS_TOKEN` on exact property text.
async fn search(State(fake): State<Fake>, Json(body): Json<Value>) -> Response {
    let groups = body["filterGroups"].as_array().cloned().unwrap_or_default();
    if groups.len() > 5
        || groups
            .iter()
            .any(|g| g["filters"].as_array().map_or(0, Vec::len) > 6)
    {
        return invalid("a search allows up to 5 filterGroups of up to 6 filters each");
    }
    let limit = body["limit"].as_u64().unwrap_or(10);
    if limit > 200 {
        return invalid("limit must be at most 200");
    }
    let matches = |contact: &Value, f: &Value| {
        let have = field(&contact["properties"], field(f, "propertyName"));
        match field(f, "operator") {
            "EQ" => have == field(f, "value"),
            "IN" => f["values"]
                .as_array()
                .is_some_and(|vs| vs.iter().any(|v| v.as_str() == Some(have))),
            "CONTAINS_TOKEN" => have.contains(field(f, "value")),
            _ => false,
        }
    };
    let data = fake.data();
    let results: Vec<Value> = data
        .contacts
        .iter()
        .filter(|c| {
            groups.is_empty()
                || groups.iter().any(|g| {
                    g["filters"]
                        .as_array()
                        .is_some_and(|fs| fs.iter().all(|f| matches(c, f)))
                })
        })
        .take(limit as usize)
        .cloned()
        .collect();
    reply(
        200,
        &[],
        json!({ "total": results.len(), "results": results }),
    )
}

fn contact_object(id: u64, properties: Value) -> Value {
    let mut properties = properties;
    properties["hs_object_id"] = json!(id.to_string());
    properties["createdate"] = json!("2025-11-25T10:00:00.000Z");
    json!({
        "id": id.to_string(),
        "properties": properties,
        "createdAt": "2025-11-25T10:00:00.000Z",
        "updatedAt": "2025-11-25T10:00:00.000Z",
        "archived": false,
    })
}

/// `POST /crm/v3/objects/contacts`.
async fn create_contact(State(fake): State<Fake>, Json(body): Json<Value>) -> Response {
    let mut data = fake.data();
    let id = data.id();
    let contact = contact_object(id, body["properties"].clone());
    data.contacts.push(contact.clone());
    data.created.push(("contacts".into(), contact.clone()));
    reply(201, &[], contact)
}

/// `POST /crm/v3/objects/calls`: needs `hs_timestamp`; associations must
/// name an existing contact and a known type.
async fn create_call(State(fake): State<Fake>, Json(body): Json<Value>) -> Response {
    let p = &body["properties"];
    if field(p, "hs_timestamp").is_empty() {
        return invalid("Property values were not valid: hs_timestamp is required");
    }
    let mut data = fake.data();
    for a in body["associations"].as_array().into_iter().flatten() {
        let to = field(&a["to"], "id");
        if !data.contacts.iter().any(|c| field(c, "id") == to) {
            return invalid(&format!("contact {to} does not exist"));
        }
        if a["types"][0]["associationTypeId"].as_u64() != Some(CALL_TO_CONTACT) {
            return invalid("unknown association type");
        }
    }
    let id = data.id();
    let mut call = body.clone();
    call["id"] = json!(id.to_string());
    data.created.push(("calls".into(), call.clone()));
    reply(201, &[], call)
}

impl Saas for HubSpot {
    const PLUGIN: &'static str = "hubspot";
    const SEARCH_PATH: &'static str = "/crm/v3/objects/contacts/search";
    const CREDENTIAL_FIELD: &'static str = "access_token";
    const API_HOST: &'static str = "api.hubapi.com";

    fn deep_link(_fake: &Fake, id: &str) -> String {
        format!("https://app.hubspot.com/contacts/4711/record/0-1/{id}")
    }

    fn config(url: &str) -> Value {
        json!({ "base_url": url, "portal_id": "4711" })
    }

    fn secrets() -> Vec<(&'static str, &'static str)> {
        vec![("access_token", TOKEN)]
    }

    fn seed(fake: &Fake, first: &str, last: &str, org: &str, phone: &str) -> String {
        let mut data = fake.data();
        let id = data.id();
        data.contacts.push(contact_object(
            id,
            json!({ "firstname": first, "lastname": last, "company": org, "phone": phone }),
        ));
        id.to_string()
    }

    fn journal(fake: &Fake) -> Vec<Journaled> {
        fake.data()
            .created("calls")
            .into_iter()
            .map(|c| {
                let p = &c["properties"];
                Journaled {
                    contacts: c["associations"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| field(&a["to"], "id").to_string())
                        .collect(),
                    answered: field(p, "hs_call_status") == "COMPLETED",
                    duration_secs: field(p, "hs_call_duration")
                        .parse::<u64>()
                        .ok()
                        .map(|ms| ms / 1000),
                    text: format!(
                        "{}\n{}",
                        field(p, "hs_call_title"),
                        field(p, "hs_call_body")
                    ),
                    raw: c.clone(),
                }
            })
            .collect()
    }

    fn created_contacts(fake: &Fake) -> Vec<Value> {
        fake.data().created("contacts")
    }
}
