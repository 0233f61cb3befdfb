//! WebDAV sync (RFC 6578) and CardDAV multiget (RFC 6352) request bodies,
//! and the multistatus answers they produce.

/// One `<response>` of a multistatus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The resource's href as the server wrote it.
    pub href: String,
    /// The card text, when the server sent `address-data`.
    pub address_data: Option<String>,
    /// Whether the server reported the resource as gone (404 in a sync).
    pub removed: bool,
}

/// A parsed multistatus body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MultiStatus {
    /// The members reported.
    pub members: Vec<Member>,
    /// The new sync token (sync-collection only).
    pub sync_token: Option<String>,
}

/// `sync-collection` from `token` (`None` = initial sync) with card data.
pub fn sync_collection(token: Option<&str>) -> String {
    let token = token.map(escape).unwrap_or_default();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<d:sync-collection xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav"><d:sync-token>{token}</d:sync-token><d:sync-level>1</d:sync-level><d:prop><d:getetag/><card:address-data/></d:prop></d:sync-collection>"#
    )
}

/// `addressbook-multiget` of `hrefs` with card data.
pub fn multiget(hrefs: &[String]) -> String {
    let hrefs: String = hrefs
        .iter()
        .map(|h| format!("<d:href>{}</d:href>", escape(h)))
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="utf-8"?>
<card:addressbook-multiget xmlns:d="DAV:" xmlns:card="urn:ietf:params:xml:ns:carddav"><d:prop><d:getetag/><card:address-data/></d:prop>{hrefs}</card:addressbook-multiget>"#
    )
}

/// Parses a `207 Multi-Status` body.
pub fn parse(body: &str) -> Result<MultiStatus, String> {
    let doc = roxmltree::Document::parse_with_options(
        body,
        roxmltree::ParsingOptions {
            allow_dtd: false,
            ..Default::default()
        },
    )
    .map_err(|e| format!("the server's multistatus answer is not XML: {e}"))?;
    let root = doc.root_element();
    if root.tag_name().name() != "multistatus" {
        return Err(format!(
            "expected a DAV multistatus answer, got <{}>",
            root.tag_name().name()
        ));
    }
    let mut out = MultiStatus::default();
    for child in root.children().filter(|n| n.is_element()) {
        match child.tag_name().name() {
            "sync-token" => out.sync_token = Some(text(child).trim().to_string()),
            "response" => {
                if let Some(m) = member(child) {
                    out.members.push(m);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn member(response: roxmltree::Node) -> Option<Member> {
    let href = response
        .children()
        .find(|n| n.has_tag_name(("DAV:", "href")))
        .map(|n| text(n).trim().to_string())?;
    let status_404 = response
        .children()
        .find(|n| n.has_tag_name(("DAV:", "status")))
        .is_some_and(|n| text(n).contains(" 404"));
    let address_data = response
        .children()
        .filter(|n| n.has_tag_name(("DAV:", "propstat")))
        .filter(|ps| {
            ps.children()
                .find(|n| n.has_tag_name(("DAV:", "status")))
                .is_none_or(|s| text(s).contains(" 200"))
        })
        .flat_map(|ps| ps.descendants())
        .find(|n| n.has_tag_name(("urn:ietf:params:xml:ns:carddav", "address-data")))
        .map(text);
    Some(Member {
        href,
        address_data,
        removed: status_404,
    })
}

/// All text inside a node (text and CDATA, entities resolved).
fn text(node: roxmltree::Node) -> String {
    node.descendants()
        .filter(|n| n.is_text())
        .filter_map(|n| n.text())
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_answer_with_cards_removals_and_token() {
        let body = r#"<?xml version='1.0' encoding='utf-8'?>
<multistatus xmlns="DAV:" xmlns:CR="urn:ietf:params:xml:ns:carddav"><sync-token>http://radicale.org/ns/sync/abc</sync-token>
<response><href>/anna/book/c1.vcf</href><propstat><prop><getetag>"e1"</getetag><CR:address-data>BEGIN:VCARD
FN:A &amp; B
END:VCARD
</CR:address-data></prop><status>HTTP/1.1 200 OK</status></propstat></response>
<response><href>/anna/book/c2.vcf</href><status>HTTP/1.1 404 Not Found</status></response>
<response><href>/anna/book/c3.vcf</href><propstat><prop><getetag>"e3"</getetag></prop><status>HTTP/1.1 200 OK</status></propstat><propstat><prop><CR:address-data/></prop><status>HTTP/1.1 404 Not Found</status></propstat></response>
</multistatus>"#;
        let ms = parse(body).unwrap();
        assert_eq!(
            ms.sync_token.as_deref(),
            Some("http://radicale.org/ns/sync/abc")
        );
        assert_eq!(ms.members.len(), 3);
        assert_eq!(ms.members[0].href, "/anna/book/c1.vcf");
        assert!(
            ms.members[0]
                .address_data
                .as_deref()
                .unwrap()
                .contains("FN:A & B")
        );
        assert!(!ms.members[0].removed);
        assert!(ms.members[1].removed);
        assert_eq!(
            ms.members[2].address_data, None,
            "a 404 propstat carries no data"
        );
        assert!(!ms.members[2].removed);
    }

    #[test]
    fn prefixed_namespaces_and_cdata() {
        let body = r#"<d:multistatus xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:carddav"><d:response><d:href>/b/x.vcf</d:href><d:propstat><d:prop><c:address-data><![CDATA[BEGIN:VCARD
FN:<Anna>
END:VCARD]]></c:address-data></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat></d:response></d:multistatus>"#;
        let ms = parse(body).unwrap();
        assert!(
            ms.members[0]
                .address_data
                .as_deref()
                .unwrap()
                .contains("FN:<Anna>")
        );
        assert_eq!(ms.sync_token, None);
    }

    #[test]
    fn non_multistatus_answers_are_errors() {
        assert!(
            parse("<html><body>login</body></html>")
                .unwrap_err()
                .contains("multistatus")
        );
        assert!(parse("not xml").unwrap_err().contains("not XML"));
    }

    #[test]
    fn request_bodies_escape_their_input() {
        assert!(sync_collection(None).contains("<d:sync-token></d:sync-token>"));
        assert!(sync_collection(Some("a&b")).contains("<d:sync-token>a&amp;b</d:sync-token>"));
        let m = multiget(&["/b/1.vcf".into(), "/b/<2>.vcf".into()]);
        assert!(m.contains("<d:href>/b/1.vcf</d:href><d:href>/b/&lt;2&gt;.vcf</d:href>"));
        roxmltree::Document::parse(&m).unwrap();
    }
}
