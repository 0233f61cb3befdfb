//! Phone number spellings. Stand-in until the SDK's `phone` module lands.

/// `number` in E.164, reading national forms as Swiss.
pub fn e164(number: &str) -> Option<String> {
    let t = number.trim();
    let plus = t.starts_with('+');
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    let full = if plus {
        digits
    } else if let Some(rest) = digits.strip_prefix("00") {
        rest.to_string()
    } else if let Some(rest) = digits.strip_prefix('0') {
        format!("41{rest}")
    } else {
        return None;
    };
    (8..=15).contains(&full.len()).then(|| format!("+{full}"))
}

/// Whether a stored number is the E.164 `number`.
pub fn same(stored: &str, number: &str) -> bool {
    e164(stored).is_some_and(|n| n == number)
}

/// The usual spellings of an E.164 number.
pub fn variants(number: &str) -> Vec<String> {
    let digits = number.trim_start_matches('+');
    let mut out = vec![number.to_string(), format!("00{digits}")];
    if let Some(national) = digits.strip_prefix("41") {
        out.push(format!("0{national}"));
        if national.len() == 9 {
            let (a, b, c, d) = (
                &national[..2],
                &national[2..5],
                &national[5..7],
                &national[7..],
            );
            out.push(format!("0{a} {b} {c} {d}"));
            out.push(format!("+41 {a} {b} {c} {d}"));
        }
    }
    out
}
