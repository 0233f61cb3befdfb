//! Bindings for the frozen `leansync:connector@1.0.0`: its records and the
//! calls into a 1.0.0 component; the `host` import forwards to the shared
//! implementation in [`super`]. A 1.0.0 guest never sees fields added later.

wasmtime::component::bindgen!({
    path: "../plugin-api/wit/v1.0.0",
    world: "plugin",
    imports: { default: async },
    exports: { default: async },
});

super::version_glue!();
