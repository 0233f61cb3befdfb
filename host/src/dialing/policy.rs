//! Which destinations click-to-call may dial. Emergency numbers never; Swiss
//! premium-rate (090x) and short codes are blocked by default; international
//! destinations only when allowed for the customer.

use crate::number::E164;

/// Per-customer dial permissions.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DialPermissions {
    /// Allow destinations outside Switzerland/Liechtenstein.
    pub international: bool,
    /// Allow Swiss premium-rate numbers (090x).
    pub premium_rate: bool,
}

/// Why a destination is refused; the message names the input and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Emergency numbers are never placed by the API.
    #[error(
        "'{0}' is an emergency number; emergency calls are never placed through the API, dial it directly from a phone"
    )]
    Emergency(String),
    /// Short codes / service numbers.
    #[error("'{0}' is a short code or service number; click-to-call only dials full numbers")]
    ShortCode(String),
    /// Premium rate.
    #[error(
        "'{0}' is a premium-rate number (090x); ask your admin to allow premium-rate destinations"
    )]
    PremiumRate(String),
    /// International destination not allowed.
    #[error(
        "'{0}' is an international destination; ask your admin to allow international calls for your company"
    )]
    International(String),
    /// Not a number at all.
    #[error("{0}")]
    Invalid(String),
}

/// Swiss emergency and urgent-help numbers (and 112 everywhere).
const EMERGENCY: &[&str] = &[
    "112", "117", "118", "143", "144", "145", "147", "1414", "1415", "911", "999",
];

/// Checks `input` and returns the E.164 destination to dial.
pub fn check(input: &str, perms: &DialPermissions) -> Result<E164, Refusal> {
    let digits: String = input
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == '+')
        .collect();
    let bare = digits.trim_start_matches('+');
    let local = bare
        .strip_prefix("0041")
        .or_else(|| bare.strip_prefix("41"));
    if EMERGENCY.contains(&bare) || local.is_some_and(|l| EMERGENCY.contains(&l)) {
        return Err(Refusal::Emergency(input.trim().to_owned()));
    }
    if !digits.starts_with('+') && !digits.starts_with('0') && (3..=6).contains(&digits.len()) {
        return Err(Refusal::ShortCode(input.trim().to_owned()));
    }
    let number = E164::parse(input).map_err(|e| Refusal::Invalid(e.to_string()))?;
    let n = number.as_str();
    let domestic = n.starts_with("+41") || n.starts_with("+423");
    if n.starts_with("+4190") && !perms.premium_rate {
        return Err(Refusal::PremiumRate(input.trim().to_owned()));
    }
    if !domestic && !perms.international {
        return Err(Refusal::International(input.trim().to_owned()));
    }
    Ok(number)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        let p = DialPermissions::default();
        assert_eq!(check("044 123 45 67", &p).unwrap().as_str(), "+41441234567");
        for e in [
            "112", "117", "144", "+41 117", "0041 144", "+41 1414", "1414",
        ] {
            assert!(matches!(check(e, &p), Err(Refusal::Emergency(_))), "{e}");
        }
        assert!(matches!(check("1811", &p), Err(Refusal::ShortCode(_))));
        assert!(matches!(
            check("0900 123 456", &p),
            Err(Refusal::PremiumRate(_))
        ));
        assert!(matches!(
            check("+49 30 1234567", &p),
            Err(Refusal::International(_))
        ));
        assert!(matches!(check("hello", &p), Err(Refusal::Invalid(_))));
        let open = DialPermissions {
            international: true,
            premium_rate: true,
        };
        assert!(check("+49 30 12345678", &open).is_ok());
        assert!(check("0900 123 456", &open).is_ok());
        assert!(matches!(check("112", &open), Err(Refusal::Emergency(_))));
    }

    #[test]
    fn messages_name_input_and_fix() {
        let e = check("0900 123 456", &DialPermissions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'0900 123 456'") && e.contains("ask your admin"),
            "{e}"
        );
    }
}
