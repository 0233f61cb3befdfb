//! `tryton`: finds the caller's party in Tryton over JSON-RPC, pops it on
//! screen, and journals each finished call as a note on the party
//! (optionally creating a party for an unknown caller).

#[cfg(target_family = "wasm")]
mod connector;
pub mod note;
