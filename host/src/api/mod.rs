//! HTTP surfaces: health, admin API, business-app API, plugin webhooks.
