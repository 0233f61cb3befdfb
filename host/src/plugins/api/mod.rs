//! Connector API versions this host links. Each released WIT version is
//! frozen in its own module; a plugin is bound to the version it was built
//! against, so 1.0.0 plugins keep working when 1.1.0 is added.

pub mod v1_0_0;

use semver::{Version, VersionReq};
use wasmtime::component::{Component, Linker};

use super::sandbox::StoreState;

/// Every connector API version this host supports, oldest first.
pub const SUPPORTED: &[Version] = &[Version::new(1, 0, 0)];

/// Human list of supported versions for messages, e.g. `1.0.0`.
pub fn supported_list() -> String {
    SUPPORTED
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The newest supported version matching a manifest's requirement.
pub fn resolve(req: &VersionReq) -> Option<&'static Version> {
    SUPPORTED.iter().rev().find(|v| req.matches(v))
}

/// Adds every supported version's host interfaces (and WASI) to a linker.
pub fn add_to_linker(linker: &mut Linker<StoreState>) -> anyhow::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    v1_0_0::add_to_linker(linker)?;
    Ok(())
}

/// Pre-instantiated plugin, bound to the API version it exports.
#[derive(Clone)]
pub enum Bindings {
    /// Built against `leansync:connector@1.0.0`.
    V1_0(v1_0_0::PluginPre<StoreState>),
}

/// The connector API version a component exports, read from its type.
pub fn exported_version(component: &Component, engine: &wasmtime::Engine) -> Option<Version> {
    let ty = component.component_type();
    ty.exports(engine).find_map(|(name, _)| {
        name.strip_prefix("leansync:connector/connector@")
            .and_then(|v| Version::parse(v).ok())
    })
}
