//! Pipedrive API v1 as the `pipedrive` connector uses it: person search,
//! person and call log creation, the personal API token (header or query).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Fake, Journaled, Saas, Vendor, field, reply};

/// The API token the fake accepts.
pub const TOKEN: &str = "9d4c0f3b5a7e2d1c8b6a4f2e0d9c7b5a3f1e8d6c";

/// The fake Pipedrive.
#[derive(Default)]
pub struct Pipedrive;

impl Vendor for Pipedrive {
    fn authorized(&self, headers: &HeaderMap, query: &str) -> bool {
        let header = headers.get("x-api-token").and_then(|v| v.to_str().ok());
        let param = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("api_token="));
        header.or(param) == Some(TOKEN)
    }

    fn unauthorized(&self) -> Response {
        reply(
            401,
            &[],
            json!({
                "success": false,
                "error": "unauthorized access",
                "errorCode": 401,
                "error_info": "Please check developers.pipedrive.com",
            }),
        )
    }

    fn throttled(&self, secs: u64) -> Response {
        reply(
            429,
            &[
                ("x-ratelimit-limit", "80".into()),
                ("x-ratelimit-remaining", "0".into()),
                ("x-ratelimit-reset", secs.to_string()),
            ],
            json!({
                "success": false,
                "error": "Request over limit",
                "errorCode": 429,
                "error_info": "Please check developers.pipedrive.com",
            }),
        )
    }

    fn routes(&self) -> Router<Fake> {
        Router::new()
            .route("/v1/persons/search", get(search))
            .route("/v1/persons", post(create_person))
            .route("/v1/callLogs", post(create_call_log))
    }
}

fn bad_request(error: &str) -> Response {
    reply(
        400,
        &[],
        json!({ "success": false, "error": error, "errorCode": 400 }),
    )
}

/// `GET /v1/persons/search`: the term must have 2+ characters; with
/// `fields=phone` it is matched inside the stored phone texts.
async fn search(State(fake): State<Fake>, Query(q): Query<HashMap<String, String>>) -> Response {
    let term = q.get("term").cloned().unwrap_or_default();
    let exact = q
        .get("exact_match")
        .is_some_and(|v| v == "true" || v == "1");
    if term.chars().count() < if exact { 1 } else { 2 } {
        return bad_request("Search term must be at least 2 characters long");
    }
    let fields = q.get("fields").map(String::as_str).unwrap_or("phone");
    let term = term.to_lowercase();
    let data = fake.data();
    let items: Vec<Value> = data
        .contacts
        .iter()
        .filter(|p| {
            let phones = p["phones"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str);
            let mut texts: Vec<String> = Vec::new();
            if fields.contains("phone") {
                texts.extend(phones.map(str::to_lowercase));
            }
            if fields.contains("name") {
                texts.push(field(p, "name").to_lowercase());
            }
            texts
                .iter()
                .any(|t| if exact { *t == term } else { t.contains(&term) })
        })
        .map(|p| json!({ "result_score": 1.0, "item": p }))
        .collect();
    reply(
        200,
        &[],
        json!({
            "success": true,
            "data": { "items": items },
            "additional_data": { "pagination": { "start": 0, "limit": 100, "more_items_in_collection": false } },
        }),
    )
}

fn person(id: u64, name: &str, phones: Vec<String>, org: Option<(u64, &str)>) -> Value {
    json!({
        "id": id,
        "type": "person",
        "name": name,
        "phones": phones,
        "emails": [],
        "visible_to": 3,
        "owner": { "id": 1 },
        "organization": org.map(|(id, name)| json!({ "id": id, "name": name, "address": null })),
        "custom_fields": [],
        "notes": [],
    })
}

/// `POST /v1/persons`.
async fn create_person(State(fake): State<Fake>, Json(body): Json<Value>) -> Response {
    let name = field(&body, "name");
    if name.is_empty() {
        return bad_request("Name must be given.");
    }
    let phones: Vec<String> = body["phone"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| field(p, "value").to_string())
        .collect();
    let mut data = fake.data();
    let id = data.id();
    data.contacts.push(person(id, name, phones.clone(), None));
    let created = json!({
        "id": id,
        "name": name,
        "phone": body["phone"],
        "org_id": null,
        "active_flag": true,
    });
    data.created.push(("persons".into(), created.clone()));
    reply(201, &[], json!({ "success": true, "data": created }))
}

/// `POST /v1/callLogs`: `outcome`, `to_phone_number`, `start_time` and
/// `end_time` (UTC, `YYYY-MM-DD HH:MM:SS`) are required.
async fn create_call_log(State(fake): State<Fake>, Json(body): Json<Value>) -> Response {
    let outcomes = [
        "connected",
        "no_answer",
        "left_message",
        "left_voicemail",
        "wrong_number",
        "busy",
    ];
    if !outcomes.contains(&field(&body, "outcome")) {
        return bad_request(
            "outcome must be one of connected, no_answer, left_message, left_voicemail, wrong_number, busy",
        );
    }
    if field(&body, "to_phone_number").is_empty() {
        return bad_request("to_phone_number is required");
    }
    let time_ok = |t: &str| {
        t.len() == 19
            && t.as_bytes()[10] == b' '
            && t.as_bytes()[4] == b'-'
            && t.as_bytes()[13] == b':'
    };
    if !time_ok(field(&body, "start_time")) || !time_ok(field(&body, "end_time")) {
        return bad_request("start_time and end_time must be YYYY-MM-DD HH:MM:SS");
    }
    let mut data = fake.data();
    if let Some(pid) = body["person_id"].as_u64()
        && !data.contacts.iter().any(|p| p["id"].as_u64() == Some(pid))
    {
        return reply(
            404,
            &[],
            json!({ "success": false, "error": "Person not found", "errorCode": 404 }),
        );
    }
    let id = data.id();
    let mut log = body.clone();
    log["id"] = json!(format!("{id:032x}"));
    data.created.push(("callLogs".into(), log.clone()));
    reply(200, &[], json!({ "success": true, "data": log }))
}

impl Saas for Pipedrive {
    const PLUGIN: &'static str = "pipedrive";
    const SEARCH_PATH: &'static str = "/v1/persons/search";
    const CREDENTIAL_FIELD: &'static str = "api_token";
    const API_HOST: &'static str = "api.pipedrive.com";

    fn deep_link(_fake: &Fake, id: &str) -> String {
        format!("https://acme.pipedrive.com/person/{id}")
    }

    fn config(url: &str) -> Value {
        json!({ "base_url": url, "company_domain": "acme" })
    }

    fn secrets() -> Vec<(&'static str, &'static str)> {
        vec![("api_token", TOKEN)]
    }

    fn seed(fake: &Fake, first: &str, last: &str, org: &str, phone: &str) -> String {
        let mut data = fake.data();
        let id = data.id();
        let org_id = data.id();
        data.contacts.push(person(
            id,
            &format!("{first} {last}"),
            vec![phone.to_string()],
            Some((org_id, org)),
        ));
        id.to_string()
    }

    fn journal(fake: &Fake) -> Vec<Journaled> {
        fake.data()
            .created("callLogs")
            .into_iter()
            .map(|l| Journaled {
                contacts: l["person_id"]
                    .as_u64()
                    .map(|p| p.to_string())
                    .into_iter()
                    .collect(),
                answered: field(&l, "outcome") == "connected",
                duration_secs: field(&l, "duration").parse().ok(),
                text: format!("{}\n{}", field(&l, "subject"), field(&l, "note")),
                raw: l.clone(),
            })
            .collect()
    }

    fn created_contacts(fake: &Fake) -> Vec<Value> {
        fake.data().created("persons")
    }
}
