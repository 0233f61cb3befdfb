//! Call timestamps (Unix epoch milliseconds) as the text apps expect, without
//! a date library in the guest.

/// `2026-11-25T22:48:34Z`.
pub fn iso8601_utc(epoch_ms: u64) -> String {
    let (y, mo, d, h, mi, s) = civil_utc(epoch_ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z")
}

/// `2026-11-25 22:48 UTC`, for journal text read by people.
pub fn readable_utc(epoch_ms: u64) -> String {
    let (y, mo, d, h, mi, _) = civil_utc(epoch_ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02} UTC")
}

/// `0:07`, `12:05`, `1:02:03` (hours only when needed).
pub fn duration(secs: u32) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// (year, month, day, hour, minute, second) in UTC.
fn civil_utc(epoch_ms: u64) -> (i64, u32, u32, u32, u32, u32) {
    let secs = epoch_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a proleptic Gregorian date, counting in
    // 400-year eras that start on 0000-03-01 (leap day last in the year).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month,
        day,
        (rem / 3600) as u32,
        (rem / 60 % 60) as u32,
        (rem % 60) as u32,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(iso8601_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601_utc(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(iso8601_utc(1_764_110_914_123), "2025-11-25T22:48:34Z");
        assert_eq!(iso8601_utc(4_107_542_399_000), "2100-02-28T23:59:59Z");
        assert_eq!(readable_utc(1_764_110_914_123), "2025-11-25 22:48 UTC");
    }

    #[test]
    fn durations() {
        assert_eq!(duration(0), "0:00");
        assert_eq!(duration(7), "0:07");
        assert_eq!(duration(725), "12:05");
        assert_eq!(duration(3723), "1:02:03");
    }
}
