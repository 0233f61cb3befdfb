//! Wires configuration, store, plugin runtime and telephony into one app.
