//! Phone numbers in E.164, the one form everything is stored and matched in.

use std::fmt;
use std::str::FromStr;

use rlibphonenumber::{PHONE_NUMBER_UTIL, PhoneNumberFormat, Region};
use serde::{Deserialize, Serialize};

/// A validated phone number in E.164 form (`+41441234567`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct E164(String);

/// Why a string is not a usable phone number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "'{input}' is not a valid phone number: {reason}; give it in E.164 (+41441234567) or Swiss national form (044 123 45 67)"
)]
pub struct NumberError {
    /// The rejected input, verbatim.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl E164 {
    /// Parses a number written in E.164, international (`0041 …`) or Swiss
    /// national (`044 …`) form, with any spaces, dashes, dots or brackets.
    pub fn parse(input: &str) -> Result<Self, NumberError> {
        Self::parse_in(input, Region::CH)
    }

    /// Like [`E164::parse`] with another default country for national forms.
    pub fn parse_in(input: &str, region: Region) -> Result<Self, NumberError> {
        let err = |reason| NumberError {
            input: input.to_owned(),
            reason,
        };
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(err("it is empty"));
        }
        if trimmed.len() > 40 {
            return Err(err("it is too long"));
        }
        if !trimmed
            .chars()
            .all(|c| c.is_ascii_digit() || " +-./()\u{a0}".contains(c))
        {
            return Err(err(
                "it contains characters other than digits, spaces, + - . / ( )",
            ));
        }
        let parsed = PHONE_NUMBER_UTIL
            .parse(trimmed, Some(region))
            .map_err(|_| err("it cannot be parsed"))?;
        if !parsed.is_valid() {
            return Err(err("no such number range exists"));
        }
        Ok(Self(parsed.format_as(PhoneNumberFormat::E164).into_owned()))
    }

    /// The E.164 string, e.g. `+41441234567`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the numbering plan data (libphonenumber's metadata, every
    /// country) lists this number as premium-rate.
    pub fn is_premium_rate(&self) -> bool {
        PHONE_NUMBER_UTIL
            .parse(&self.0, None)
            .is_ok_and(|n| n.get_type() == rlibphonenumber::PhoneNumberType::PremiumRate)
    }

    /// The national display form, e.g. `044 123 45 67`.
    pub fn national(&self) -> String {
        match PHONE_NUMBER_UTIL.parse(&self.0, None) {
            Ok(n) => n.format_as(PhoneNumberFormat::National).into_owned(),
            Err(_) => self.0.clone(),
        }
    }
}

impl FromStr for E164 {
    type Err = NumberError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for E164 {
    type Error = NumberError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<E164> for String {
    fn from(n: E164) -> String {
        n.0
    }
}

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "E164({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swiss_forms_normalise_to_e164() {
        for input in [
            "044 123 45 67",
            "0041 44 123 45 67",
            "+41 44 123 45 67",
            "+41441234567",
            "0041441234567",
            "(044) 123-45-67",
        ] {
            assert_eq!(
                E164::parse(input).unwrap().as_str(),
                "+41441234567",
                "{input}"
            );
        }
    }

    #[test]
    fn garbage_is_rejected_with_the_input_named() {
        for input in [
            "",
            "abc",
            "12",
            "+41 44 123 45 67 89 00 11",
            "044 123 45 67; drop table",
        ] {
            let e = E164::parse(input).unwrap_err();
            assert!(e.to_string().contains(&format!("'{input}'")), "{e}");
        }
    }

    #[test]
    fn national_display() {
        assert_eq!(
            E164::parse("+41441234567").unwrap().national(),
            "044 123 45 67"
        );
    }
}
