//! Monthly billing statements: one statement per customer and month, priced
//! from a [`PriceList`] in CHF and prorated by day, in exact decimal
//! arithmetic ([`Decimal`], never floats).
//!
//! # The rule
//!
//! A license is charged for every calendar day (UTC) from its provisioning day
//! to its cancellation day, both inclusive (not cancelled: to the month's last
//! day). Each charged day costs the price valid on that day divided by the
//! number of days of that month. So a full month costs exactly the monthly
//! price whatever the month's length; provisioning and cancelling on the same
//! day charges one day; a price change mid-month applies from its valid_from
//! day. Licenses with no charged day in the month produce no line. Line
//! amounts are shown rounded to 0.01; the statement total is the exact sum of
//! all unrounded day charges rounded to the nearest 0.05 CHF (Swiss cash
//! rounding, half away from zero).
//!
//! # Notes
//!
//! - Charged days without any valid price (no price for the connector, or the
//!   day is before the connector's first `valid_from`) charge 0 and the
//!   connector is listed in [`Statement::missing_prices`].
//! - All rounding (0.01 for display, 0.05 for the total) is half away from
//!   zero. The subtotal is the exact sum rounded to 0.01, so it can differ by
//!   a few centimes from the sum of the displayed line amounts.
//! - The computation walks the price segments of each license (not its days),
//!   so it does no per-day work or allocation.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate};
use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};

/// The statement currency.
pub const CURRENCY: &str = "CHF";

/// A license as billing sees it: what it connects and when it was live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillableLicense {
    /// License id.
    pub license_id: String,
    /// Installation the license belongs to.
    pub installation_id: String,
    /// Connector kind; selects the price in the [`PriceList`].
    pub connector: String,
    /// Phone number bound to the license, if any (shown on the statement).
    pub number: Option<String>,
    /// First charged day (UTC), inclusive.
    pub provisioned_on: NaiveDate,
    /// Last charged day (UTC), inclusive; `None` while the license is active.
    pub cancelled_on: Option<NaiveDate>,
}

/// A monthly price of one connector, valid from a day until the next price
/// of the same connector takes over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// Connector kind.
    pub connector: String,
    /// First day (UTC) this price applies to.
    pub valid_from: NaiveDate,
    /// Price of one full month in CHF.
    pub monthly_chf: Decimal,
}

/// All prices of all connectors, kept sorted by connector and `valid_from`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PriceList(Vec<Price>);

impl PriceList {
    /// Builds a price list. If one connector has several prices with the same
    /// `valid_from`, the one given last wins.
    pub fn new(mut prices: Vec<Price>) -> Self {
        // Stable sort keeps the input order among equal keys ...
        prices.sort_by(|a, b| {
            (a.connector.as_str(), a.valid_from).cmp(&(b.connector.as_str(), b.valid_from))
        });
        // ... and this keeps the last of each run of equal keys.
        prices.dedup_by(|later, kept| {
            let same = later.connector == kept.connector && later.valid_from == kept.valid_from;
            if same {
                std::mem::swap(later, kept);
            }
            same
        });
        PriceList(prices)
    }

    /// All prices, sorted by connector and `valid_from`.
    pub fn prices(&self) -> &[Price] {
        &self.0
    }

    /// The monthly price of `connector` on `day`: the price with the latest
    /// `valid_from` on or before `day`, or `None` if there is none.
    pub fn price_on(&self, connector: &str, day: NaiveDate) -> Option<Decimal> {
        let prices = self.of(connector);
        let after = prices.partition_point(|p| p.valid_from <= day);
        after.checked_sub(1).map(|i| prices[i].monthly_chf)
    }

    /// The prices of one connector, sorted by `valid_from`.
    fn of(&self, connector: &str) -> &[Price] {
        let start = self.0.partition_point(|p| p.connector.as_str() < connector);
        let len = self.0[start..].partition_point(|p| p.connector == connector);
        &self.0[start..start + len]
    }
}

/// A calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Month {
    /// Year, e.g. 2026.
    pub year: i32,
    /// Month, 1..=12.
    pub month: u32,
}

impl Month {
    /// Parses exactly `YYYY-MM`, e.g. `2026-02`.
    pub fn parse(s: &str) -> Result<Month, String> {
        let bad = || format!("month '{s}' is invalid; use YYYY-MM, e.g. 2026-02");
        let b = s.as_bytes();
        let shape_ok = b.len() == 7
            && b[4] == b'-'
            && b[..4].iter().all(u8::is_ascii_digit)
            && b[5..].iter().all(u8::is_ascii_digit);
        if !shape_ok {
            return Err(bad());
        }
        let year: i32 = s[..4].parse().map_err(|_| bad())?;
        let month: u32 = s[5..].parse().map_err(|_| bad())?;
        if NaiveDate::from_ymd_opt(year, month, 1).is_none() {
            return Err(bad());
        }
        Ok(Month { year, month })
    }

    /// The first day of the month.
    ///
    /// # Panics
    ///
    /// If `month` is not in 1..=12 (impossible for a parsed month).
    pub fn first_day(&self) -> NaiveDate {
        NaiveDate::from_ymd_opt(self.year, self.month, 1)
            .unwrap_or_else(|| panic!("invalid month {}-{}", self.year, self.month))
    }

    /// The last day of the month.
    ///
    /// # Panics
    ///
    /// As [`Month::first_day`].
    pub fn last_day(&self) -> NaiveDate {
        let first = self.first_day();
        // Day 28 exists in every month; +4 days is always in the next month.
        let next = first.with_day(28).unwrap() + chrono::Days::new(4);
        next.with_day(1).unwrap().pred_opt().unwrap()
    }

    /// The number of days of the month: 28, 29, 30 or 31.
    ///
    /// # Panics
    ///
    /// As [`Month::first_day`].
    pub fn days(&self) -> u32 {
        self.last_day().day()
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for Month {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Month::parse(s)
    }
}

/// One statement line: one license's charged days in the month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Line {
    /// License id.
    pub license_id: String,
    /// Installation id.
    pub installation_id: String,
    /// Connector kind.
    pub connector: String,
    /// Phone number, if any.
    pub number: Option<String>,
    /// First charged day in the month.
    pub from: NaiveDate,
    /// Last charged day in the month.
    pub to: NaiveDate,
    /// Number of charged days, `from` to `to` inclusive.
    pub days: u32,
    /// Amount in CHF, rounded to 0.01 (half away from zero) for display.
    pub amount_chf: Decimal,
}

/// A customer's statement for one month.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Statement {
    /// Customer id.
    pub customer_id: String,
    /// Month as `YYYY-MM`.
    pub month: String,
    /// Always `"CHF"`.
    pub currency: &'static str,
    /// One line per license with at least one charged day, in input order.
    pub lines: Vec<Line>,
    /// Exact sum of all day charges, rounded to 0.01 for display.
    pub subtotal_chf: Decimal,
    /// Exact sum of all day charges, rounded to the nearest 0.05 (half away
    /// from zero). This is the amount due.
    pub total_chf: Decimal,
    /// Connectors (sorted, unique) with charged days but no price; those days
    /// charge 0.
    pub missing_prices: Vec<String>,
}

impl Statement {
    /// The statement as CSV: a header
    /// `customer,month,license,installation,connector,number,from,to,days,amount_chf`,
    /// one row per line, then a row with license `TOTAL` and amount
    /// [`Statement::total_chf`].
    pub fn to_csv(&self) -> String {
        let mut w = csv::Writer::from_writer(Vec::new());
        let mut row = |fields: [&str; 10]| {
            w.write_record(fields)
                .expect("writing CSV to memory cannot fail");
        };
        row([
            "customer",
            "month",
            "license",
            "installation",
            "connector",
            "number",
            "from",
            "to",
            "days",
            "amount_chf",
        ]);
        for l in &self.lines {
            row([
                &self.customer_id,
                &self.month,
                &l.license_id,
                &l.installation_id,
                &l.connector,
                l.number.as_deref().unwrap_or(""),
                &l.from.to_string(),
                &l.to.to_string(),
                &l.days.to_string(),
                &l.amount_chf.to_string(),
            ]);
        }
        row([
            &self.customer_id,
            &self.month,
            "TOTAL",
            "",
            "",
            "",
            "",
            "",
            "",
            &self.total_chf.to_string(),
        ]);
        let bytes = w.into_inner().expect("flushing CSV to memory cannot fail");
        String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
    }
}

/// Computes `customer_id`'s statement for `month` from `licenses` (all of
/// that customer's licenses; those without a charged day in the month are
/// skipped) and `prices`. See the module documentation for the rule.
pub fn statement(
    customer_id: &str,
    month: Month,
    licenses: &[BillableLicense],
    prices: &PriceList,
) -> Statement {
    let first = month.first_day();
    let last = month.last_day();
    let month_days = Decimal::from(month.days());

    let mut lines = Vec::new();
    let mut missing = BTreeSet::new();
    // Sum over all lines of (days * monthly price): exact, since it only adds
    // and multiplies by whole numbers. Divided by the month's days once.
    let mut total_day_prices = Decimal::ZERO;

    for lic in licenses {
        let from = lic.provisioned_on.max(first);
        let to = lic.cancelled_on.map_or(last, |c| c.min(last));
        if from > to {
            continue;
        }
        let (day_prices, unpriced) = day_prices(prices.of(&lic.connector), from, to);
        if unpriced && !missing.contains(lic.connector.as_str()) {
            missing.insert(lic.connector.clone());
        }
        total_day_prices += day_prices;
        lines.push(Line {
            license_id: lic.license_id.clone(),
            installation_id: lic.installation_id.clone(),
            connector: lic.connector.clone(),
            number: lic.number.clone(),
            from,
            to,
            days: days_between(from, to),
            amount_chf: round_to(day_prices / month_days, 2),
        });
    }

    let exact_total = total_day_prices / month_days;
    Statement {
        customer_id: customer_id.to_string(),
        month: month.to_string(),
        currency: CURRENCY,
        lines,
        subtotal_chf: round_to(exact_total, 2),
        total_chf: round_to_005(total_day_prices, month_days),
        missing_prices: missing.into_iter().collect(),
    }
}

/// Sum of `days * monthly price` over the price segments of `from..=to`
/// (`prices` is one connector's list sorted by `valid_from`), and whether any
/// of those days had no price.
fn day_prices(prices: &[Price], from: NaiveDate, to: NaiveDate) -> (Decimal, bool) {
    let mut sum = Decimal::ZERO;
    let mut unpriced = false;
    let mut add = |price: Option<Decimal>, days: u32| match price {
        _ if days == 0 => {}
        Some(p) => sum += p * Decimal::from(days),
        None => unpriced = true,
    };

    // The price valid on `from`, then each change up to `to`.
    let next = prices.partition_point(|p| p.valid_from <= from);
    let mut price = next.checked_sub(1).map(|i| prices[i].monthly_chf);
    let mut start = from;
    for change in prices[next..].iter().take_while(|p| p.valid_from <= to) {
        add(price, days_between(start, change.valid_from) - 1);
        price = Some(change.monthly_chf);
        start = change.valid_from;
    }
    add(price, days_between(start, to));
    (sum, unpriced)
}

/// Days from `from` to `to`, both inclusive (`from <= to`).
fn days_between(from: NaiveDate, to: NaiveDate) -> u32 {
    u32::try_from((to - from).num_days() + 1).expect("from <= to within one month")
}

/// `x` rounded to `dp` decimals, half away from zero, shown with exactly `dp`
/// decimals (no negative zero).
fn round_to(x: Decimal, dp: u32) -> Decimal {
    let mut r = x.round_dp_with_strategy(dp, RoundingStrategy::MidpointAwayFromZero);
    r.rescale(dp);
    if r.is_zero() {
        r.set_sign_positive(true);
    }
    r
}

/// `day_prices / month_days` rounded to the nearest 0.05, half away from zero,
/// shown with 2 decimals.
///
/// Rounds `day_prices * 20 / month_days` to a whole number: the product is
/// exact, and the division (by at most 31) is either exact, so a true midpoint
/// is seen as one, or has a short repeating expansion that the 28-digit
/// quotient cannot turn into a false midpoint.
fn round_to_005(day_prices: Decimal, month_days: Decimal) -> Decimal {
    let twentieths = (day_prices * Decimal::from(20) / month_days)
        .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero);
    round_to(twentieths / Decimal::from(20), 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn month(s: &str) -> Month {
        Month::parse(s).unwrap()
    }

    fn price(connector: &str, valid_from: &str, monthly: &str) -> Price {
        Price {
            connector: connector.to_string(),
            valid_from: day(valid_from),
            monthly_chf: d(monthly),
        }
    }

    /// teams 30.00, webex 12.00, fax 30.75 since 2020; zoom 10.00, then 20.00
    /// from 2026-03-16; late 31.00 only from 2026-03-11; no price for "ghost".
    fn price_list() -> PriceList {
        PriceList::new(vec![
            price("zoom", "2026-03-16", "20.00"),
            price("teams", "2020-01-01", "30.00"),
            price("webex", "2020-01-01", "12.00"),
            price("fax", "2020-01-01", "30.75"),
            price("zoom", "2020-01-01", "10.00"),
            price("late", "2026-03-11", "31.00"),
        ])
    }

    fn license(n: usize, connector: &str, from: &str, to: Option<&str>) -> BillableLicense {
        BillableLicense {
            license_id: format!("lic-{n}"),
            installation_id: format!("inst-{n}"),
            connector: connector.to_string(),
            number: Some(format!("+4144000000{n}")),
            provisioned_on: day(from),
            cancelled_on: to.map(day),
        }
    }

    struct Case {
        name: &'static str,
        month: &'static str,
        /// (connector, provisioned_on, cancelled_on)
        licenses: &'static [(&'static str, &'static str, Option<&'static str>)],
        /// Expected lines: (days, amount_chf).
        lines: &'static [(u32, &'static str)],
        subtotal: &'static str,
        total: &'static str,
        missing: &'static [&'static str],
    }

    #[rustfmt::skip]
    const CASES: &[Case] = &[
        // 31 days * 30.00/31 = 30.00 -> 30.00
        Case { name: "full 31-day month", month: "2026-03",
            licenses: &[("teams", "2025-06-01", None)],
            lines: &[(31, "30.00")], subtotal: "30.00", total: "30.00", missing: &[] },
        // 30 days * 30.00/30 = 30.00 -> 30.00
        Case { name: "full 30-day month", month: "2026-04",
            licenses: &[("teams", "2026-04-01", None)],
            lines: &[(30, "30.00")], subtotal: "30.00", total: "30.00", missing: &[] },
        // 28 days * 30.00/28 = 30.00 -> 30.00
        Case { name: "full February 2027 (28 days)", month: "2027-02",
            licenses: &[("teams", "2026-01-01", None)],
            lines: &[(28, "30.00")], subtotal: "30.00", total: "30.00", missing: &[] },
        // 29 days * 30.00/29 = 30.00 -> 30.00
        Case { name: "full February 2028 (leap, 29 days)", month: "2028-02",
            licenses: &[("teams", "2026-01-01", None)],
            lines: &[(29, "30.00")], subtotal: "30.00", total: "30.00", missing: &[] },
        // 1 day * 30.00/29 = 1.0344.. -> line 1.03, total 1.05
        Case { name: "provisioned on leap day", month: "2028-02",
            licenses: &[("teams", "2028-02-29", None)],
            lines: &[(1, "1.03")], subtotal: "1.03", total: "1.05", missing: &[] },
        // 1 day * 30.00/31 = 0.9677.. -> line 0.97, total 0.95
        Case { name: "provisioned and cancelled same day", month: "2026-03",
            licenses: &[("teams", "2026-03-10", Some("2026-03-10"))],
            lines: &[(1, "0.97")], subtotal: "0.97", total: "0.95", missing: &[] },
        // 22..31 = 10 days * 30.00/31 = 9.677.. -> line 9.68, total 9.70
        Case { name: "provisioned mid-month", month: "2026-03",
            licenses: &[("teams", "2026-03-22", None)],
            lines: &[(10, "9.68")], subtotal: "9.68", total: "9.70", missing: &[] },
        // 1..15 = 15 days * 30.00/31 = 14.516.. -> line 14.52, total 14.50
        Case { name: "cancelled mid-month", month: "2026-03",
            licenses: &[("teams", "2026-01-05", Some("2026-03-15"))],
            lines: &[(15, "14.52")], subtotal: "14.52", total: "14.50", missing: &[] },
        // 30 days * 12.00/30 = 12.00 -> 12.00
        Case { name: "provisioned previous month, cancelled next month", month: "2026-04",
            licenses: &[("webex", "2026-03-20", Some("2026-05-03"))],
            lines: &[(30, "12.00")], subtotal: "12.00", total: "12.00", missing: &[] },
        // no charged day -> no line, 0.00
        Case { name: "provisioned after the month", month: "2026-03",
            licenses: &[("teams", "2026-04-01", None)],
            lines: &[], subtotal: "0.00", total: "0.00", missing: &[] },
        // no charged day -> no line, 0.00
        Case { name: "cancelled before the month", month: "2026-03",
            licenses: &[("teams", "2026-01-01", Some("2026-02-28"))],
            lines: &[], subtotal: "0.00", total: "0.00", missing: &[] },
        // (15 days * 10.00 + 16 days * 20.00)/31 = 470/31 = 15.161.. -> line 15.16, total 15.15
        Case { name: "price change mid-month", month: "2026-03",
            licenses: &[("zoom", "2026-01-01", None)],
            lines: &[(31, "15.16")], subtotal: "15.16", total: "15.15", missing: &[] },
        // 20..31 = 12 days * 20.00/31 = 240/31 = 7.741.. -> line 7.74, total 7.75
        Case { name: "provisioned after a mid-month price change", month: "2026-03",
            licenses: &[("zoom", "2026-03-20", None)],
            lines: &[(12, "7.74")], subtotal: "7.74", total: "7.75", missing: &[] },
        // 1..15 = 15 days * 10.00/31 = 150/31 = 4.838.. -> line 4.84, total 4.85
        Case { name: "cancelled the day before a price change", month: "2026-03",
            licenses: &[("zoom", "2026-02-01", Some("2026-03-15"))],
            lines: &[(15, "4.84")], subtotal: "4.84", total: "4.85", missing: &[] },
        // 30 days * 20.00/30 = 20.00 (new price all month) -> 20.00
        Case { name: "month after a price change", month: "2026-04",
            licenses: &[("zoom", "2026-01-01", None)],
            lines: &[(30, "20.00")], subtotal: "20.00", total: "20.00", missing: &[] },
        // teams 31 * 30.00/31 = 30.00; webex 17..31 = 15 days * 12.00/31 = 5.806..
        // exact 35.806.. -> subtotal 35.81, total 35.80
        Case { name: "two licenses of different connectors", month: "2026-03",
            licenses: &[("teams", "2026-01-01", None), ("webex", "2026-03-17", None)],
            lines: &[(31, "30.00"), (15, "5.81")], subtotal: "35.81", total: "35.80", missing: &[] },
        // 30..31 = 2 days * 30.00/31 = 1.935.. -> line 1.94, total rounds up to 1.95
        Case { name: "rounding to 0.05 up", month: "2026-03",
            licenses: &[("teams", "2026-03-30", None)],
            lines: &[(2, "1.94")], subtotal: "1.94", total: "1.95", missing: &[] },
        // 28..31 = 4 days * 30.00/31 = 3.870.. -> line 3.87, total rounds down to 3.85
        Case { name: "rounding to 0.05 down", month: "2026-03",
            licenses: &[("teams", "2026-03-28", None)],
            lines: &[(4, "3.87")], subtotal: "3.87", total: "3.85", missing: &[] },
        // 1 day * 30.75/30 = 1.025 exactly: midpoint -> line 1.03, total 1.05 (away from zero)
        Case { name: "midpoint rounds away from zero", month: "2026-04",
            licenses: &[("fax", "2026-04-30", None)],
            lines: &[(1, "1.03")], subtotal: "1.03", total: "1.05", missing: &[] },
        // 4 * (1 day * 30.00/31) = 120/31 = 3.870.. -> 3.85
        // (not the rounded lines: 4 * 0.97 = 3.88 -> 3.90)
        Case { name: "total sums unrounded day charges", month: "2026-03",
            licenses: &[
                ("teams", "2026-03-01", Some("2026-03-01")),
                ("teams", "2026-03-02", Some("2026-03-02")),
                ("teams", "2026-03-03", Some("2026-03-03")),
                ("teams", "2026-03-04", Some("2026-03-04")),
            ],
            lines: &[(1, "0.97"), (1, "0.97"), (1, "0.97"), (1, "0.97")],
            subtotal: "3.87", total: "3.85", missing: &[] },
        // no price at all: 31 days * 0 = 0.00, reported missing
        Case { name: "missing price reported", month: "2026-03",
            licenses: &[("ghost", "2026-01-01", None)],
            lines: &[(31, "0.00")], subtotal: "0.00", total: "0.00", missing: &["ghost"] },
        // 1..10 no price (0), 11..31 = 21 days * 31.00/31 = 21.00 -> 21.00, reported missing
        Case { name: "price starts mid-month", month: "2026-03",
            licenses: &[("late", "2026-01-01", None)],
            lines: &[(31, "21.00")], subtotal: "21.00", total: "21.00", missing: &["late"] },
        // 1 day (2026-03-01) * 30.00/31 = 0.967.. -> line 0.97, total 0.95
        Case { name: "cancelled on the first day of the month", month: "2026-03",
            licenses: &[("teams", "2026-02-01", Some("2026-03-01"))],
            lines: &[(1, "0.97")], subtotal: "0.97", total: "0.95", missing: &[] },
        // 1 day (2026-04-30) * 12.00/30 = 0.40 -> 0.40
        Case { name: "provisioned on the last day", month: "2026-04",
            licenses: &[("webex", "2026-04-30", None)],
            lines: &[(1, "0.40")], subtotal: "0.40", total: "0.40", missing: &[] },
        // cancelled before provisioned (bad data) -> no charged day, no line
        Case { name: "cancelled before provisioned", month: "2026-03",
            licenses: &[("teams", "2026-03-10", Some("2026-03-09"))],
            lines: &[], subtotal: "0.00", total: "0.00", missing: &[] },
        // no licenses -> 0.00
        Case { name: "no licenses", month: "2026-03",
            licenses: &[], lines: &[], subtotal: "0.00", total: "0.00", missing: &[] },
    ];

    #[test]
    fn statement_cases() {
        let prices = price_list();
        for case in CASES {
            let licenses: Vec<_> = case
                .licenses
                .iter()
                .enumerate()
                .map(|(i, (c, from, to))| license(i, c, from, *to))
                .collect();
            let s = statement("cust-1", month(case.month), &licenses, &prices);
            let name = case.name;
            assert_eq!(s.customer_id, "cust-1", "{name}");
            assert_eq!(s.month, case.month, "{name}");
            assert_eq!(s.currency, "CHF", "{name}");
            let got: Vec<_> = s.lines.iter().map(|l| (l.days, l.amount_chf)).collect();
            let want: Vec<_> = case.lines.iter().map(|(days, a)| (*days, d(a))).collect();
            assert_eq!(got, want, "{name}: lines");
            for l in &s.lines {
                assert_eq!(l.amount_chf.scale(), 2, "{name}: line scale");
                assert_eq!(l.days, days_between(l.from, l.to), "{name}: line days");
            }
            assert_eq!(s.subtotal_chf, d(case.subtotal), "{name}: subtotal");
            assert_eq!(s.subtotal_chf.to_string(), case.subtotal, "{name}");
            assert_eq!(s.total_chf, d(case.total), "{name}: total");
            assert_eq!(s.total_chf.to_string(), case.total, "{name}");
            assert_eq!(s.missing_prices, case.missing, "{name}: missing");
        }
        assert!(CASES.len() >= 15);
    }

    /// The segment walk agrees with a naive day-by-day walk using `price_on`,
    /// for every provisioning/cancellation pair on a grid around price changes.
    #[test]
    fn segments_match_day_by_day() {
        let prices = PriceList::new(vec![
            // 2026-03-01 and 02 have no price
            price("p", "2026-03-03", "11.10"),
            price("p", "2026-03-04", "12.35"),
            price("p", "2026-03-16", "0"),
            price("p", "2026-03-17", "99.95"),
            price("p", "2026-03-31", "7.00"),
            price("p", "2026-04-01", "8.00"),
        ]);
        let m = month("2026-03");
        let grid: Vec<NaiveDate> = day("2026-02-25")
            .iter_days()
            .take_while(|d| *d <= day("2026-04-02"))
            .collect();
        for &from in &grid {
            for to in std::iter::once(None).chain(grid.iter().copied().map(Some)) {
                let lic = license(1, "p", &from.to_string(), None);
                let lic = BillableLicense {
                    cancelled_on: to,
                    ..lic
                };
                let s = statement("c", m, std::slice::from_ref(&lic), &prices);

                let (mut sum, mut days, mut unpriced) = (Decimal::ZERO, 0, false);
                for day in m.first_day().iter_days().take(m.days() as usize) {
                    if day < from || to.is_some_and(|t| day > t) {
                        continue;
                    }
                    days += 1;
                    match prices.price_on("p", day) {
                        Some(p) => sum += p,
                        None => unpriced = true,
                    }
                }
                let ctx = format!("{from} .. {to:?}");
                if days == 0 {
                    assert!(s.lines.is_empty(), "{ctx}");
                    continue;
                }
                let exact = sum / Decimal::from(m.days());
                assert_eq!(s.lines.len(), 1, "{ctx}");
                assert_eq!(s.lines[0].days, days, "{ctx}");
                assert_eq!(s.lines[0].amount_chf, round_to(exact, 2), "{ctx}");
                assert_eq!(s.subtotal_chf, round_to(exact, 2), "{ctx}");
                assert_eq!(
                    s.total_chf,
                    round_to_005(sum, Decimal::from(m.days())),
                    "{ctx}"
                );
                assert_eq!(s.missing_prices.is_empty(), !unpriced, "{ctx}");
            }
        }
    }

    #[test]
    fn line_fields_are_the_clipped_interval() {
        let lic = license(7, "webex", "2026-03-20", Some("2026-05-03"));
        let s = statement("c", month("2026-04"), &[lic], &price_list());
        let l = &s.lines[0];
        assert_eq!(l.license_id, "lic-7");
        assert_eq!(l.installation_id, "inst-7");
        assert_eq!(l.connector, "webex");
        assert_eq!(l.number.as_deref(), Some("+41440000007"));
        assert_eq!((l.from, l.to), (day("2026-04-01"), day("2026-04-30")));
    }

    #[test]
    fn missing_prices_are_sorted_and_unique() {
        let lics = [
            license(1, "zeta", "2026-01-01", None),
            license(2, "alpha", "2026-01-01", None),
            license(3, "zeta", "2026-01-01", None),
            // no charged day: not reported
            license(4, "never", "2026-05-01", None),
        ];
        let s = statement("c", month("2026-03"), &lics, &price_list());
        assert_eq!(s.missing_prices, ["alpha", "zeta"]);
    }

    #[test]
    fn price_on_picks_latest_valid_from() {
        let p = price_list();
        assert_eq!(p.price_on("zoom", day("2019-12-31")), None);
        assert_eq!(p.price_on("zoom", day("2020-01-01")), Some(d("10.00")));
        assert_eq!(p.price_on("zoom", day("2026-03-15")), Some(d("10.00")));
        assert_eq!(p.price_on("zoom", day("2026-03-16")), Some(d("20.00")));
        assert_eq!(p.price_on("zoom", day("2030-01-01")), Some(d("20.00")));
        assert_eq!(p.price_on("late", day("2026-03-10")), None);
        assert_eq!(p.price_on("ghost", day("2026-03-10")), None);
        assert_eq!(p.price_on("zoo", day("2026-03-10")), None);
    }

    #[test]
    fn duplicate_price_last_given_wins() {
        let p = PriceList::new(vec![
            price("a", "2026-01-01", "1.00"),
            price("a", "2026-01-01", "2.00"),
            price("a", "2026-02-01", "3.00"),
        ]);
        assert_eq!(p.prices().len(), 2);
        assert_eq!(p.price_on("a", day("2026-01-15")), Some(d("2.00")));
        assert_eq!(p.price_on("a", day("2026-02-15")), Some(d("3.00")));
    }

    #[test]
    fn month_parse_ok() {
        assert_eq!(
            month("2026-02"),
            Month {
                year: 2026,
                month: 2
            }
        );
        assert_eq!(
            month("1999-12"),
            Month {
                year: 1999,
                month: 12
            }
        );
        assert_eq!(
            "2026-01".parse::<Month>(),
            Ok(Month {
                year: 2026,
                month: 1
            })
        );
    }

    #[test]
    fn month_parse_errors() {
        for bad in [
            "2026-13",
            "2026-00",
            "2026-2",
            "26-02",
            "2026/02",
            "2026-02-01",
            " 2026-02",
            "2026-02 ",
            "",
            "abcd-ef",
            "+026-02",
            "2026-+2",
            "2026-1a",
            "202602",
            "２０２６-02",
        ] {
            let err = Month::parse(bad).unwrap_err();
            assert_eq!(
                err,
                format!("month '{bad}' is invalid; use YYYY-MM, e.g. 2026-02"),
                "{bad:?}"
            );
        }
        assert_eq!(
            Month::parse("2026-13").unwrap_err(),
            "month '2026-13' is invalid; use YYYY-MM, e.g. 2026-02"
        );
    }

    #[test]
    fn month_days_and_bounds() {
        for (m, days, last) in [
            ("2026-01", 31, "2026-01-31"),
            ("2026-02", 28, "2026-02-28"),
            ("2027-02", 28, "2027-02-28"),
            ("2028-02", 29, "2028-02-29"),
            ("2000-02", 29, "2000-02-29"),
            ("2100-02", 28, "2100-02-28"),
            ("2026-04", 30, "2026-04-30"),
            ("2026-12", 31, "2026-12-31"),
        ] {
            let m = month(m);
            assert_eq!(m.days(), days, "{m}");
            assert_eq!(m.first_day(), day(&format!("{m}-01")), "{m}");
            assert_eq!(m.last_day(), day(last), "{m}");
        }
        assert_eq!(
            Month {
                year: 987,
                month: 3
            }
            .to_string(),
            "0987-03"
        );
        assert_eq!(month("2026-02").to_string(), "2026-02");
    }

    #[test]
    fn csv_output() {
        let mut lics = vec![
            license(1, "teams", "2026-01-01", None),
            license(2, "webex", "2026-03-17", None),
        ];
        lics[1].number = None;
        lics[1].installation_id = "inst, \"quoted\"".to_string();
        let s = statement("cust-1", month("2026-03"), &lics, &price_list());
        assert_eq!(
            s.to_csv(),
            "customer,month,license,installation,connector,number,from,to,days,amount_chf\n\
             cust-1,2026-03,lic-1,inst-1,teams,+41440000001,2026-03-01,2026-03-31,31,30.00\n\
             cust-1,2026-03,lic-2,\"inst, \"\"quoted\"\"\",webex,,2026-03-17,2026-03-31,15,5.81\n\
             cust-1,2026-03,TOTAL,,,,,,,35.80\n"
        );
    }

    #[test]
    fn csv_output_without_lines() {
        let s = statement("c", month("2026-03"), &[], &price_list());
        assert_eq!(
            s.to_csv(),
            "customer,month,license,installation,connector,number,from,to,days,amount_chf\n\
             c,2026-03,TOTAL,,,,,,,0.00\n"
        );
    }

    #[test]
    fn serializes_amounts_as_strings() {
        let lics = [license(1, "webex", "2026-03-17", None)];
        let s = statement("c", month("2026-03"), &lics, &price_list());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["currency"], "CHF");
        assert_eq!(v["month"], "2026-03");
        assert_eq!(v["lines"][0]["amount_chf"], "5.81");
        assert_eq!(v["lines"][0]["from"], "2026-03-17");
        assert_eq!(v["subtotal_chf"], "5.81");
        assert_eq!(v["total_chf"], "5.80");
    }

    #[test]
    fn cash_rounding_is_half_away_from_zero() {
        // x/1 rounded to 0.05
        for (x, want) in [
            ("1.024", "1.00"),
            ("1.025", "1.05"),
            ("1.074", "1.05"),
            ("1.075", "1.10"),
            ("-1.025", "-1.05"),
            ("-0.02", "0.00"),
            ("0", "0.00"),
        ] {
            let got = round_to_005(d(x), Decimal::ONE);
            assert_eq!(got.to_string(), want, "{x}");
        }
    }
}
