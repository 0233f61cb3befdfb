//! The sandboxed connector runtime.
