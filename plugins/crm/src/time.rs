//! Call times in the two forms the SDK's `time` module does not write:
//! `YYYY-MM-DD HH:MM:SS` (Pipedrive, bexio) and Swiss wall-clock time for
//! apps that store local times (bexio).

use leansync_plugin_api::time::iso8601_utc;

const MS_PER_DAY: u64 = 86_400_000;
const MS_PER_HOUR: u64 = 3_600_000;

/// `2025-11-25 22:18:06` in UTC.
pub fn sql_utc(epoch_ms: u64) -> String {
    iso8601_utc(epoch_ms)
        .trim_end_matches('Z')
        .replacen('T', " ", 1)
}

/// `2025-11-25 23:18:06`: wall-clock time in Switzerland (CET; CEST from
/// the last Sunday of March to the last Sunday of October, switching at
/// 01:00 UTC as everywhere in the EU).
pub fn sql_zurich(epoch_ms: u64) -> String {
    let year: i64 = iso8601_utc(epoch_ms)[..4].parse().unwrap_or(1970);
    let summer = last_sunday_of(year, 3) * MS_PER_DAY + MS_PER_HOUR
        ..last_sunday_of(year, 10) * MS_PER_DAY + MS_PER_HOUR;
    let offset = if summer.contains(&epoch_ms) { 2 } else { 1 };
    sql_utc(epoch_ms + offset * MS_PER_HOUR)
}

/// Days since 1970-01-01 of the last Sunday of a 31-day month.
fn last_sunday_of(year: i64, month: i64) -> u64 {
    // Days before the 31st, in 400-year eras starting on 0000-03-01.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + 30;
    let last = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    // 1970-01-01 was a Thursday: weekday 4 with Sunday = 0.
    (last - (last + 4).rem_euclid(7)).max(0) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_as_apps_write_it() {
        assert_eq!(sql_utc(1_764_109_086_500), "2025-11-25 22:18:06");
        assert_eq!(sql_utc(0), "1970-01-01 00:00:00");
    }

    #[test]
    fn zurich_follows_summer_time() {
        // 2025-03-30 00:59:59 UTC is still CET; from 01:00 UTC it is CEST.
        assert_eq!(sql_zurich(1_743_296_399_000), "2025-03-30 01:59:59");
        assert_eq!(sql_zurich(1_743_296_400_000), "2025-03-30 03:00:00");
        // 2025-10-26 01:00 UTC: back to CET.
        assert_eq!(sql_zurich(1_761_440_399_000), "2025-10-26 02:59:59");
        assert_eq!(sql_zurich(1_761_440_400_000), "2025-10-26 02:00:00");
        assert_eq!(sql_zurich(1_764_109_086_500), "2025-11-25 23:18:06");
        // 2024 (leap year): last Sundays are 31 March and 27 October.
        assert_eq!(sql_zurich(1_711_846_800_000), "2024-03-31 03:00:00");
        assert_eq!(sql_zurich(1_729_990_800_000), "2024-10-27 02:00:00");
    }
}
