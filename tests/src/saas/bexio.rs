//! bexio API 2.0 as the `bexio` connector uses it: contact search with
//! criteria, contact relations (person to company), contact and note
//! creation, Bearer personal access tokens.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use super::{Fake, Journaled, Saas, Vendor, credentials, field, reply};

/// The personal access token the fake accepts.
pub const TOKEN: &str = "eyJraWQiOiJwYXQiLCJhbGciOiJSUzI1NiJ9.fake-bexio-pat";

/// The fields `POST /2.0/contact/search` accepts.
const SEARCHABLE: &[&str] = &[
    "id",
    "name_1",
    "name_2",
    "nr",
    "address",
    "mail",
    "mail_second",
    "postcode",
    "city",
    "country_id",
    "contact_group_ids",
    "contact_type_id",
    "updated_at",
    "user_id",
    "phone_fixed",
    "phone_mobile",
    "fax",
];

/// The fake bexio.
#[derive(Default)]
pub struct Bexio;

impl Vendor for Bexio {
    fn authorized(&self, headers: &HeaderMap, _query: &str) -> bool {
        credentials(headers, "Bearer") == Some(TOKEN)
    }

    fn unauthorized(&self) -> Response {
        reply(
            401,
            &[],
            json!({ "error_code": 401, "message": "The provided access token is invalid or has expired", "errors": [] }),
        )
    }

    fn throttled(&self, secs: u64) -> Response {
        reply(
            429,
            &[
                ("ratelimit-limit", "1000".into()),
                ("ratelimit-remaining", "0".into()),
                ("ratelimit-reset", secs.to_string()),
            ],
            json!({ "error_code": 429, "message": "Too Many Requests", "errors": [] }),
        )
    }

    fn routes(&self) -> Router<Fake> {
        Router::new()
            .route("/2.0/contact/search", post(search_contacts))
            .route("/2.0/contact", post(create_contact))
            .route("/2.0/contact/{id}", get(show_contact))
            .route("/2.0/contact_relation/search", post(search_relations))
            .route("/2.0/note", post(create_note))
    }
}

fn error(status: u16, message: &str) -> Response {
    reply(
        status,
        &[],
        json!({ "error_code": status, "message": message, "errors": [] }),
    )
}

/// Text of a field as bexio compares it.
fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Whether `object` meets every criterion (bexio ANDs them).
fn meets(object: &Value, criteria: &[Value]) -> Result<bool, String> {
    for c in criteria {
        let have = as_text(&object[field(c, "field")]);
        let value = &c["value"];
        let ok = match field(c, "criteria") {
            "=" | "equal" => have == as_text(value),
            "!=" | "not_equal" => have != as_text(value),
            "like" => have
                .to_lowercase()
                .contains(&as_text(value).trim_matches('%').to_lowercase()),
            "in" => value
                .as_array()
                .ok_or("criteria `in` needs an array value")?
                .iter()
                .any(|v| as_text(v) == have),
            "is_null" => have.is_empty(),
            "not_null" => !have.is_empty(),
            other => return Err(format!("unknown criteria '{other}'")),
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

/// `POST /2.0/contact/search`.
async fn search_contacts(State(fake): State<Fake>, Json(body): Json<Value>) -> Response {
    let Some(criteria) = body.as_array() else {
        return error(400, "The search body must be an array of criteria");
    };
    if let Some(c) = criteria
        .iter()
        .find(|c| !SEARCHABLE.contains(&field(c, "field")))
    {
        return error(
            400,
            &format!("Field '{}' is not searchable", field(c, "field")),
        );
    }
    let data = fake.data();
    let mut found = Vec::new();
    for contact in &data.contacts {
        match meets(contact, criteria) {
            Ok(true) => found.push(contact.clone()),
            Ok(false) => {}
            Err(e) => return error(400, &e),
        }
    }
    reply(200, &[], Value::Array(found))
}

/// `GET /2.0/contact/{id}`.
async fn show_contact(State(fake): State<Fake>, Path(id): Path<u64>) -> Response {
    match fake
        .data()
        .contacts
        .iter()
        .find(|c| c["id"].as_u64() == Some(id))
    {
        Some(c) => reply(200, &[], c.clone()),
        None => error(404, "Contact not found"),
    }
}

/// `POST /2.0/contact_relation/search`.
async fn search_relations(State(fake): State<Fake>, Json(body): Json<Value>) -> Response {
    let criteria = body.as_array().cloned().unwrap_or_default();
    let data = fake.data();
    let relations = data
        .extra
        .get("relations")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut found = Vec::new();
    for r in relations {
        match meets(&r, &criteria) {
            Ok(true) => found.push(r),
            Ok(false) => {}
            Err(e) => return error(400, &e),
        }
    }
    reply(200, &[], Value::Array(found))
}

fn contact_object(id: u64, fields: Value) -> Value {
    let mut c = json!({
        "id": id, "nr": id.to_string(), "contact_type_id": 2, "name_1": "", "name_2": null,
        "salutation_id": null, "address": null, "postcode": null, "city": null, "country_id": 1,
        "mail": null, "phone_fixed": null, "phone_fixed_second": null, "phone_mobile": null,
        "fax": null, "url": null, "remarks": null, "language_id": null, "contact_group_ids": null,
        "user_id": 1, "owner_id": 1, "updated_at": "2025-11-25 10:00:00",
    });
    for (k, v) in fields.as_object().into_iter().flatten() {
        c[k] = v.clone();
    }
    c
}

/// `POST /2.0/contact`: `contact_type_id`, `name_1`, `user_id` and
/// `owner_id` are required.
async fn create_contact(State(fake): State<Fake>, Json(body): Json<Value>) -> Response {
    for required in ["contact_type_id", "name_1", "user_id", "owner_id"] {
        if body[required].is_null() {
            return error(422, &format!("{required}: This value should not be blank."));
        }
    }
    let mut data = fake.data();
    let id = data.id();
    let contact = contact_object(id, body);
    data.contacts.push(contact.clone());
    data.created.push(("contacts".into(), contact.clone()));
    reply(201, &[], contact)
}

/// `POST /2.0/note`: `user_id`, `event_start` (`YYYY-MM-DD HH:MM:SS`) and
/// `subject` are required; `contact_id` must exist.
async fn create_note(State(fake): State<Fake>, Json(body): Json<Value>) -> Response {
    if body["user_id"].as_u64().is_none() || field(&body, "subject").is_empty() {
        return error(422, "user_id and subject: This value should not be blank.");
    }
    let start = field(&body, "event_start");
    if start.len() != 19 || start.as_bytes()[10] != b' ' {
        return error(422, "event_start: This value is not a valid datetime.");
    }
    let mut data = fake.data();
    if let Some(cid) = body["contact_id"].as_u64()
        && !data.contacts.iter().any(|c| c["id"].as_u64() == Some(cid))
    {
        return error(422, "contact_id: This contact does not exist.");
    }
    let id = data.id();
    let mut note = body.clone();
    note["id"] = json!(id);
    note["module_id"] = Value::Null;
    note["entry_id"] = Value::Null;
    data.created.push(("notes".into(), note.clone()));
    reply(201, &[], note)
}

impl Saas for Bexio {
    const PLUGIN: &'static str = "bexio";
    const SEARCH_PATH: &'static str = "/2.0/contact/search";
    const CREDENTIAL_FIELD: &'static str = "access_token";
    const API_HOST: &'static str = "api.bexio.com";

    fn deep_link(_fake: &Fake, id: &str) -> String {
        format!("https://office.bexio.com/index.php/kontakt/show/id/{id}")
    }

    fn config(url: &str) -> Value {
        json!({ "base_url": url, "user_id": 1 })
    }

    fn secrets() -> Vec<(&'static str, &'static str)> {
        vec![("access_token", TOKEN)]
    }

    /// A person with `phone` in `phone_fixed`, related to company `org`.
    fn seed(fake: &Fake, first: &str, last: &str, org: &str, phone: &str) -> String {
        let mut data = fake.data();
        let company = data.id();
        data.contacts.push(contact_object(
            company,
            json!({ "contact_type_id": 1, "name_1": org }),
        ));
        let id = data.id();
        data.contacts.push(contact_object(
            id,
            json!({ "contact_type_id": 2, "name_1": last, "name_2": first, "phone_fixed": phone }),
        ));
        let relation = json!({
            "id": data.id(), "contact_id": company, "contact_sub_id": id,
            "description": "", "updated_at": "2025-11-25 10:00:00",
        });
        let relations = data
            .extra
            .entry("relations".into())
            .or_insert_with(|| json!([]));
        relations.as_array_mut().unwrap().push(relation);
        id.to_string()
    }

    fn journal(fake: &Fake) -> Vec<Journaled> {
        fake.data()
            .created("notes")
            .into_iter()
            .map(|n| {
                let subject = field(&n, "subject");
                Journaled {
                    contacts: n["contact_id"]
                        .as_u64()
                        .map(|c| c.to_string())
                        .into_iter()
                        .collect(),
                    answered: !subject.starts_with("Missed") && !subject.starts_with("Unanswered"),
                    duration_secs: None,
                    text: format!("{subject}\n{}", field(&n, "info")),
                    raw: n.clone(),
                }
            })
            .collect()
    }

    fn created_contacts(fake: &Fake) -> Vec<Value> {
        fake.data().created("contacts")
    }
}
