//! The few vCard (RFC 6350 / 2426) properties a caller display needs: FN,
//! N, ORG, UID and every TEL, from vCard 3.0 and 4.0 text.

/// One contact card, reduced to what a screen pop shows.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Card {
    /// Display name (FN, else built from N, else the organisation).
    pub name: String,
    /// First component of ORG, if any.
    pub organisation: Option<String>,
    /// UID, if any.
    pub uid: Option<String>,
    /// Every TEL value as written (`tel:` URIs without the scheme).
    pub phones: Vec<String>,
}

/// Parses every `BEGIN:VCARD … END:VCARD` block in `text`.
pub fn parse(text: &str) -> Vec<Card> {
    let mut cards = Vec::new();
    let mut current: Option<(Card, Option<String>)> = None;
    for line in unfold(text) {
        let Some((name, value)) = split(&line) else {
            continue;
        };
        match (name.as_str(), current.as_mut()) {
            ("BEGIN", None) if value.eq_ignore_ascii_case("VCARD") => {
                current = Some((Card::default(), None));
            }
            ("END", Some(_)) if value.eq_ignore_ascii_case("VCARD") => {
                let (mut card, n) = current.take().unwrap();
                if card.name.is_empty() {
                    card.name = n
                        .filter(|n| !n.is_empty())
                        .or_else(|| card.organisation.clone())
                        .unwrap_or_default();
                }
                cards.push(card);
            }
            ("FN", Some((card, _))) => card.name = unescape(value).trim().to_string(),
            ("N", Some((_, n))) => *n = Some(name_from_n(value)),
            ("ORG", Some((card, _))) => {
                let org = unescape(first_component(value)).trim().to_string();
                card.organisation = (!org.is_empty()).then_some(org);
            }
            ("UID", Some((card, _))) => card.uid = Some(value.trim().to_string()),
            ("TEL", Some((card, _))) => {
                let v = value.trim();
                let v = match v.get(..4) {
                    Some(scheme) if scheme.eq_ignore_ascii_case("tel:") => &v[4..],
                    _ => v,
                };
                if !v.is_empty() {
                    card.phones.push(v.to_string());
                }
            }
            _ => {}
        }
    }
    cards
}

/// Content lines with folding undone (a line break followed by a space or
/// tab continues the previous line); accepts CRLF and bare LF.
fn unfold(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for raw in text.split('\n') {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        match raw.as_bytes().first() {
            Some(b' ' | b'\t') if !lines.is_empty() => {
                lines.last_mut().unwrap().push_str(&raw[1..]);
            }
            _ if raw.is_empty() => {}
            _ => lines.push(raw.to_string()),
        }
    }
    lines
}

/// `[group.]NAME[;params]:value` → upper-case name without group and
/// parameters, and the value. The first `:` outside a quoted parameter
/// value ends the name part.
fn split(line: &str) -> Option<(String, &str)> {
    let mut quoted = false;
    let colon = line.char_indices().find_map(|(i, c)| match c {
        '"' => {
            quoted = !quoted;
            None
        }
        ':' if !quoted => Some(i),
        _ => None,
    })?;
    let (head, value) = (&line[..colon], &line[colon + 1..]);
    let name = head.split(';').next().unwrap_or(head);
    let name = name.rsplit('.').next().unwrap_or(name);
    Some((name.to_ascii_uppercase(), value))
}

/// The first `;`-separated component, respecting `\;` escapes.
fn first_component(value: &str) -> &str {
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b';' => return &value[..i],
            _ => i += 1,
        }
    }
    value
}

/// `Family;Given;Additional;Prefix;Suffix` → `Prefix Given Additional Family Suffix`.
fn name_from_n(value: &str) -> String {
    let mut parts = Vec::new();
    let mut rest = value;
    loop {
        let part = first_component(rest);
        parts.push(unescape(part));
        if part.len() >= rest.len() {
            break;
        }
        rest = &rest[part.len() + 1..];
    }
    let get = |i: usize| parts.get(i).map(|s| s.trim()).unwrap_or("");
    [get(3), get(1), get(2), get(0), get(4)]
        .iter()
        .filter(|s| !s.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

/// Undoes vCard text escapes: `\n`, `\,`, `\;`, `\\`.
fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n' | 'N') => out.push(' '),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_3_card_with_folding_groups_and_escapes() {
        let text = "BEGIN:VCARD\r\nVERSION:3.0\r\nUID:abc-1\r\nFN:Anna \r\n Muster\r\nORG:Muster\\, Söhne AG;Einkauf\r\nitem1.TEL;TYPE=WORK,VOICE:044 123 45 67\r\nTEL;TYPE=CELL:+41 79 123 45 67\r\nEND:VCARD\r\n";
        let cards = parse(text);
        assert_eq!(
            cards,
            vec![Card {
                name: "Anna Muster".into(),
                organisation: Some("Muster, Söhne AG".into()),
                uid: Some("abc-1".into()),
                phones: vec!["044 123 45 67".into(), "+41 79 123 45 67".into()],
            }]
        );
    }

    #[test]
    fn version_4_tel_uris_and_quoted_params() {
        let text = "BEGIN:VCARD\nVERSION:4.0\nFN:Beat Beispiel\nTEL;VALUE=uri;TYPE=\"voice,work\":tel:+41-44-123-45-68;ext=2\nTEL;PREF=1:tel:+41441234569\nEND:VCARD\n";
        let cards = parse(text);
        assert_eq!(cards[0].phones, ["+41-44-123-45-68;ext=2", "+41441234569"]);
    }

    #[test]
    fn name_falls_back_to_n_then_organisation() {
        let text = "BEGIN:VCARD\nN:Muster;Anna;;Dr.;\nTEL:1\nEND:VCARD\nBEGIN:VCARD\nORG:Nur Firma AG\nTEL:2\nEND:VCARD\n";
        let cards = parse(text);
        assert_eq!(cards[0].name, "Dr. Anna Muster");
        assert_eq!(cards[1].name, "Nur Firma AG");
        assert_eq!(cards.len(), 2);
    }

    #[test]
    fn lines_outside_cards_and_garbage_are_ignored() {
        let text = "FN:outside\nBEGIN:VCARD\nno colon here\nFN:Inside\nEND:VCARD\nTEL:999\n";
        let cards = parse(text);
        assert_eq!(cards.len(), 1);
        assert_eq!(cards[0].name, "Inside");
        assert!(cards[0].phones.is_empty());
    }
}
