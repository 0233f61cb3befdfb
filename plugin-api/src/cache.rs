//! Lookup results cached per installation in the host's key-value state, so
//! a burst of calls from one number asks the app once.
//!
//! A connector instance lives for one call only: memory inside the guest
//! does not survive to the next call, the host's key-value store does (and
//! is already scoped to the installation). "Not found" is cached too, for a
//! shorter time, so an unknown caller does not hit the app on every ring.
//! Needs `key-value = true` in the manifest's `[capabilities]`.
//!
//! ```ignore
//! let cache = LookupCache::new("contact", 60, 30);
//! let contact = cache.get_or_fetch(&number.to_string(), || find_in_app(&number))?;
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Where cached values live: the host's key-value state in a guest; a map in
/// unit tests.
pub trait Store {
    /// Reads a value.
    fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Writes a value that expires after `ttl_secs`.
    fn set(&self, key: &str, value: &[u8], ttl_secs: u32) -> Result<(), String>;
    /// Deletes a value.
    fn delete(&self, key: &str);
}

/// The installation's key-value state in the host.
pub struct HostKv;

impl Store for HostKv {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        crate::kv::get(key)
    }
    fn set(&self, key: &str, value: &[u8], ttl_secs: u32) -> Result<(), String> {
        crate::kv::set(key, value, Some(ttl_secs))
    }
    fn delete(&self, key: &str) {
        crate::kv::delete(key)
    }
}

/// Found and not-found results under one key prefix, each with its TTL.
pub struct LookupCache<S: Store = HostKv> {
    store: S,
    prefix: String,
    ttl_secs: u32,
    negative_ttl_secs: u32,
}

impl LookupCache<HostKv> {
    /// A cache in the host's key-value state; keys are `prefix:KEY`.
    /// `ttl_secs` applies to found values, `negative_ttl_secs` to "not found".
    pub fn new(prefix: &str, ttl_secs: u32, negative_ttl_secs: u32) -> Self {
        Self::with_store(HostKv, prefix, ttl_secs, negative_ttl_secs)
    }
}

impl<S: Store> LookupCache<S> {
    /// A cache over any [`Store`].
    pub fn with_store(store: S, prefix: &str, ttl_secs: u32, negative_ttl_secs: u32) -> Self {
        Self {
            store,
            prefix: prefix.to_owned(),
            ttl_secs,
            negative_ttl_secs,
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}:{key}", self.prefix)
    }

    /// `Some(Some(v))` cached found, `Some(None)` cached not-found, `None`
    /// not cached (or written by an incompatible connector version).
    pub fn get<T: DeserializeOwned>(&self, key: &str) -> Option<Option<T>> {
        let raw = self.store.get(&self.key(key))?;
        serde_json::from_slice::<Option<T>>(&raw).ok()
    }

    /// Caches a result; a failed write only costs a later app request.
    pub fn put<T: Serialize>(&self, key: &str, value: Option<&T>) {
        let ttl = if value.is_some() {
            self.ttl_secs
        } else {
            self.negative_ttl_secs
        };
        if ttl == 0 {
            return;
        }
        let Ok(raw) = serde_json::to_vec(&value) else {
            return;
        };
        if let Err(e) = self.store.set(&self.key(key), &raw, ttl) {
            crate::log::warn(&format!(
                "lookup cache: cannot store '{key}': {e}; lookups still work, uncached"
            ));
        }
    }

    /// Forgets a cached result (e.g. after creating the missing record).
    pub fn forget(&self, key: &str) {
        self.store.delete(&self.key(key))
    }

    /// The cached result for `key`, or `fetch()`'s, which is then cached.
    /// Errors are returned and never cached.
    pub fn get_or_fetch<T, E>(
        &self,
        key: &str,
        fetch: impl FnOnce() -> Result<Option<T>, E>,
    ) -> Result<Option<T>, E>
    where
        T: Serialize + DeserializeOwned,
    {
        if let Some(hit) = self.get(key) {
            return Ok(hit);
        }
        let fresh = fetch()?;
        self.put(key, fresh.as_ref());
        Ok(fresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::{Cell, RefCell};
    use std::collections::HashMap;

    #[derive(Default)]
    struct Map {
        values: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    }

    impl Store for &Map {
        fn get(&self, key: &str) -> Option<Vec<u8>> {
            self.values.borrow().get(key).map(|(v, _)| v.clone())
        }
        fn set(&self, key: &str, value: &[u8], ttl: u32) -> Result<(), String> {
            self.values
                .borrow_mut()
                .insert(key.into(), (value.to_vec(), ttl));
            Ok(())
        }
        fn delete(&self, key: &str) {
            self.values.borrow_mut().remove(key);
        }
    }

    #[test]
    fn found_values_are_fetched_once() {
        let map = Map::default();
        let cache = LookupCache::with_store(&map, "contact", 60, 20);
        let fetches = Cell::new(0);
        for _ in 0..3 {
            let got: Result<Option<String>, ()> = cache.get_or_fetch("+41441234567", || {
                fetches.set(fetches.get() + 1);
                Ok(Some("Anna Muster".into()))
            });
            assert_eq!(got, Ok(Some("Anna Muster".into())));
        }
        assert_eq!(fetches.get(), 1);
        assert_eq!(map.values.borrow()["contact:+41441234567"].1, 60);
    }

    #[test]
    fn not_found_is_cached_with_the_shorter_ttl() {
        let map = Map::default();
        let cache = LookupCache::with_store(&map, "contact", 60, 20);
        let fetches = Cell::new(0);
        for _ in 0..2 {
            let got: Result<Option<String>, ()> = cache.get_or_fetch("+41790000000", || {
                fetches.set(fetches.get() + 1);
                Ok(None)
            });
            assert_eq!(got, Ok(None));
        }
        assert_eq!(fetches.get(), 1);
        assert_eq!(map.values.borrow()["contact:+41790000000"].1, 20);
    }

    #[test]
    fn errors_are_not_cached_and_forget_drops_an_entry() {
        let map = Map::default();
        let cache = LookupCache::with_store(&map, "p", 60, 20);
        let err: Result<Option<String>, &str> = cache.get_or_fetch("k", || Err("app down"));
        assert_eq!(err, Err("app down"));
        assert!(map.values.borrow().is_empty());
        cache.put("k", Some(&"v".to_string()));
        assert_eq!(cache.get::<String>("k"), Some(Some("v".into())));
        cache.forget("k");
        assert_eq!(cache.get::<String>("k"), None);
    }

    #[test]
    fn a_zero_ttl_disables_caching() {
        let map = Map::default();
        let cache = LookupCache::with_store(&map, "p", 0, 0);
        cache.put("k", Some(&1));
        cache.put::<i32>("n", None);
        assert!(map.values.borrow().is_empty());
    }
}
