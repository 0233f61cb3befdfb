//! Per-installation delivery counters and plugin-time percentiles, for the
//! API and Prometheus `/metrics`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

/// Samples kept per installation for percentiles.
const WINDOW: usize = 2048;

#[derive(Default)]
struct Entry {
    delivered: u64,
    retried: u64,
    dead: u64,
    last_error: Option<String>,
    samples: VecDeque<u32>,
}

/// What the API shows per installation.
#[derive(Debug, Clone, Serialize)]
pub struct InstallationFlow {
    /// Installation id.
    pub installation_id: String,
    /// Deliveries accepted by the plugin.
    pub delivered: u64,
    /// Attempts that will be retried.
    pub retried: u64,
    /// Dead letters.
    pub dead: u64,
    /// Last error seen.
    pub last_error: Option<String>,
    /// Median plugin time over the recent window, microseconds.
    pub p50_us: u64,
    /// 99th percentile plugin time, microseconds.
    pub p99_us: u64,
}

/// Delivery metrics of every installation.
#[derive(Default)]
pub struct Metrics {
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl Metrics {
    pub(super) fn observe(&self, installation: &str, took: Duration) {
        let mut m = self.entries.lock();
        let e = m.entry(installation.to_owned()).or_default();
        if e.samples.len() == WINDOW {
            e.samples.pop_front();
        }
        e.samples
            .push_back(took.as_micros().min(u32::MAX as u128) as u32);
    }

    pub(super) fn delivered(&self, installation: &str) {
        self.entries
            .lock()
            .entry(installation.to_owned())
            .or_default()
            .delivered += 1;
    }

    pub(super) fn retried(&self, installation: &str, error: &str) {
        let mut m = self.entries.lock();
        let e = m.entry(installation.to_owned()).or_default();
        e.retried += 1;
        e.last_error = Some(error.to_owned());
    }

    pub(super) fn dead(&self, installation: &str, error: &str) {
        let mut m = self.entries.lock();
        let e = m.entry(installation.to_owned()).or_default();
        e.dead += 1;
        e.last_error = Some(error.to_owned());
    }

    /// Snapshot of every installation.
    pub fn snapshot(&self) -> Vec<InstallationFlow> {
        self.entries
            .lock()
            .iter()
            .map(|(id, e)| {
                let mut s: Vec<u32> = e.samples.iter().copied().collect();
                s.sort_unstable();
                let pct = |p: usize| {
                    s.get((s.len() * p / 100).min(s.len().saturating_sub(1)))
                        .copied()
                        .unwrap_or(0) as u64
                };
                InstallationFlow {
                    installation_id: id.clone(),
                    delivered: e.delivered,
                    retried: e.retried,
                    dead: e.dead,
                    last_error: e.last_error.clone(),
                    p50_us: pct(50),
                    p99_us: pct(99),
                }
            })
            .collect()
    }

    /// Prometheus text exposition of the snapshot.
    pub fn prometheus(&self) -> String {
        let snap = self.snapshot();
        let mut out = String::new();
        type Series = (&'static str, &'static str, fn(&InstallationFlow) -> f64);
        let series: [Series; 5] = [
            ("leansync_deliveries_delivered_total", "counter", |f| {
                f.delivered as f64
            }),
            ("leansync_deliveries_retried_total", "counter", |f| {
                f.retried as f64
            }),
            ("leansync_deliveries_dead_total", "counter", |f| {
                f.dead as f64
            }),
            ("leansync_plugin_time_p50_seconds", "gauge", |f| {
                f.p50_us as f64 / 1e6
            }),
            ("leansync_plugin_time_p99_seconds", "gauge", |f| {
                f.p99_us as f64 / 1e6
            }),
        ];
        for (name, kind, get) in series {
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for f in &snap {
                let _ = writeln!(
                    out,
                    "{name}{{installation=\"{}\"}} {}",
                    escape(&f.installation_id),
                    get(f)
                );
            }
        }
        out
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
