//! `plugin.toml`: what a connector is, which API it targets, what it asks for.
//!
//! Every error names the file, the key and how to fix it; the texts are part
//! of the interface and asserted in tests.

use std::path::{Path, PathBuf};

use semver::{Version, VersionReq};
use serde::Deserialize;

use super::capabilities::HostPattern;

/// File name of the manifest inside a plugin folder.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// A parsed and validated plugin manifest.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// Unique plugin name (`[a-z0-9-]`).
    pub name: String,
    /// The plugin's own version.
    pub version: Version,
    /// Requirement on the connector API version, e.g. `^1.0`.
    pub api: VersionReq,
    /// One-line description for catalogues.
    pub description: String,
    /// Component file, relative to the manifest.
    pub component: PathBuf,
    /// Whether the plugin implements `lookup-contact`.
    pub lookup: bool,
    /// What the plugin asks the admin to grant.
    pub capabilities: Capabilities,
    /// JSON Schema of an installation's configuration.
    pub config_schema: serde_json::Value,
    /// How `leansync plugin build` builds the component (the host ignores it).
    pub build: BuildSpec,
}

/// The `[build]` table: the command that builds the component, run in the
/// plugin folder, and where it leaves it. Both default per language.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuildSpec {
    /// Shell command, e.g. `componentize-py -w plugin componentize app -o app.wasm`.
    pub command: Option<String>,
    /// File the command writes, relative to the folder; copied to `component`
    /// when it differs.
    pub output: Option<String>,
}

/// Capabilities a plugin asks for; each takes effect only when granted.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Capabilities {
    /// Hosts the plugin may call over HTTP.
    pub outbound_hosts: Vec<HostPattern>,
    /// Per-installation key-value state.
    pub key_value: bool,
    /// Access to secret config fields.
    pub secrets: bool,
    /// Whether the plugin may place click-to-calls (`place-call`), from
    /// numbers its installation is licensed for, within the customer's
    /// dial permissions and budgets.
    pub place_calls: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawManifest {
    name: Option<String>,
    version: Option<String>,
    api: Option<String>,
    #[serde(default)]
    description: String,
    component: Option<String>,
    #[serde(default)]
    lookup: bool,
    #[serde(default)]
    capabilities: RawCapabilities,
    config_schema: Option<toml::Value>,
    #[serde(default)]
    build: BuildSpec,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCapabilities {
    #[serde(default)]
    outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value: bool,
    #[serde(default)]
    secrets: bool,
    #[serde(default)]
    place_calls: bool,
}

/// A manifest problem, with the file and the fix in the message.
#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", path.display())]
pub struct ManifestError {
    /// The manifest file.
    pub path: PathBuf,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Manifest {
    /// Reads and validates `dir/plugin.toml`.
    pub fn load(dir: &Path) -> Result<Self, ManifestError> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| ManifestError {
            path: path.clone(),
            message: format!(
                "cannot read the manifest ({e}); every plugin folder needs a {MANIFEST_FILE} (see examples/hello-connector)"
            ),
        })?;
        Self::parse(&text, &path)
    }

    /// Validates manifest text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ManifestError> {
        let err = |message: String| ManifestError {
            path: path.to_owned(),
            message,
        };
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            err(format!(
                "invalid TOML: {}",
                e.to_string().trim_end().replace('\n', " ")
            ))
        })?;

        let name = raw
            .name
            .ok_or_else(|| err("missing key `name`: add `name = \"my-connector\"`".into()))?;
        if name.is_empty()
            || name.len() > 64
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(err(format!(
                "`name = \"{name}\"` is invalid: use 1-64 characters from a-z, 0-9 and -"
            )));
        }
        let version = raw.version.ok_or_else(|| {
            err("missing key `version`: add the plugin's semver version, e.g. `version = \"1.0.0\"`".into())
        })?;
        let version = Version::parse(&version).map_err(|e| {
            err(format!(
                "`version = \"{version}\"` is not a semver version ({e}); write e.g. `version = \"1.0.0\"`"
            ))
        })?;
        let api = raw.api.ok_or_else(|| {
            err(
                "missing key `api`: add the connector API requirement, e.g. `api = \"^1.0\"`"
                    .into(),
            )
        })?;
        let api = VersionReq::parse(&api).map_err(|e| {
            err(format!(
                "`api = \"{api}\"` is not a semver requirement ({e}); write e.g. `api = \"^1.0\"`"
            ))
        })?;
        let component = raw.component.ok_or_else(|| {
            err(format!(
                "missing key `component`: add `component = \"{name}.wasm\"` naming the built component next to {MANIFEST_FILE}"
            ))
        })?;
        let component = PathBuf::from(component);
        if component.is_absolute()
            || component
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(err(format!(
                "`component = \"{}\"` must be a file name inside the plugin folder (no absolute paths or ..)",
                component.display()
            )));
        }
        let outbound_hosts = raw
            .capabilities
            .outbound_hosts
            .iter()
            .map(|h| {
                HostPattern::parse(h).map_err(|m| {
                    err(format!(
                        "`capabilities.outbound-hosts` entry \"{h}\" is invalid: {m}"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config_schema = match raw.config_schema {
            None => serde_json::json!({ "type": "object" }),
            Some(v) => serde_json::to_value(v).map_err(|e| {
                err(format!(
                    "`config-schema` cannot be read as JSON Schema: {e}"
                ))
            })?,
        };
        if let Err(e) = jsonschema::validator_for(&config_schema) {
            return Err(err(format!(
                "`config-schema` is not a valid JSON Schema: {e}; see https://json-schema.org/understanding-json-schema"
            )));
        }
        if config_schema.get("type").and_then(|t| t.as_str()) != Some("object") {
            return Err(err(
                "`config-schema` must describe an object: add `type = \"object\"` under [config-schema]".into(),
            ));
        }
        Ok(Manifest {
            name,
            version,
            api,
            description: raw.description,
            component,
            lookup: raw.lookup,
            capabilities: Capabilities {
                outbound_hosts,
                key_value: raw.capabilities.key_value,
                secrets: raw.capabilities.secrets,
                place_calls: raw.capabilities.place_calls,
            },
            config_schema,
            build: raw.build,
        })
    }

    /// Names of config fields marked `"x-secret": true` in the schema.
    pub fn secret_fields(&self) -> Vec<String> {
        self.config_schema
            .get("properties")
            .and_then(|p| p.as_object())
            .map(|props| {
                props
                    .iter()
                    .filter(|(_, v)| v.get("x-secret").and_then(|s| s.as_bool()) == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name = "webhook"
version = "1.2.3"
api = "^1.0"
description = "d"
component = "webhook.wasm"
[capabilities]
outbound-hosts = ["*.example.com", "127.0.0.1:*"]
secrets = true
[config-schema]
type = "object"
required = ["url"]
[config-schema.properties.url]
type = "string"
[config-schema.properties.secret]
type = "string"
x-secret = true
"#;

    fn parse_err(text: &str) -> String {
        Manifest::parse(text, Path::new("p/plugin.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn good_manifest_parses() {
        let m = Manifest::parse(GOOD, Path::new("plugin.toml")).unwrap();
        assert_eq!(m.name, "webhook");
        assert_eq!(m.version, Version::new(1, 2, 3));
        assert!(m.api.matches(&Version::new(1, 0, 0)));
        assert_eq!(m.capabilities.outbound_hosts.len(), 2);
        assert_eq!(m.secret_fields(), vec!["secret".to_string()]);
    }

    #[test]
    fn each_problem_names_key_and_fix() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "name = \"webhook\"\n",
                "name = \"Web Hook\"\n",
                "p/plugin.toml: `name = \"Web Hook\"` is invalid: use 1-64 characters from a-z, 0-9 and -",
            ),
            (
                "version = \"1.2.3\"\n",
                "",
                "p/plugin.toml: missing key `version`: add the plugin's semver version, e.g. `version = \"1.0.0\"`",
            ),
            (
                "version = \"1.2.3\"\n",
                "version = \"one\"\n",
                "`version = \"one\"` is not a semver version",
            ),
            (
                "api = \"^1.0\"\n",
                "",
                "missing key `api`: add the connector API requirement, e.g. `api = \"^1.0\"`",
            ),
            (
                "api = \"^1.0\"\n",
                "api = \"latest\"\n",
                "`api = \"latest\"` is not a semver requirement",
            ),
            (
                "component = \"webhook.wasm\"\n",
                "",
                "missing key `component`: add `component = \"webhook.wasm\"`",
            ),
            (
                "component = \"webhook.wasm\"\n",
                "component = \"../x.wasm\"\n",
                "must be a file name inside the plugin folder",
            ),
            (
                "\"*.example.com\"",
                "\"http://x/y\"",
                "`capabilities.outbound-hosts` entry \"http://x/y\" is invalid",
            ),
            (
                "secrets = true\n",
                "secrets = true\nnetwork = true\n",
                "unknown field `network`",
            ),
            (
                "type = \"object\"\nrequired",
                "type = \"array\"\nrequired",
                "`config-schema` must describe an object",
            ),
        ];
        for (from, to, expected) in cases {
            let text = GOOD.replacen(from, to, 1);
            assert_ne!(text, GOOD, "case {from} did not change the manifest");
            let msg = parse_err(&text);
            assert!(msg.contains(expected), "expected `{expected}` in `{msg}`");
        }
    }

    #[test]
    fn invalid_toml_is_reported() {
        assert!(parse_err("name = ").contains("p/plugin.toml: invalid TOML"));
    }
}
