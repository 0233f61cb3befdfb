//! Licensing on the call path and at month end:
//! (a) license lookup by LeanSync Key and by called number with 1,000,000
//!     active licenses in the in-memory index, against a bare `HashMap` get
//!     with the same number of entries as the baseline;
//! (b) one licensing change applied to that index (a key rotated, a
//!     license revoked), as every host applies each change record, against
//!     a bare `HashMap` remove and insert;
//! (c) the monthly billing statement for 100,000 licenses, against a bare
//!     decimal sum of 100,000 amounts.
//!
//! Run: `cargo bench -p leansync-host --bench licensing`.

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use chrono::NaiveDate;
use leansync_host::licensing::billing::{self, BillableLicense, Month, Price, PriceList};
use leansync_host::licensing::{Index, keys};
use leansync_host::number::E164;
use leansync_host::plugins::Installation;
use rust_decimal::Decimal;

const LICENSES: usize = 1_000_000;
const LOOKUPS: usize = 200_000;

fn percentiles(mut ns: Vec<u64>) -> (u64, u64, u64) {
    ns.sort_unstable();
    let at = |q: f64| ns[((ns.len() as f64 * q) as usize).min(ns.len() - 1)];
    (at(0.5), at(0.99), at(0.999))
}

fn time_each(n: usize, mut f: impl FnMut(usize)) -> Vec<u64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        f(i);
        out.push(t.elapsed().as_nanos() as u64);
    }
    out
}

fn main() {
    println!("# licensing bench: {LICENSES} licenses, {LOOKUPS} timed lookups each");
    let build = Instant::now();
    let mut idx = Index::default();
    let installations: Vec<Arc<Installation>> = (0..1000)
        .map(|i| {
            Arc::new(Installation {
                id: format!("ins_{i}"),
                plugin: "webhook".into(),
                ..Default::default()
            })
        })
        .collect();
    let mut secrets = Vec::with_capacity(LICENSES);
    let mut numbers = Vec::with_capacity(LICENSES);
    for i in 0..LICENSES {
        let number = E164::parse(&format!("+4144{:07}", i)).expect("number");
        let secret = format!("lsk_benchmark_secret_{i:08}_padding_padding");
        let hash = keys::hash(&secret);
        idx.add(
            &format!("lic_{i}"),
            &format!("cus_{}", i / 100),
            number.clone(),
            installations[i % 1000].clone(),
            false,
            &[(format!("key_{i}"), hash)],
        );
        secrets.push(secret);
        numbers.push(number);
    }
    println!("index built in {:.2} s", build.elapsed().as_secs_f64());

    // Pseudo-random probe order (LCG), the same for every variant.
    let order: Vec<usize> = (0..LOOKUPS)
        .scan(12345u64, |s, _| {
            *s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            Some((*s >> 33) as usize % LICENSES)
        })
        .collect();

    let baseline_map: HashMap<String, u64> = (0..LICENSES)
        .map(|i| (format!("+4144{:07}", i), i as u64))
        .collect();
    let probes: Vec<String> = order.iter().map(|&i| format!("+4144{:07}", i)).collect();
    // Warm-up.
    for p in probes.iter().take(10_000) {
        black_box(baseline_map.get(p));
    }
    let base = percentiles(time_each(LOOKUPS, |i| {
        black_box(baseline_map.get(&probes[i]));
    }));
    let by_number = percentiles(time_each(LOOKUPS, |i| {
        let t = idx.targets(&numbers[order[i]]);
        assert!(!t.is_empty());
        black_box(t);
    }));
    let by_key = percentiles(time_each(LOOKUPS, |i| {
        let s = idx.key(&secrets[order[i]]);
        assert!(s.is_some());
        black_box(s);
    }));
    let sha_only = percentiles(time_each(LOOKUPS, |i| {
        black_box(keys::hash(&secrets[order[i]]));
    }));
    println!(
        "lookup                         median ns   p99 ns   p99.9 ns   p99 ratio to bare HashMap"
    );
    println!(
        "bare HashMap<String,u64> get   {:>9} {:>8} {:>10}   1.00",
        base.0, base.1, base.2
    );
    println!(
        "index by called number         {:>9} {:>8} {:>10}   {:.2}",
        by_number.0,
        by_number.1,
        by_number.2,
        by_number.1 as f64 / base.1 as f64
    );
    println!(
        "index by LeanSync Key          {:>9} {:>8} {:>10}   {:.2}",
        by_key.0,
        by_key.1,
        by_key.2,
        by_key.1 as f64 / base.1 as f64
    );
    println!(
        "  of which SHA-256 of the key  {:>9} {:>8} {:>10}",
        sha_only.0, sha_only.1, sha_only.2
    );

    // One change at a time, as the change feed applies it: 10,000 key
    // rotations (the license's part with a new key replaces it) and 10,000
    // revocations (the license leaves the index), on distinct licenses.
    const CHANGES: usize = 10_000;
    let mut bare = baseline_map;
    let bare_change = percentiles(time_each(CHANGES, |i| {
        let k = &probes[i];
        let v = bare.remove(k).unwrap_or_default();
        bare.insert(k.clone(), v + 1);
    }));
    let mut rotated = std::collections::HashSet::new();
    let picks: Vec<usize> = order
        .iter()
        .copied()
        .filter(|k| rotated.insert(*k))
        .take(2 * CHANGES)
        .collect();
    let parts: Vec<Index> = picks[..CHANGES]
        .iter()
        .map(|&k| {
            let mut part = Index::default();
            let secret = format!("lsk_benchmark_rotated_{k:08}_padding_padding");
            part.add(
                &format!("lic_{k}"),
                &format!("cus_{}", k / 100),
                numbers[k].clone(),
                installations[k % 1000].clone(),
                false,
                &[(format!("key_{k}_2"), keys::hash(&secret))],
            );
            part
        })
        .collect();
    let mut parts = parts.into_iter();
    let rotate = percentiles(time_each(CHANGES, |i| {
        let k = picks[i];
        black_box(idx.replace_license(&format!("lic_{k}"), parts.next()));
    }));
    let revoke = percentiles(time_each(CHANGES, |i| {
        let k = picks[CHANGES + i];
        black_box(idx.replace_license(&format!("lic_{k}"), None));
    }));
    assert!(
        idx.key(&secrets[picks[0]]).is_none(),
        "the old key still opens"
    );
    assert!(
        idx.targets(&numbers[picks[CHANGES]]).is_empty(),
        "revoked but routed"
    );
    println!(
        "change applied to the index     median ns   p99 ns   p99.9 ns   p99 ratio to bare HashMap"
    );
    println!(
        "bare HashMap remove + insert    {:>9} {:>8} {:>10}   1.00",
        bare_change.0, bare_change.1, bare_change.2
    );
    for (what, r) in [
        ("key rotated (replace)", rotate),
        ("license revoked", revoke),
    ] {
        println!(
            "{what:<31} {:>9} {:>8} {:>10}   {:.2}",
            r.0,
            r.1,
            r.2,
            r.1 as f64 / bare_change.1 as f64
        );
    }

    // Billing: 100,000 licenses over 5 connectors, a mid-month price change.
    let month = Month::parse("2028-02").unwrap();
    let d = |s: &str| NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap();
    let mut prices = Vec::new();
    for c in 0..5 {
        prices.push(Price {
            connector: format!("c{c}"),
            valid_from: d("2027-01-01"),
            monthly_chf: Decimal::new(950 + c * 100, 2),
        });
        prices.push(Price {
            connector: format!("c{c}"),
            valid_from: d("2028-02-15"),
            monthly_chf: Decimal::new(1050 + c * 100, 2),
        });
    }
    let prices = PriceList::new(prices);
    let licenses: Vec<BillableLicense> = (0..100_000)
        .map(|i| BillableLicense {
            license_id: format!("lic_{i}"),
            installation_id: format!("ins_{}", i % 1000),
            connector: format!("c{}", i % 5),
            number: Some(format!("+4144{:07}", i)),
            provisioned_on: d("2028-01-10") + chrono::Days::new((i % 40) as u64),
            cancelled_on: (i % 7 == 0).then(|| d("2028-02-20")),
        })
        .collect();
    let mut runs = Vec::new();
    let mut base_runs = Vec::new();
    let amounts: Vec<Decimal> = (0..100_000)
        .map(|i| Decimal::new(950 + (i % 500), 2))
        .collect();
    for _ in 0..7 {
        let t = Instant::now();
        let st = billing::statement("cus_bench", month, &licenses, &prices);
        runs.push(t.elapsed().as_secs_f64() * 1000.0);
        black_box(st);
        let t = Instant::now();
        black_box(amounts.iter().copied().sum::<Decimal>());
        base_runs.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    runs.sort_by(f64::total_cmp);
    base_runs.sort_by(f64::total_cmp);
    println!(
        "billing 100,000 licenses, 7 runs: median {:.1} ms (min {:.1}, max {:.1}); bare decimal sum of 100,000 amounts: median {:.2} ms; ratio {:.0}x",
        runs[3],
        runs[0],
        runs[6],
        base_runs[3],
        runs[3] / base_runs[3]
    );
}
