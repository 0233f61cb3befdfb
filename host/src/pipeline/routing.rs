//! A fixed routing table: number → targets. Used where no licensing store is
//! involved (benchmarks, the plugin test harness, tests).

use std::collections::HashMap;

use parking_lot::RwLock;

use super::{Routing, Target};
use crate::number::E164;

/// Routing from an in-memory table.
#[derive(Default)]
pub struct StaticRouting {
    by_number: RwLock<HashMap<E164, Vec<Target>>>,
    owners: RwLock<HashMap<E164, String>>,
}

impl StaticRouting {
    /// Adds a target for `number`.
    pub fn add(&self, number: E164, target: Target) {
        self.owners
            .write()
            .insert(number.clone(), target.customer_id.clone());
        self.by_number
            .write()
            .entry(number)
            .or_default()
            .push(target);
    }

    /// Removes every target.
    pub fn clear(&self) {
        self.by_number.write().clear();
    }
}

impl Routing for StaticRouting {
    fn targets(&self, number: &E164) -> Vec<Target> {
        self.by_number
            .read()
            .get(number)
            .cloned()
            .unwrap_or_default()
    }

    fn installation(&self, installation_id: &str) -> Option<Target> {
        self.by_number
            .read()
            .values()
            .flatten()
            .find(|t| t.installation.id == installation_id)
            .cloned()
    }

    fn customer_of(&self, number: &E164) -> Option<String> {
        self.owners.read().get(number).cloned()
    }
}
