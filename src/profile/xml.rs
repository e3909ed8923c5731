//! A small positioned XML tree built with quick-xml.
//!
//! quick-xml's serde layer reports errors without positions, so profiles are read into this tree
//! first: every element and attribute keeps the byte offset it starts at, which the validation
//! step turns into `file:line:col`. Attribute values are entity-decoded and whitespace-normalised
//! the way a conforming XML parser (expat, which ParaView uses) does.
//!
//! A `<!DOCTYPE Servers [ ... ]>` may declare internal general entities
//! (`<!ENTITY host "login.example.org">`), which attributes then use as `&host;`, as expat
//! allows. Nothing external is read (no `SYSTEM`/`PUBLIC` DTD or entity, no parameter
//! entities), and expansion is bounded: at most [`MAX_ENTITY_DEPTH`] nested entities and
//! [`MAX_ENTITY_EXPANSION`] bytes of expanded text per document; past that, a positioned error.

use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

/// One element with its attributes and element children (text is dropped: `.pvsc` has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<Attr>,
    pub children: Vec<Element>,
    /// Byte offset of the element's `<`.
    pub offset: usize,
    /// Non-whitespace text found directly inside the element, with its offset.
    pub text: Option<(String, usize)>,
}

/// One attribute, value already decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub name: String,
    pub value: String,
    /// Byte offset of the attribute's name.
    pub offset: usize,
}

/// A document that is not well-formed XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    pub message: String,
    pub offset: usize,
}

impl Element {
    /// The value of attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_str())
    }

    /// The attribute record of `name`, if present.
    pub fn attr_entry(&self, name: &str) -> Option<&Attr> {
        self.attrs.iter().find(|a| a.name == name)
    }

    /// The first child element called `name` (ParaView's `FindNestedElementByName`).
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }
}

/// At most this many bytes of entity replacement text per document.
pub const MAX_ENTITY_EXPANSION: usize = 64 * 1024;
/// At most this many entities inside one another.
pub const MAX_ENTITY_DEPTH: usize = 16;

/// The internal entities a `<!DOCTYPE>` declares, and how much expansion was done so far.
#[derive(Debug, Default)]
struct Entities {
    map: std::collections::HashMap<String, String>,
    expanded: usize,
}

/// Parse a whole document and return its root element.
pub fn parse(text: &str) -> Result<Element, XmlError> {
    let mut entities = Entities::default();
    let mut reader = Reader::from_str(text);
    let config = reader.config_mut();
    config.check_end_names = true;
    config.expand_empty_elements = false;
    config.trim_text(false);

    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let start = reader.buffer_position() as usize;
        let event = reader.read_event().map_err(|e| XmlError {
            message: describe_error(&e),
            offset: reader.error_position() as usize,
        })?;
        match event {
            Event::Start(tag) => {
                let el = open(text, &tag, start, &mut entities)?;
                stack.push(el);
            }
            Event::Empty(tag) => {
                let el = open(text, &tag, start, &mut entities)?;
                attach(&mut stack, &mut root, el, start)?;
            }
            Event::End(_) => {
                let el = stack.pop().ok_or_else(|| XmlError {
                    message: "closing tag without an opening tag".into(),
                    offset: start,
                })?;
                attach(&mut stack, &mut root, el, start)?;
            }
            Event::Text(t) => {
                let raw = String::from_utf8_lossy(t.as_ref()).into_owned();
                let trimmed = raw.trim();
                if trimmed.is_empty() {
                    continue;
                }
                let value = entities.unescape(trimmed).map_err(|message| XmlError {
                    message,
                    offset: start,
                })?;
                match stack.last_mut() {
                    Some(parent) if parent.text.is_none() => {
                        let lead = raw.len() - raw.trim_start().len();
                        parent.text = Some((value, start + lead));
                    }
                    Some(_) => {}
                    None => {
                        return Err(XmlError {
                            message: "text outside the root element".into(),
                            offset: start,
                        });
                    }
                }
            }
            Event::CData(_) | Event::Comment(_) | Event::Decl(_) | Event::PI(_) => {}
            Event::DocType(t) => {
                if root.is_some() || !stack.is_empty() {
                    return Err(XmlError {
                        message: "<!DOCTYPE> after the root element".into(),
                        offset: start,
                    });
                }
                let content = String::from_utf8_lossy(t.as_ref()).into_owned();
                let base = offset_in(text, t.as_ref()).unwrap_or(start);
                entities.declare(&content, base)?;
            }
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.last() {
        return Err(XmlError {
            message: format!("<{}> is never closed", open.name),
            offset: open.offset,
        });
    }
    root.ok_or(XmlError {
        message: "the document has no root element".into(),
        offset: 0,
    })
}

fn attach(
    stack: &mut [Element],
    root: &mut Option<Element>,
    el: Element,
    offset: usize,
) -> Result<(), XmlError> {
    match stack.last_mut() {
        Some(parent) => {
            parent.children.push(el);
            Ok(())
        }
        None if root.is_none() => {
            *root = Some(el);
            Ok(())
        }
        None => Err(XmlError {
            message: "a second root element".into(),
            offset,
        }),
    }
}

fn open(
    text: &str,
    tag: &BytesStart<'_>,
    offset: usize,
    entities: &mut Entities,
) -> Result<Element, XmlError> {
    let name = String::from_utf8_lossy(tag.name().as_ref()).into_owned();
    let mut attrs = Vec::new();
    // quick-xml's own duplicate check compares every attribute with every earlier one; a set
    // keeps a tag with many attributes linear.
    let mut seen = std::collections::HashSet::new();
    let mut cursor = offset;
    for attr in tag.attributes().with_checks(false) {
        let attr = attr.map_err(|e| XmlError {
            message: describe_attr_error(&e),
            offset: offset + attr_error_position(&e),
        })?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        let raw = String::from_utf8_lossy(&attr.value).into_owned();
        let attr_offset = offset_in(text, attr.key.as_ref())
            .unwrap_or_else(|| find_attr_offset(text, cursor, &key));
        cursor = offset_in(text, &attr.value).map_or(attr_offset, |v| v + attr.value.len());
        if !seen.insert(attr.key.as_ref().to_vec()) {
            return Err(XmlError {
                message: format!("duplicated attribute `{key}`"),
                offset: attr_offset,
            });
        }
        let value = entities
            .unescape(&normalize_attribute_whitespace(&raw))
            .map_err(|message| XmlError {
                message,
                offset: attr_offset,
            })?;
        attrs.push(Attr {
            name: key,
            value,
            offset: attr_offset,
        });
    }
    Ok(Element {
        name,
        attrs,
        children: Vec::new(),
        offset,
        text: None,
    })
}

/// The byte offset of `part` in `text`, when `part` is a slice of it (quick-xml reading from a
/// `&str` hands out slices of the input).
fn offset_in(text: &str, part: &[u8]) -> Option<usize> {
    let start = text.as_ptr() as usize;
    let at = (part.as_ptr() as usize).checked_sub(start)?;
    (at + part.len() <= text.len()).then_some(at)
}

/// XML 1.0 §3.3.3: a literal tab, newline or carriage return in an attribute value becomes one
/// space (CR LF counts as one newline). Character references such as `&#10;` are kept, because
/// they are decoded afterwards.
fn normalize_attribute_whitespace(raw: &str) -> String {
    raw.replace("\r\n", "\n").replace(['\r', '\n', '\t'], " ")
}

impl Entities {
    /// Read the `<!DOCTYPE>` content (after `<!DOCTYPE`, up to its `>`) at byte `base`.
    fn declare(&mut self, content: &str, base: usize) -> Result<(), XmlError> {
        let err = |at: usize, message: String| XmlError {
            message,
            offset: base + at,
        };
        let b = content.as_bytes();
        let skip_ws = |mut i: usize| {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            i
        };
        let name_end = |mut i: usize| {
            while i < b.len()
                && !b[i].is_ascii_whitespace()
                && !matches!(b[i], b'[' | b'>' | b'"' | b'\'')
            {
                i += 1;
            }
            i
        };
        let mut i = name_end(skip_ws(0));
        i = skip_ws(i);
        if content[i..].starts_with("SYSTEM") || content[i..].starts_with("PUBLIC") {
            return Err(err(
                i,
                "an external DTD is not read (ParaView does not read one either); declare entities in the internal subset: <!DOCTYPE Servers [<!ENTITY name \"value\">]>".into(),
            ));
        }
        if i >= b.len() {
            return Ok(());
        }
        if b[i] != b'[' {
            return Err(err(i, "unexpected text in <!DOCTYPE>".into()));
        }
        i += 1;
        loop {
            i = skip_ws(i);
            let rest = &content[i..];
            if rest.is_empty() {
                return Err(err(
                    i,
                    "the internal subset of <!DOCTYPE> has no closing `]`".into(),
                ));
            }
            if rest.starts_with(']') {
                let after = skip_ws(i + 1);
                if after < b.len() {
                    return Err(err(
                        after,
                        "unexpected text after the internal subset".into(),
                    ));
                }
                return Ok(());
            }
            let skip_to = |end: &str, what: &str| -> Result<usize, XmlError> {
                rest.find(end)
                    .map(|e| i + e + end.len())
                    .ok_or_else(|| err(i, format!("{what} in <!DOCTYPE> is never closed")))
            };
            if rest.starts_with("<!--") {
                i = skip_to("-->", "a comment")?;
            } else if rest.starts_with("<?") {
                i = skip_to("?>", "a processing instruction")?;
            } else if rest.starts_with("<!ELEMENT") || rest.starts_with("<!NOTATION") {
                i = skip_to(">", "a declaration")?;
            } else if rest.starts_with("<!ATTLIST") {
                return Err(err(
                    i,
                    "attribute-list declarations (<!ATTLIST>) are not supported: write the attributes out".into(),
                ));
            } else if rest.starts_with("<!ENTITY") {
                i = self.entity(content, i, base)?;
            } else if rest.starts_with('%') {
                return Err(err(
                    i,
                    "parameter-entity references are not supported".into(),
                ));
            } else {
                return Err(err(
                    i,
                    "unexpected text in the internal subset of <!DOCTYPE>".into(),
                ));
            }
        }
    }

    /// One `<!ENTITY name "value">` starting at `at`; returns the offset after its `>`.
    fn entity(&mut self, content: &str, at: usize, base: usize) -> Result<usize, XmlError> {
        let err = |i: usize, message: String| XmlError {
            message,
            offset: base + i,
        };
        let b = content.as_bytes();
        let mut i = at + "<!ENTITY".len();
        let ws = |mut i: usize| {
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            i
        };
        i = ws(i);
        if b.get(i) == Some(&b'%') {
            return Err(err(
                i,
                "parameter entities (<!ENTITY % ...>) are not supported".into(),
            ));
        }
        let start = i;
        while i < b.len() && !b[i].is_ascii_whitespace() && !matches!(b[i], b'"' | b'\'' | b'>') {
            i += 1;
        }
        let name = &content[start..i];
        if name.is_empty() {
            return Err(err(start, "an entity declaration without a name".into()));
        }
        i = ws(i);
        if content[i..].starts_with("SYSTEM") || content[i..].starts_with("PUBLIC") {
            return Err(err(
                i,
                format!(
                    "entity `{name}` is external; only internal entities (<!ENTITY {name} \"value\">) are supported"
                ),
            ));
        }
        let quote = match b.get(i) {
            Some(&q) if q == b'"' || q == b'\'' => q as char,
            _ => return Err(err(i, format!("entity `{name}` has no quoted value"))),
        };
        let value_start = i + 1;
        let Some(len) = content[value_start..].find(quote) else {
            return Err(err(
                i,
                format!("the value of entity `{name}` is never closed"),
            ));
        };
        let raw = &content[value_start..value_start + len];
        i = ws(value_start + len + 1);
        if b.get(i) != Some(&b'>') {
            return Err(err(
                i,
                format!("`>` expected after the value of entity `{name}`"),
            ));
        }
        if let Some(p) = raw.find('%') {
            return Err(err(
                value_start + p,
                "parameter-entity references are not supported".into(),
            ));
        }
        // Character references are replaced when the entity is declared; entity references
        // stay, and are expanded where the entity is used.
        let value = char_refs_only(raw).map_err(|m| err(value_start, m))?;
        if value.len() > MAX_ENTITY_EXPANSION {
            return Err(err(
                value_start,
                format!("entity `{name}` is longer than {MAX_ENTITY_EXPANSION} bytes"),
            ));
        }
        // The first declaration of a name counts (XML 1.0 §4.2).
        self.map.entry(name.to_string()).or_insert(value);
        Ok(i + 1)
    }

    /// Decode references in an attribute value or text: the five predefined entities,
    /// character references and declared entities (bounded).
    fn unescape(&mut self, raw: &str) -> Result<String, String> {
        if !raw.contains('&') {
            return Ok(raw.to_string());
        }
        let mut out = String::with_capacity(raw.len());
        let mut open = Vec::new();
        self.expand(raw, &mut out, &mut open)?;
        Ok(out)
    }

    fn expand(
        &mut self,
        raw: &str,
        out: &mut String,
        open: &mut Vec<String>,
    ) -> Result<(), String> {
        let mut rest = raw;
        while let Some(amp) = rest.find('&') {
            out.push_str(&rest[..amp]);
            let after = &rest[amp + 1..];
            let Some(semi) = after.find(';') else {
                return Err("`&` that starts no reference (write `&amp;`)".into());
            };
            let name = &after[..semi];
            rest = &after[semi + 1..];
            if let Some(c) = predefined(name) {
                out.push(c);
                continue;
            }
            if name.starts_with('#') {
                out.push(char_ref(name)?);
                continue;
            }
            let Some(value) = self.map.get(name).cloned() else {
                if self.map.is_empty() {
                    return Err(format!(
                        "unknown entity `&{name};` (only &lt; &gt; &amp; &quot; &apos; and &#N; exist)"
                    ));
                }
                return Err(format!(
                    "unknown entity `&{name};` (only &lt; &gt; &amp; &quot; &apos;, &#N; and entities declared in <!DOCTYPE Servers [<!ENTITY {name} \"...\">]> exist)"
                ));
            };
            if open.iter().any(|n| n == name) {
                return Err(format!("entity `&{name};` refers to itself"));
            }
            if open.len() >= MAX_ENTITY_DEPTH {
                return Err(format!(
                    "entities nest more than {MAX_ENTITY_DEPTH} deep (at `&{name};`)"
                ));
            }
            if value.contains('<') {
                return Err(format!(
                    "entity `&{name};` contains `<`, which an attribute value cannot hold"
                ));
            }
            self.expanded += value.len();
            if self.expanded > MAX_ENTITY_EXPANSION {
                return Err(format!(
                    "entity expansion passes {MAX_ENTITY_EXPANSION} bytes for this file (at `&{name};`)"
                ));
            }
            open.push(name.to_string());
            self.expand(&normalize_attribute_whitespace(&value), out, open)?;
            open.pop();
            if out.len() > MAX_ENTITY_EXPANSION + raw.len() {
                return Err(format!(
                    "entity expansion passes {MAX_ENTITY_EXPANSION} bytes for this file (at `&{name};`)"
                ));
            }
        }
        out.push_str(rest);
        Ok(())
    }
}

fn predefined(name: &str) -> Option<char> {
    Some(match name {
        "lt" => '<',
        "gt" => '>',
        "amp" => '&',
        "quot" => '"',
        "apos" => '\'',
        _ => return None,
    })
}

/// `#65` or `#x41` (without `&` and `;`) as a character XML allows.
fn char_ref(name: &str) -> Result<char, String> {
    let body = &name[1..];
    let code = match body.strip_prefix('x') {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => body.parse::<u32>().ok(),
    };
    code.and_then(char::from_u32)
        .filter(|&c| c == '\t' || c == '\n' || c == '\r' || c >= ' ')
        .ok_or_else(|| format!("bad character reference `&{name};`"))
}

/// An entity value with its character references replaced; other references kept as written.
fn char_refs_only(raw: &str) -> Result<String, String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let Some(semi) = after.find(';') else {
            return Err("`&` that starts no reference in an entity value".into());
        };
        let name = &after[..semi];
        if name.starts_with('#') {
            out.push(char_ref(name)?);
        } else if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("bad reference `&{name};` in an entity value"));
        } else {
            out.push('&');
            out.push_str(name);
            out.push(';');
        }
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Where attribute `key` starts inside the tag, searching from `tag_offset` (a fallback: the
/// offset normally comes from the slice quick-xml returns).
fn find_attr_offset(text: &str, tag_offset: usize, key: &str) -> usize {
    let tag_end = text[tag_offset..]
        .find('>')
        .map_or(text.len(), |e| tag_offset + e);
    let tag = &text[tag_offset..tag_end];
    let bytes = tag.as_bytes();
    let mut from = 0;
    while let Some(pos) = tag[from..].find(key) {
        let at = from + pos;
        let before_ok = at > 0 && bytes[at - 1].is_ascii_whitespace();
        let after = tag[at + key.len()..].trim_start();
        if before_ok && after.starts_with('=') {
            return tag_offset + at;
        }
        from = at + key.len();
    }
    tag_offset
}

fn describe_error(e: &quick_xml::Error) -> String {
    use quick_xml::Error;
    match e {
        Error::IllFormed(ill) => ill.to_string(),
        Error::Syntax(syn) => syn.to_string(),
        other => other.to_string(),
    }
}

fn describe_attr_error(e: &quick_xml::events::attributes::AttrError) -> String {
    e.to_string()
}

fn attr_error_position(e: &quick_xml::events::attributes::AttrError) -> usize {
    use quick_xml::events::attributes::AttrError;
    match e {
        AttrError::ExpectedEq(p)
        | AttrError::ExpectedValue(p)
        | AttrError::UnquotedValue(p)
        | AttrError::ExpectedQuote(p, _)
        | AttrError::Duplicated(p, _) => *p,
    }
}

/// Turn a byte offset into a 1-based line and a 1-based column counted in characters.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut offset = offset;
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = text[line_start..offset].chars().count() + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_offsets_and_decodes_attributes() {
        let text = "<Servers>\n  <Server name=\"a &amp; b\" resource='x&#x27;y'/>\n</Servers>";
        let root = parse(text).unwrap();
        assert_eq!(root.name, "Servers");
        let server = &root.children[0];
        assert_eq!(server.attr("name"), Some("a & b"));
        assert_eq!(server.attr("resource"), Some("x'y"));
        assert_eq!(line_col(text, server.offset), (2, 3));
        assert_eq!(
            line_col(text, server.attr_entry("resource").unwrap().offset),
            (2, 28)
        );
    }

    #[test]
    fn normalises_literal_newlines_but_keeps_character_references() {
        let text = "<A v=\"one\r\ntwo\tthree\nfour&#10;five\"/>";
        let root = parse(text).unwrap();
        assert_eq!(root.attr("v"), Some("one two three four\nfive"));
    }

    #[test]
    fn reports_mismatched_tags_with_position() {
        let text = "<Servers>\n  <Server>\n  </Servers>";
        let err = parse(text).unwrap_err();
        assert!(err.message.contains("Server"), "{err:?}");
        assert_eq!(line_col(text, err.offset).0, 3);
    }

    #[test]
    fn rejects_duplicate_attributes_and_unknown_entities() {
        assert!(parse("<A x='1' x='2'/>").is_err());
        let err = parse("<A x='&nbsp;'/>").unwrap_err();
        assert!(err.message.contains("nbsp"), "{err:?}");
    }

    #[test]
    fn internal_entities_expand_in_attributes() {
        let text = "<?xml version=\"1.0\"?>\n<!DOCTYPE Servers [\n <!-- c -->\n <!ENTITY host \"gw.example\">\n <!ENTITY login '&user;@&host;'>\n <!ENTITY user \"erin\">\n <!ENTITY q \"say &#34;hi&#34; &amp; go\">\n <!ENTITY host \"ignored\">\n]>\n<A v=\"&login;\" w=\"&q;\" x=\"x&host;y\"/>";
        let root = parse(text).unwrap();
        assert_eq!(root.attr("v"), Some("erin@gw.example"));
        assert_eq!(root.attr("w"), Some("say \"hi\" & go"));
        assert_eq!(root.attr("x"), Some("xgw.exampley"));
    }

    #[test]
    fn entity_expansion_is_bounded_and_internal_only() {
        // Ten levels of ten: 10^10 bytes if expanded.
        let mut dtd = String::from("<!ENTITY e0 \"lollollollol\">");
        for i in 1..10 {
            let refs = format!("&e{};", i - 1).repeat(10);
            dtd.push_str(&format!("<!ENTITY e{i} \"{refs}\">"));
        }
        let text = format!("<!DOCTYPE A [{dtd}]>\n<A v=\"&e9;\"/>");
        let err = parse(&text).unwrap_err();
        assert!(err.message.contains("65536 bytes"), "{err:?}");
        assert_eq!(line_col(&text, err.offset), (2, 4));
        for (bad, says) in [
            ("<!DOCTYPE A SYSTEM \"a.dtd\"><A/>", "external DTD"),
            ("<!DOCTYPE A [<!ENTITY x SYSTEM \"f\">]><A/>", "external"),
            ("<!DOCTYPE A [<!ENTITY % p \"x\">]><A/>", "parameter"),
            (
                "<!DOCTYPE A [<!ENTITY a \"&b;\"><!ENTITY b \"&a;\">]><A v='&a;'/>",
                "itself",
            ),
            (
                "<!DOCTYPE A [<!ENTITY a \"<B/>\">]><A v='&a;'/>",
                "contains `<`",
            ),
            ("<!DOCTYPE A [<!ATTLIST A v CDATA 'x'>]><A/>", "ATTLIST"),
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.message.contains(says), "{bad}: {err:?}");
        }
    }

    #[test]
    fn unclosed_root_is_an_error() {
        let err = parse("<Servers><Server/>").unwrap_err();
        assert!(
            err.message.contains("never closed") || err.message.contains("Servers"),
            "{err:?}"
        );
    }

    #[test]
    fn attribute_offsets_point_at_their_names() {
        let text = "<A a='1' bb=\"2\"\n   ccc='a=b bb=3'  d='' />";
        let root = parse(text).unwrap();
        for a in &root.attrs {
            assert!(
                text[a.offset..].starts_with(&format!("{}=", a.name)),
                "{a:?}"
            );
        }
        let err = parse("<A a='1' b='2' a='3'/>").unwrap_err();
        assert_eq!(err.offset, 15, "{err:?}");
    }

    #[test]
    fn line_col_counts_characters() {
        let text = "é<A/>";
        assert_eq!(line_col(text, 2), (1, 2));
    }
}
