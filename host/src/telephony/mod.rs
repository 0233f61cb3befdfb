//! Telephony providers behind one trait; the rest of the host sees only
//! [`crate::call::CallEvent`].
