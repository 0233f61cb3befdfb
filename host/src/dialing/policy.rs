//! Which destinations click-to-call may dial. Emergency numbers never;
//! short codes never; premium-rate numbers (Swiss and Liechtenstein 090x,
//! the known premium ranges of neighbouring countries, satellite and
//! international premium services, and every country's premium-rate ranges
//! in libphonenumber's numbering plan data) only when the customer allows
//! premium-rate destinations (and, outside CH/LI, international ones too);
//! international destinations only when allowed for the customer.

use crate::number::E164;

/// Per-customer dial permissions.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct DialPermissions {
    /// Allow destinations outside Switzerland/Liechtenstein.
    pub international: bool,
    /// Allow premium-rate numbers (090x in Switzerland and Liechtenstein,
    /// premium ranges abroad, satellite services).
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
    /// Premium rate or high cost (the number, what it is).
    #[error("'{0}' is {1}; ask your admin to allow premium-rate destinations")]
    PremiumRate(String, &'static str),
    /// International destination not allowed.
    #[error(
        "'{0}' is an international destination; ask your admin to allow international calls for your company"
    )]
    International(String),
    /// Not a number at all.
    #[error("{0}")]
    Invalid(String),
}

/// Premium-rate and high-cost ranges (E.164 prefixes), with what they are:
/// the usual targets of toll fraud through a hijacked click-to-call.
const PREMIUM: &[(&str, &str)] = &[
    ("+4190", "a Swiss premium-rate number (090x)"),
    ("+42390", "a Liechtenstein premium-rate number (090x)"),
    ("+49900", "a German premium-rate number (0900)"),
    ("+49137", "a German mass-call number (0137)"),
    ("+4390", "an Austrian premium-rate number (090x)"),
    ("+4393", "an Austrian premium-rate number (093x)"),
    ("+3389", "a French premium-rate number (089x)"),
    ("+3989", "an Italian premium-rate number (89x)"),
    ("+449", "a UK premium-rate number (09)"),
    ("+870", "a satellite number (Inmarsat)"),
    (
        "+881",
        "a satellite number (global mobile satellite system)",
    ),
    ("+882", "an international network number"),
    ("+883", "an international network number"),
    ("+979", "an international premium-rate number"),
];

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
    // The named ranges first (their message says what they are), then
    // every country's premium ranges from the numbering plan data.
    let premium = PREMIUM
        .iter()
        .find(|(p, _)| n.starts_with(p))
        .map(|(_, what)| *what)
        .or_else(|| {
            number
                .is_premium_rate()
                .then_some("a premium-rate number (by the numbering plan)")
        });
    if let Some(what) = premium
        && !perms.premium_rate
    {
        return Err(Refusal::PremiumRate(input.trim().to_owned(), what));
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
            Err(Refusal::PremiumRate(..))
        ));
        // Premium and high-cost ranges stay refused with international
        // calls allowed: only the premium-rate permission opens them.
        let intl = DialPermissions {
            international: true,
            premium_rate: false,
        };
        for n in [
            "+423 900 22 22",
            "+49 900 1 234567",
            "+43 900 123456",
            "+44 909 876 5432",
            "+881 612 345 678",
            "+870 301 234 567",
            "+979 123 456 789",
            // From the numbering plan data, not the named list: Spain 803,
            // the Netherlands 0906, Belgium 0903, the US 900.
            "+34 803 123 456",
            "+31 906 123456",
            "+32 903 12 345",
            "+1 900 555 0100",
        ] {
            let got = check(n, &intl);
            assert!(matches!(got, Err(Refusal::PremiumRate(..))), "{n}: {got:?}");
        }
        assert!(
            check("+423 235 12 34", &p).is_ok(),
            "Liechtenstein is domestic"
        );
        assert!(check("+49 30 12345678", &intl).is_ok());
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
        let e = check("+881 6 1234 5678", &DialPermissions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("satellite"), "{e}");
    }
}
