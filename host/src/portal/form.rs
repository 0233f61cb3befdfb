//! Posted form data, and forms generated from a connector's config JSON
//! Schema (`plugin.toml` `[config-schema]`).
//!
//! Supported property types: string (text, `format: uri` as URL, `enum` as
//! a select, `x-secret: true` as a password input that is never filled in
//! again), number and integer, boolean (checkbox), and arrays of strings
//! (checkboxes for an item `enum`, else one value per line).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

/// Name prefix of generated config inputs (keeps them apart from the
/// portal's own fields).
pub const CONFIG_PREFIX: &str = "cfg.";

/// A posted `application/x-www-form-urlencoded` body, fields in order.
#[derive(Debug, Clone, Default)]
pub struct FormData(pub Vec<(String, String)>);

impl FormData {
    /// The first value of a field, trimmed ("" when absent).
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.trim())
            .unwrap_or("")
    }

    /// Every non-empty value of a field.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, v)| k == name && !v.trim().is_empty())
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }

    /// Whether a checkbox was ticked.
    pub fn checked(&self, name: &str) -> bool {
        self.0.iter().any(|(k, v)| k == name && !v.is_empty())
    }
}

/// Splits a list typed as lines or comma-separated values.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(['\n', ',', '\r'])
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_owned)
        .collect()
}

/// One generated input.
#[derive(Debug, Clone, Serialize)]
pub struct Field {
    /// Property name in the config.
    pub name: String,
    /// Input name in the form (`cfg.<name>`).
    pub input: String,
    /// `text`, `url`, `password`, `number`, `checkbox`, `select`,
    /// `checkboxes` or `lines`.
    pub kind: &'static str,
    /// Label (schema `title`, else the name).
    pub label: String,
    /// Help text (schema `description`).
    pub help: Option<String>,
    /// Required by the schema.
    pub required: bool,
    /// A secret (`x-secret: true`).
    pub secret: bool,
    /// Options for `select` and `checkboxes`.
    pub options: Vec<String>,
    /// Current value for text-like inputs (never for secrets).
    pub value: String,
    /// Selected options / checked state.
    pub selected: Vec<String>,
    /// `step` of number inputs.
    pub step: &'static str,
    /// Problem with this field, shown next to it.
    pub error: Option<String>,
}

fn str_list(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|x| match x {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The inputs for a schema: required properties first, then the others.
/// `posted` refills the values after a failed submit.
pub fn fields(schema: &Value, posted: Option<&FormData>) -> Vec<Field> {
    let required = str_list(schema.get("required"));
    let empty = Map::new();
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut names: Vec<&String> = props.keys().collect();
    names.sort_by_key(|n| !required.contains(n));
    names
        .into_iter()
        .map(|name| {
            let p = &props[name];
            let ty = p.get("type").and_then(Value::as_str).unwrap_or("string");
            let secret = p.get("x-secret").and_then(Value::as_bool) == Some(true);
            let enum_opts = str_list(p.get("enum"));
            let item_enum = str_list(p.get("items").and_then(|i| i.get("enum")));
            let (kind, options, step) = match ty {
                _ if secret => ("password", vec![], ""),
                "boolean" => ("checkbox", vec![], ""),
                "integer" => ("number", vec![], "1"),
                "number" => ("number", vec![], "any"),
                "array" if !item_enum.is_empty() => ("checkboxes", item_enum, ""),
                "array" => ("lines", vec![], ""),
                _ if !enum_opts.is_empty() => ("select", enum_opts, ""),
                _ if p.get("format").and_then(Value::as_str) == Some("uri") => ("url", vec![], ""),
                _ => ("text", vec![], ""),
            };
            let input = format!("{CONFIG_PREFIX}{name}");
            let default = p.get("default");
            let (value, selected) = match posted {
                Some(f) => match kind {
                    "password" => (String::new(), vec![]),
                    "checkboxes" => (String::new(), f.all(&input)),
                    "checkbox" => (
                        String::new(),
                        if f.checked(&input) {
                            vec!["on".into()]
                        } else {
                            vec![]
                        },
                    ),
                    _ => (f.get(&input).to_owned(), vec![]),
                },
                None => match (kind, default) {
                    ("password", _) | (_, None) => (String::new(), vec![]),
                    ("checkboxes", Some(d)) => (String::new(), str_list(Some(d))),
                    ("checkbox", Some(d)) => (
                        String::new(),
                        if d.as_bool() == Some(true) {
                            vec!["on".into()]
                        } else {
                            vec![]
                        },
                    ),
                    ("lines", Some(d)) => (str_list(Some(d)).join("\n"), vec![]),
                    (_, Some(Value::String(s))) => (s.clone(), vec![]),
                    (_, Some(d)) => (d.to_string(), vec![]),
                },
            };
            Field {
                name: name.clone(),
                input,
                kind,
                label: p
                    .get("title")
                    .and_then(Value::as_str)
                    .unwrap_or(name)
                    .to_owned(),
                help: p
                    .get("description")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                required: required.contains(name),
                secret,
                options,
                value,
                selected,
                step,
                error: None,
            }
        })
        .collect()
}

/// Reasons a field could not be turned into config (by property name).
pub type FieldErrors = BTreeMap<String, &'static str>;

/// Builds the config object from the posted form. Empty optional fields
/// are left out; empty required ones and unparsable numbers are reported
/// as the i18n keys `field_required` / `not_a_number`.
pub fn config_from(fields: &[Field], form: &FormData) -> (Value, FieldErrors) {
    let mut out = Map::new();
    let mut errors = FieldErrors::new();
    for f in fields {
        let raw = form.get(&f.input);
        let value = match f.kind {
            "checkbox" => Some(Value::Bool(form.checked(&f.input))),
            "checkboxes" => {
                let v = form.all(&f.input);
                (!v.is_empty()).then(|| Value::from(v))
            }
            "lines" => {
                let v = split_list(raw);
                (!v.is_empty()).then(|| Value::from(v))
            }
            "number" if !raw.is_empty() => {
                let parsed = if f.step == "1" {
                    raw.parse::<i64>().ok().map(Value::from)
                } else {
                    raw.parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                };
                if parsed.is_none() {
                    errors.insert(f.name.clone(), "not_a_number");
                    continue;
                }
                parsed
            }
            _ if !raw.is_empty() => Some(Value::String(raw.to_owned())),
            _ => None,
        };
        match value {
            Some(v) => {
                out.insert(f.name.clone(), v);
            }
            None if f.required => {
                errors.insert(f.name.clone(), "field_required");
            }
            None => {}
        }
    }
    (Value::Object(out), errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["url"],
            "properties": {
                "secret": { "type": "string", "x-secret": true, "title": "Signing secret" },
                "states": { "type": "array", "items": { "type": "string", "enum": ["ringing", "ended"] } },
                "url": { "type": "string", "format": "uri", "title": "Receiver URL" },
                "retries": { "type": "integer" },
                "verbose": { "type": "boolean" },
                "mode": { "type": "string", "enum": ["a", "b"] },
                "tags": { "type": "array", "items": { "type": "string" } }
            }
        })
    }

    fn form(pairs: &[(&str, &str)]) -> FormData {
        FormData(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn generates_inputs_by_type_required_first() {
        let f = fields(&schema(), None);
        assert_eq!(f[0].name, "url");
        assert!(f[0].required);
        let kind = |n: &str| f.iter().find(|x| x.name == n).unwrap().kind;
        assert_eq!(kind("url"), "url");
        assert_eq!(kind("secret"), "password");
        assert_eq!(kind("states"), "checkboxes");
        assert_eq!(kind("retries"), "number");
        assert_eq!(kind("verbose"), "checkbox");
        assert_eq!(kind("mode"), "select");
        assert_eq!(kind("tags"), "lines");
    }

    #[test]
    fn builds_config_and_reports_problems() {
        let s = schema();
        let fs = fields(&s, None);
        let posted = form(&[
            ("cfg.url", "http://x/calls"),
            ("cfg.secret", "s"),
            ("cfg.states", "ringing"),
            ("cfg.states", "ended"),
            ("cfg.retries", "3"),
            ("cfg.tags", "a\nb"),
        ]);
        let (cfg, errs) = config_from(&fs, &posted);
        assert!(errs.is_empty());
        assert_eq!(
            cfg,
            json!({"url": "http://x/calls", "secret": "s", "states": ["ringing", "ended"], "retries": 3, "verbose": false, "tags": ["a", "b"]})
        );
        let (_, errs) = config_from(&fs, &form(&[("cfg.retries", "x")]));
        assert_eq!(errs.get("url"), Some(&"field_required"));
        assert_eq!(errs.get("retries"), Some(&"not_a_number"));
        // Secrets are never filled in again.
        let again = fields(&s, Some(&posted));
        assert!(
            again
                .iter()
                .find(|x| x.name == "secret")
                .unwrap()
                .value
                .is_empty()
        );
        assert_eq!(again[0].value, "http://x/calls");
    }
}
