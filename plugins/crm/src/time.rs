//! Calendar dates from Unix milliseconds, in the forms the vendors' APIs
//! want (ISO 8601 UTC, `YYYY-MM-DD HH:MM:SS`), and Swiss local time for
//! apps that store local wall-clock times (bexio).

/// A broken-down date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DateTime {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    millis: u32,
}

const MS_PER_DAY: i64 = 86_400_000;
const MS_PER_HOUR: i64 = 3_600_000;

impl DateTime {
    /// UTC date and time of `ms` after the Unix epoch.
    pub fn utc(ms: u64) -> Self {
        let ms = ms as i64;
        let days = ms.div_euclid(MS_PER_DAY);
        let rest = ms.rem_euclid(MS_PER_DAY) as u32;
        let (year, month, day) = civil_from_days(days);
        Self {
            year,
            month,
            day,
            hour: rest / 3_600_000,
            minute: rest / 60_000 % 60,
            second: rest / 1000 % 60,
            millis: rest % 1000,
        }
    }

    /// Wall-clock time in Switzerland (CET, CEST from the last Sunday of
    /// March to the last Sunday of October, switching at 01:00 UTC).
    pub fn zurich(ms: u64) -> Self {
        let t = ms as i64;
        let year = Self::utc(ms).year;
        let summer_from = last_sunday(year, 3) * MS_PER_DAY + MS_PER_HOUR;
        let summer_until = last_sunday(year, 10) * MS_PER_DAY + MS_PER_HOUR;
        let offset = if (summer_from..summer_until).contains(&t) {
            2 * MS_PER_HOUR
        } else {
            MS_PER_HOUR
        };
        Self::utc((t + offset) as u64)
    }

    /// `2026-11-25T22:18:06.000Z` (only meaningful for [`DateTime::utc`]).
    pub fn iso(&self) -> String {
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            self.year, self.month, self.day, self.hour, self.minute, self.second, self.millis
        )
    }

    /// `2026-11-25 22:18:06`.
    pub fn sql(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// Talk time for people: `42 s`, `3 min 05 s`, `1 h 02 min`.
pub fn duration(secs: u32) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {:02} s", secs / 60, secs % 60),
        _ => format!("{} h {:02} min", secs / 3600, secs / 60 % 60),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`].
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day number of the last Sunday of a 31-day month.
fn last_sunday(year: i64, month: u32) -> i64 {
    let last = days_from_civil(year, month, 31);
    // 1970-01-01 was a Thursday: weekday 4 with Sunday = 0.
    last - (last + 4).rem_euclid(7)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        // 2025-11-25 22:18:06.5 UTC
        let t = 1_764_109_086_500;
        assert_eq!(DateTime::utc(t).iso(), "2025-11-25T22:18:06.500Z");
        assert_eq!(DateTime::utc(0).sql(), "1970-01-01 00:00:00");
        assert_eq!(DateTime::utc(951_782_400_000).sql(), "2000-02-29 00:00:00");
    }

    #[test]
    fn zurich_follows_summer_time() {
        // 2025-03-30 00:59:59 UTC: still CET; 01:00 UTC: CEST.
        assert_eq!(
            DateTime::zurich(1_743_296_399_000).sql(),
            "2025-03-30 01:59:59"
        );
        assert_eq!(
            DateTime::zurich(1_743_296_400_000).sql(),
            "2025-03-30 03:00:00"
        );
        // 2025-10-26 01:00 UTC: back to CET.
        assert_eq!(
            DateTime::zurich(1_761_440_400_000).sql(),
            "2025-10-26 02:00:00"
        );
        assert_eq!(
            DateTime::zurich(1_764_109_086_500).sql(),
            "2025-11-25 23:18:06"
        );
    }

    #[test]
    fn durations_read_well() {
        assert_eq!(duration(42), "42 s");
        assert_eq!(duration(185), "3 min 05 s");
        assert_eq!(duration(3720), "1 h 02 min");
    }
}
