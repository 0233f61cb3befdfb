//! `carddav`: resolves callers to names and organisations from a CardDAV
//! address book, whatever format its TEL properties are written in.
//!
//! The book is mirrored into an index of E.164 numbers in the installation's
//! key-value state (WebDAV sync, RFC 6578): a lookup reads one bucket, and a
//! refresh fetches only what changed since the last sync token.

#[cfg(target_family = "wasm")]
mod connector;
pub mod dav;
pub mod index;
pub mod vcard;
