//! The installation's number index: every TEL of the address book in E.164,
//! kept in the host's key-value state so a lookup is one read, whatever the
//! size of the book.
//!
//! Entries are spread over hash buckets (`idx:G:n:B`, number → contacts) with
//! a second set keyed by card (`idx:G:h:B`, href → numbers) so a sync delta
//! can drop a changed card's old numbers. A full build writes a new
//! generation `G` and switches `idx:meta` to it only when complete, so a
//! concurrent lookup never sees half an index.

use std::collections::{BTreeMap, BTreeSet};

use leansync_plugin_api::cache::Store;
use leansync_plugin_api::phone::{E164, Region};
use serde::{Deserialize, Serialize};

use crate::vcard::Card;

/// How long index keys live.
const INDEX_TTL_SECS: u32 = 2 * 24 * 3600;
/// A full rebuild is due this long after the last one (it also repairs any
/// drift from deltas); call events do it, lookups keep using the old index.
const FULL_EVERY_SECS: u32 = 24 * 3600;
/// The index is used at most this long after its full build, safely before
/// the first of its bucket keys can expire.
const ALIVE_SECS: u32 = INDEX_TTL_SECS - 3600;
/// Target entries per bucket: one lookup reads a few KiB.
const PER_BUCKET: usize = 64;
/// Bucket count bounds (the host allows 10,000 keys per installation; a
/// rebuild briefly holds two generations of two bucket sets).
const MIN_BUCKETS: u32 = 16;
const MAX_BUCKETS: u32 = 1024;

/// One number of one card.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The number in E.164.
    #[serde(rename = "n")]
    pub number: String,
    /// The card's href.
    #[serde(rename = "h")]
    pub href: String,
    /// Display name.
    #[serde(rename = "m")]
    pub name: String,
    /// Organisation.
    #[serde(rename = "o", default, skip_serializing_if = "Option::is_none")]
    pub organisation: Option<String>,
    /// The card's UID.
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<String>,
}

/// The index's header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// Generation of the bucket keys in use.
    pub generation: u32,
    /// Number of buckets of each set.
    pub buckets: u32,
    /// The sync token the index reflects.
    pub sync_token: Option<String>,
    /// Cards indexed.
    pub cards: usize,
    /// Numbers indexed.
    pub numbers: usize,
}

/// A change reported by a sync.
pub enum Change {
    /// The resource at the href now holds these cards.
    Upsert(String, Vec<Card>),
    /// The resource at the href is gone.
    Remove(String),
}

/// The index over a [`Store`] (the host's key-value state in the guest).
pub struct Index<S: Store> {
    store: S,
}

type HrefBucket = BTreeMap<String, Vec<String>>;

impl<S: Store> Index<S> {
    /// The index in `store`.
    pub fn new(store: S) -> Self {
        Self { store }
    }

    /// The header, when a complete index exists (its buckets outlive the
    /// `idx:alive` marker written with them).
    pub fn meta(&self) -> Option<Meta> {
        self.store.get("idx:alive")?;
        serde_json::from_slice(&self.store.get("idx:meta")?).ok()
    }

    /// Whether the daily full rebuild is due.
    pub fn rebuild_due(&self) -> bool {
        self.store.get("idx:full").is_none()
    }

    /// Whether the index was synced within the refresh interval.
    pub fn is_fresh(&self) -> bool {
        self.store.get("idx:fresh").is_some()
    }

    /// Marks the index fresh for `secs`.
    pub fn mark_fresh(&self, secs: u32) {
        let _ = self.store.set("idx:fresh", b"1", secs.max(1));
    }

    /// The entries for `number`, in a stable order (name, then href).
    pub fn find(&self, meta: &Meta, number: &E164) -> Vec<Entry> {
        let key = number.to_string();
        let mut found: Vec<Entry> = self
            .numbers(meta, bucket(&key, meta.buckets))
            .into_iter()
            .filter(|e| e.number == key)
            .collect();
        found.sort_by(|a, b| (&a.name, &a.href).cmp(&(&b.name, &b.href)));
        found.dedup_by(|a, b| a.href == b.href);
        found
    }

    /// Replaces the whole index with `cards` (href, card) as of `token`.
    pub fn rebuild(
        &self,
        cards: Vec<(String, Card)>,
        token: Option<String>,
        region: &Region,
    ) -> Result<Meta, String> {
        let previous: Option<Meta> = self
            .store
            .get("idx:meta")
            .and_then(|raw| serde_json::from_slice(&raw).ok());
        let entries: Vec<Entry> = cards
            .iter()
            .flat_map(|(href, card)| entries_of(href, card, region))
            .collect();
        let buckets = (entries.len() / PER_BUCKET)
            .next_power_of_two()
            .clamp(MIN_BUCKETS as usize, MAX_BUCKETS as usize) as u32;
        let meta = Meta {
            generation: previous
                .as_ref()
                .map_or(1, |m| m.generation.wrapping_add(1)),
            buckets,
            sync_token: token,
            cards: cards.len(),
            numbers: entries.len(),
        };
        let mut by_number: BTreeMap<u32, Vec<Entry>> = BTreeMap::new();
        let mut by_href: BTreeMap<u32, HrefBucket> = BTreeMap::new();
        for e in entries {
            by_href
                .entry(bucket(&e.href, buckets))
                .or_default()
                .entry(e.href.clone())
                .or_default()
                .push(e.number.clone());
            by_number
                .entry(bucket(&e.number, buckets))
                .or_default()
                .push(e);
        }
        for (b, list) in &by_number {
            self.put(&number_key(&meta, *b), list)?;
        }
        for (b, map) in &by_href {
            self.put(&href_key(&meta, *b), map)?;
        }
        self.put("idx:meta", &meta)?;
        self.store.set("idx:full", b"1", FULL_EVERY_SECS)?;
        self.store.set("idx:alive", b"1", ALIVE_SECS)?;
        if let Some(old) = previous.filter(|p| p.generation != meta.generation) {
            for b in 0..old.buckets {
                self.store.delete(&number_key(&old, b));
                self.store.delete(&href_key(&old, b));
            }
        }
        Ok(meta)
    }

    /// Applies a sync delta and records the new `token`.
    pub fn apply(
        &self,
        mut meta: Meta,
        changes: Vec<Change>,
        token: Option<String>,
        region: &Region,
    ) -> Result<Meta, String> {
        let mut number_buckets: BTreeMap<u32, Vec<Entry>> = BTreeMap::new();
        let mut href_buckets: BTreeMap<u32, HrefBucket> = BTreeMap::new();
        for change in changes {
            let (href, cards) = match change {
                Change::Upsert(href, cards) => (href, cards),
                Change::Remove(href) => (href, Vec::new()),
            };
            let hb = bucket(&href, meta.buckets);
            let hrefs = href_buckets
                .entry(hb)
                .or_insert_with(|| self.hrefs(&meta, hb));
            let old = hrefs.remove(&href);
            if old.is_some() {
                meta.cards = meta.cards.saturating_sub(1);
            }
            for number in old.unwrap_or_default() {
                let nb = bucket(&number, meta.buckets);
                let list = number_buckets
                    .entry(nb)
                    .or_insert_with(|| self.numbers(&meta, nb));
                let before = list.len();
                list.retain(|e| e.href != href);
                meta.numbers = meta.numbers.saturating_sub(before - list.len());
            }
            let fresh: Vec<Entry> = cards
                .iter()
                .flat_map(|c| entries_of(&href, c, region))
                .collect();
            if !cards.is_empty() {
                meta.cards += 1;
                hrefs.insert(
                    href.clone(),
                    fresh.iter().map(|e| e.number.clone()).collect(),
                );
            }
            for e in fresh {
                let nb = bucket(&e.number, meta.buckets);
                number_buckets
                    .entry(nb)
                    .or_insert_with(|| self.numbers(&meta, nb))
                    .push(e);
                meta.numbers += 1;
            }
        }
        for (b, list) in &number_buckets {
            self.put(&number_key(&meta, *b), list)?;
        }
        for (b, map) in &href_buckets {
            self.put(&href_key(&meta, *b), map)?;
        }
        meta.sync_token = token;
        self.put("idx:meta", &meta)?;
        Ok(meta)
    }

    fn numbers(&self, meta: &Meta, b: u32) -> Vec<Entry> {
        self.store
            .get(&number_key(meta, b))
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .unwrap_or_default()
    }

    fn hrefs(&self, meta: &Meta, b: u32) -> HrefBucket {
        self.store
            .get(&href_key(meta, b))
            .and_then(|raw| serde_json::from_slice(&raw).ok())
            .unwrap_or_default()
    }

    fn put<T: Serialize>(&self, key: &str, value: &T) -> Result<(), String> {
        let raw = serde_json::to_vec(value).map_err(|e| e.to_string())?;
        self.store.set(key, &raw, INDEX_TTL_SECS)
    }
}

/// The card's numbers that normalise to E.164, once each.
fn entries_of(href: &str, card: &Card, region: &Region) -> Vec<Entry> {
    let numbers: BTreeSet<String> = card
        .phones
        .iter()
        .filter_map(|p| E164::parse(p, region).ok())
        .map(|n| n.to_string())
        .collect();
    numbers
        .into_iter()
        .map(|number| Entry {
            number,
            href: href.to_string(),
            name: card.name.clone(),
            organisation: card.organisation.clone(),
            uid: card.uid.clone(),
        })
        .collect()
}

fn number_key(meta: &Meta, b: u32) -> String {
    format!("idx:{}:n:{b}", meta.generation)
}

fn href_key(meta: &Meta, b: u32) -> String {
    format!("idx:{}:h:{b}", meta.generation)
}

/// FNV-1a: stable across builds and platforms, unlike std's hasher.
fn bucket(key: &str, buckets: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % buckets
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Map(RefCell<HashMap<String, Vec<u8>>>);

    impl Store for &Map {
        fn get(&self, key: &str) -> Option<Vec<u8>> {
            self.0.borrow().get(key).cloned()
        }
        fn set(&self, key: &str, value: &[u8], _ttl: u32) -> Result<(), String> {
            if value.len() > 64 * 1024 {
                return Err(format!("{key} too large"));
            }
            self.0.borrow_mut().insert(key.into(), value.to_vec());
            Ok(())
        }
        fn delete(&self, key: &str) {
            self.0.borrow_mut().remove(key);
        }
    }

    fn card(name: &str, phones: &[&str]) -> Card {
        Card {
            name: name.into(),
            organisation: Some("Muster AG".into()),
            uid: Some(name.to_lowercase()),
            phones: phones.iter().map(|p| p.to_string()).collect(),
        }
    }

    fn n(text: &str) -> E164 {
        E164::parse(text, &Region::default()).unwrap()
    }

    fn names(entries: &[Entry]) -> Vec<&str> {
        entries.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn every_format_of_a_number_is_found_by_e164() {
        let map = Map::default();
        let index = Index::new(&map);
        let meta = index
            .rebuild(
                vec![
                    ("/b/1.vcf".into(), card("Anna", &["044 123 45 67"])),
                    (
                        "/b/2.vcf".into(),
                        card("Beat", &["+41 44 123 45 68", "0041791234567"]),
                    ),
                    ("/b/3.vcf".into(), card("Cleo", &["221"])),
                ],
                Some("t1".into()),
                &Region::default(),
            )
            .unwrap();
        assert_eq!((meta.cards, meta.numbers), (3, 3));
        assert_eq!(names(&index.find(&meta, &n("+41441234567"))), ["Anna"]);
        assert_eq!(names(&index.find(&meta, &n("+41441234568"))), ["Beat"]);
        assert_eq!(names(&index.find(&meta, &n("+41791234567"))), ["Beat"]);
        assert!(index.find(&meta, &n("+41441234569")).is_empty());
        assert_eq!(index.meta(), Some(meta));
    }

    #[test]
    fn shared_numbers_return_every_card_in_name_order() {
        let map = Map::default();
        let index = Index::new(&map);
        let meta = index
            .rebuild(
                vec![
                    ("/b/2.vcf".into(), card("Zora", &["044 123 45 67"])),
                    (
                        "/b/1.vcf".into(),
                        card("Anna", &["+41441234567", "044 123 45 67"]),
                    ),
                ],
                None,
                &Region::default(),
            )
            .unwrap();
        assert_eq!(
            names(&index.find(&meta, &n("+41441234567"))),
            ["Anna", "Zora"]
        );
    }

    #[test]
    fn deltas_add_change_and_remove_cards() {
        let map = Map::default();
        let index = Index::new(&map);
        let meta = index
            .rebuild(
                vec![
                    ("/b/1.vcf".into(), card("Anna", &["044 123 45 67"])),
                    ("/b/2.vcf".into(), card("Beat", &["044 123 45 68"])),
                ],
                Some("t1".into()),
                &Region::default(),
            )
            .unwrap();
        let meta = index
            .apply(
                meta,
                vec![
                    Change::Upsert(
                        "/b/1.vcf".into(),
                        vec![card("Anna Neu", &["079 123 45 67"])],
                    ),
                    Change::Remove("/b/2.vcf".into()),
                    Change::Upsert("/b/3.vcf".into(), vec![card("Cleo", &["044 123 45 69"])]),
                ],
                Some("t2".into()),
                &Region::default(),
            )
            .unwrap();
        assert!(
            index.find(&meta, &n("+41441234567")).is_empty(),
            "old number dropped"
        );
        assert_eq!(names(&index.find(&meta, &n("+41791234567"))), ["Anna Neu"]);
        assert!(
            index.find(&meta, &n("+41441234568")).is_empty(),
            "removed card"
        );
        assert_eq!(names(&index.find(&meta, &n("+41441234569"))), ["Cleo"]);
        assert_eq!((meta.cards, meta.numbers), (2, 2));
        assert_eq!(index.meta().unwrap().sync_token.as_deref(), Some("t2"));
    }

    #[test]
    fn a_rebuild_switches_generation_and_drops_the_old_one() {
        let map = Map::default();
        let index = Index::new(&map);
        let first = index
            .rebuild(
                vec![("/b/1.vcf".into(), card("Anna", &["044 123 45 67"]))],
                None,
                &Region::default(),
            )
            .unwrap();
        let second = index
            .rebuild(
                vec![("/b/2.vcf".into(), card("Beat", &["044 123 45 68"]))],
                None,
                &Region::default(),
            )
            .unwrap();
        assert_eq!(second.generation, first.generation + 1);
        assert!(
            map.0
                .borrow()
                .keys()
                .all(|k| !k.starts_with(&format!("idx:{}:", first.generation)))
        );
        assert!(index.find(&second, &n("+41441234567")).is_empty());
    }

    #[test]
    fn ten_thousand_cards_fit_the_host_limits() {
        let map = Map::default();
        let index = Index::new(&map);
        let cards: Vec<(String, Card)> = (0..10_000)
            .map(|i| {
                let d = format!("{i:07}");
                (
                    format!("/addressbooks/anna/book/c{i}.vcf"),
                    card(&format!("Person {i}"), &[&format!("079{d}")]),
                )
            })
            .collect();
        let meta = index.rebuild(cards, None, &Region::default()).unwrap();
        assert_eq!(meta.numbers, 10_000);
        assert!(map.0.borrow().len() < 1000);
        assert_eq!(
            names(&index.find(&meta, &n("+41790004242"))),
            ["Person 4242"]
        );
    }

    #[test]
    fn markers_say_when_to_rebuild_and_when_the_index_is_gone() {
        let map = Map::default();
        let index = Index::new(&map);
        index.rebuild(vec![], None, &Region::default()).unwrap();
        assert!(index.meta().is_some());
        assert!(!index.rebuild_due());
        map.0.borrow_mut().remove("idx:full");
        assert!(index.rebuild_due());
        assert!(index.meta().is_some(), "still usable until the rebuild");
        map.0.borrow_mut().remove("idx:alive");
        assert!(index.meta().is_none());
        assert!(!index.is_fresh());
        index.mark_fresh(60);
        assert!(index.is_fresh());
    }
}
