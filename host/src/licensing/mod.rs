//! Customers, consent, numbers, licenses, LeanSync Keys, usage, billing, audit.
