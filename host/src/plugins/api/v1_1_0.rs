//! Bindings for `leansync:connector@1.1.0`: 1.0.0 plus `answered-by` on
//! `call-event` (who picked the call up).

wasmtime::component::bindgen!({
    path: "../plugin-api/wit/v1.1.0",
    world: "plugin",
    imports: { default: async },
    exports: { default: async },
});

super::version_glue!(answered_by);
