//! Phone numbers as business apps store them, turned into E.164.
//!
//! The host hands connectors every number in E.164 (`+41441234567`), but the
//! apps store whatever their users typed: `044 123 45 67`,
//! `+41 (0)44 123 45 67`, `0041441234567`, `tel:+41-44-123-45-67;ext=2`.
//! Matching on the raw text is the most common cause of "caller not found".
//! [`E164::parse`] normalises such text with a default country for national
//! forms; [`search_variants`] lists the spellings an app's substring search
//! needs to find a number; a connector then confirms each hit with
//! [`E164::parse`] and compares.
//!
//! This is deliberately small (no metadata tables of number ranges, unlike
//! libphonenumber): a guest is instantiated per call, so it must start fast.
//! It does not validate number ranges; the host already did for the caller.

use std::fmt;

use serde::{Deserialize, Deserializer};

/// A phone number in E.164 form (`+` country code, national significant number).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct E164 {
    /// Digits without `+`.
    digits: String,
    /// Length of the country calling code within `digits`.
    cc_len: usize,
}

/// The default country for numbers written in national form (`044 …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    /// Country calling code, e.g. `41`.
    calling_code: String,
}

/// Why a text is not a phone number usable for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneError {
    /// No digits at all.
    Empty,
    /// Too few digits for an external number: an internal extension or a
    /// service number such as `112`.
    Extension(String),
    /// More than the 15 digits E.164 allows.
    TooLong(String),
}

impl fmt::Display for PhoneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PhoneError::Empty => write!(f, "the number is empty"),
            PhoneError::Extension(d) => write!(
                f,
                "'{d}' is too short for an external number (an internal extension?)"
            ),
            PhoneError::TooLong(d) => write!(f, "'{d}' has more than the 15 digits E.164 allows"),
        }
    }
}

impl std::error::Error for PhoneError {}

/// Numbers with at most this many digits are internal extensions.
const MAX_EXTENSION_DIGITS: usize = 6;

impl E164 {
    /// Normalises `text` as an app stores it. National forms (leading trunk
    /// `0`) get `region`'s country code; `00`/`+` forms keep theirs; a
    /// `(0)` after the country code, punctuation, a `tel:` prefix and
    /// extensions (`;ext=`, `ext.`, `x12`) are dropped.
    pub fn parse(text: &str, region: &Region) -> Result<E164, PhoneError> {
        let (plus, digits) = scan(text);
        if digits.is_empty() {
            return Err(PhoneError::Empty);
        }
        let international = if plus {
            digits
        } else if let Some(rest) = digits.strip_prefix("00") {
            rest.to_string()
        } else if region.calling_code == "1"
            && let Some(rest) = digits.strip_prefix("011")
        {
            rest.to_string()
        } else if digits.len() <= MAX_EXTENSION_DIGITS {
            return Err(PhoneError::Extension(digits));
        } else if let Some(national) = strip_trunk(&digits, region) {
            format!("{}{national}", region.calling_code)
        } else if digits.starts_with(&region.calling_code)
            && digits.len() >= region.calling_code.len() + 8
        {
            // Stored without `+` (`41441234567`): long enough to carry a country code.
            digits
        } else {
            // National significant number without trunk prefix (`441234567`).
            format!("{}{digits}", region.calling_code)
        };
        if international.len() <= MAX_EXTENSION_DIGITS {
            return Err(PhoneError::Extension(international));
        }
        if international.len() > 15 {
            return Err(PhoneError::TooLong(international));
        }
        let cc_len = calling_code_len(&international);
        Ok(E164 {
            digits: international,
            cc_len,
        })
    }

    /// `+41441234567`.
    pub fn as_string(&self) -> String {
        format!("+{}", self.digits)
    }

    /// The country calling code, e.g. `41`.
    pub fn calling_code(&self) -> &str {
        &self.digits[..self.cc_len]
    }

    /// The national significant number, e.g. `441234567`.
    pub fn national_significant(&self) -> &str {
        &self.digits[self.cc_len..]
    }

    /// The last `n` digits (all of them if there are fewer), for apps that
    /// can only search by a number's ending.
    pub fn last_digits(&self, n: usize) -> &str {
        &self.digits[self.digits.len().saturating_sub(n)..]
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{}", self.digits)
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E164(+{})", self.digits)
    }
}

impl Region {
    /// A region from an ISO country code (`CH`) or a calling code (`41`,
    /// `+41`); the error names the accepted forms.
    pub fn parse(text: &str) -> Result<Region, String> {
        let t = text.trim();
        let code = t.strip_prefix('+').unwrap_or(t);
        if !code.is_empty() && code.len() <= 3 && code.chars().all(|c| c.is_ascii_digit()) {
            return Ok(Region {
                calling_code: code.to_string(),
            });
        }
        let by_iso = match t.to_ascii_uppercase().as_str() {
            "CH" => "41",
            "LI" => "423",
            "DE" => "49",
            "AT" => "43",
            "FR" => "33",
            "IT" => "39",
            "GB" | "UK" => "44",
            "NL" => "31",
            "BE" => "32",
            "LU" => "352",
            "ES" => "34",
            "PT" => "351",
            "US" | "CA" => "1",
            _ => {
                return Err(format!(
                    "'{text}' is not a known default country: give a calling code such as \"41\" or one of CH, LI, DE, AT, FR, IT, GB, NL, BE, LU, ES, PT, US, CA"
                ));
            }
        };
        Ok(Region {
            calling_code: by_iso.to_string(),
        })
    }

    /// Switzerland (`+41`), the default.
    pub fn switzerland() -> Region {
        Region {
            calling_code: "41".into(),
        }
    }

    /// The country calling code, e.g. `41`.
    pub fn calling_code(&self) -> &str {
        &self.calling_code
    }
}

impl Default for Region {
    fn default() -> Self {
        Region::switzerland()
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Region::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Whether two texts denote the same number (after normalising both).
pub fn same_number(a: &str, b: &str, region: &Region) -> bool {
    matches!(
        (E164::parse(a, region), E164::parse(b, region)),
        (Ok(x), Ok(y)) if x == y
    )
}

/// Spellings under which an app may have stored `number`, for apps whose
/// search matches substrings of the raw text: E.164, `00…`, the national
/// form with trunk `0` (and, for Swiss numbers, `044 123 45 67` and
/// `+41 44 123 45 67`), the national significant number. Confirm each hit
/// with [`E164::parse`]: a substring search can over-match.
pub fn search_variants(number: &E164) -> Vec<String> {
    let cc = number.calling_code();
    let nsn = number.national_significant();
    let mut out = vec![
        number.as_string(),
        format!("00{cc}{nsn}"),
        format!("0{nsn}"),
        nsn.to_string(),
    ];
    if (cc == "41" || cc == "423") && nsn.len() == 9 {
        let g = [&nsn[..2], &nsn[2..5], &nsn[5..7], &nsn[7..]];
        out.push(format!("0{} {} {} {}", g[0], g[1], g[2], g[3]));
        out.push(format!("+{cc} {} {} {} {}", g[0], g[1], g[2], g[3]));
    }
    if cc == "39" {
        // Italian fixed-line numbers keep their 0: `0612345678` is `+39 06 …`.
        out.retain(|v| v != &format!("0{nsn}"));
    }
    out.dedup();
    out
}

/// The `+` flag and the digits of the number part of `text`.
fn scan(text: &str) -> (bool, String) {
    let mut t = text.trim();
    if t.len() >= 4 && t[..4].eq_ignore_ascii_case("tel:") {
        t = &t[4..];
    }
    // `+41 (0)44 …`: the bracketed trunk prefix is not dialled internationally.
    let cleaned = t.replace("(0)", "");
    let mut plus = false;
    let mut digits = String::new();
    for c in cleaned.chars() {
        match c {
            '0'..='9' => digits.push(c),
            '+' if digits.is_empty() => plus = true,
            ';' | ',' | '#' if !digits.is_empty() => break,
            c if c.is_alphabetic() && !digits.is_empty() => break,
            _ => {}
        }
    }
    (plus, digits)
}

/// The national significant number if `digits` starts with the region's
/// trunk prefix.
fn strip_trunk<'a>(digits: &'a str, region: &Region) -> Option<&'a str> {
    match region.calling_code.as_str() {
        // Italy dials the leading 0 from abroad too.
        "39" => None,
        "1" => digits.strip_prefix('1').filter(|r| r.len() == 10),
        "7" => digits.strip_prefix('8'),
        _ => digits.strip_prefix('0'),
    }
}

/// Length of the ITU country calling code at the start of `digits`.
fn calling_code_len(digits: &str) -> usize {
    const TWO_DIGIT: &[&str] = &[
        "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46",
        "47", "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63",
        "64", "65", "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
    ];
    if digits.starts_with('1') || digits.starts_with('7') {
        1
    } else if TWO_DIGIT.iter().any(|p| digits.starts_with(p)) {
        2
    } else {
        3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(text: &str) -> Result<String, PhoneError> {
        E164::parse(text, &Region::switzerland()).map(|n| n.to_string())
    }

    #[test]
    fn swiss_forms_all_normalise_to_one_number() {
        for text in [
            "044 123 45 67",
            "+41 44 123 45 67",
            "0041441234567",
            "0041 44 123 45 67",
            "+41 (0)44 123 45 67",
            "+41-44-123.45.67",
            "(044) 123 45 67",
            "tel:+41-44-123-45-67;ext=22",
            "+41 44 123 45 67 ext. 22",
            "044/123'45'67",
            "41441234567",
            "441234567",
            " +41441234567 ",
        ] {
            assert_eq!(ch(text).as_deref(), Ok("+41441234567"), "{text}");
        }
    }

    #[test]
    fn foreign_numbers_keep_their_country() {
        assert_eq!(ch("+49 30 1234567").unwrap(), "+49301234567");
        assert_eq!(ch("0049 30 1234567").unwrap(), "+49301234567");
        assert_eq!(ch("+1 (415) 555-0100").unwrap(), "+14155550100");
        assert_eq!(ch("+423 234 56 78").unwrap(), "+4232345678");
    }

    #[test]
    fn the_default_country_applies_to_national_forms() {
        let de = Region::parse("DE").unwrap();
        assert_eq!(
            E164::parse("030 1234567", &de).unwrap().to_string(),
            "+49301234567"
        );
        let us = Region::parse("+1").unwrap();
        assert_eq!(
            E164::parse("(415) 555-0100", &us).unwrap().to_string(),
            "+14155550100"
        );
        assert_eq!(
            E164::parse("1 415 555 0100", &us).unwrap().to_string(),
            "+14155550100"
        );
        assert_eq!(
            E164::parse("011 41 44 123 45 67", &us).unwrap().to_string(),
            "+41441234567"
        );
        let it = Region::parse("IT").unwrap();
        assert_eq!(
            E164::parse("06 1234 5678", &it).unwrap().to_string(),
            "+390612345678"
        );
        assert!(
            Region::parse("Narnia")
                .unwrap_err()
                .contains("calling code")
        );
    }

    #[test]
    fn extensions_and_garbage_are_not_numbers() {
        assert_eq!(ch("221"), Err(PhoneError::Extension("221".into())));
        assert_eq!(ch("112"), Err(PhoneError::Extension("112".into())));
        assert_eq!(ch(""), Err(PhoneError::Empty));
        assert_eq!(ch("n/a"), Err(PhoneError::Empty));
        assert!(matches!(
            ch("+41 44 123 45 67 89 01 23 45"),
            Err(PhoneError::TooLong(_))
        ));
        assert!(ch("221").unwrap_err().to_string().contains("extension"));
    }

    #[test]
    fn parts_of_a_number() {
        let n = E164::parse("+41 44 123 45 67", &Region::default()).unwrap();
        assert_eq!(n.calling_code(), "41");
        assert_eq!(n.national_significant(), "441234567");
        assert_eq!(n.last_digits(7), "1234567");
        assert_eq!(n.last_digits(99), "41441234567");
        let us = E164::parse("+14155550100", &Region::default()).unwrap();
        assert_eq!(us.calling_code(), "1");
        let li = E164::parse("+4232345678", &Region::default()).unwrap();
        assert_eq!(li.calling_code(), "423");
    }

    #[test]
    fn same_number_ignores_format() {
        let r = Region::default();
        assert!(same_number("044 123 45 67", "0041441234567", &r));
        assert!(!same_number("044 123 45 67", "044 123 45 68", &r));
        assert!(!same_number("221", "221", &r), "extensions never match");
    }

    #[test]
    fn search_variants_cover_the_usual_spellings() {
        let n = E164::parse("0441234567", &Region::default()).unwrap();
        let v = search_variants(&n);
        for stored in [
            "+41441234567",
            "0041441234567",
            "0441234567",
            "044 123 45 67",
            "+41 44 123 45 67",
        ] {
            assert!(
                v.iter().any(|x| stored.contains(x.as_str())),
                "{stored} not found by {v:?}"
            );
        }
        let it = E164::parse("+390612345678", &Region::default()).unwrap();
        let v = search_variants(&it);
        assert!(v.contains(&"0612345678".to_string()), "{v:?}");
        assert!(!v.contains(&"00612345678".to_string()), "{v:?}");
    }
}
