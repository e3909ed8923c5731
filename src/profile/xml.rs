//! A small positioned XML tree built with quick-xml.
//!
//! quick-xml's serde layer reports errors without positions, so profiles are read into this tree
//! first: every element and attribute keeps the byte offset it starts at, which the validation
//! step turns into `file:line:col`. Attribute values are entity-decoded and whitespace-normalised
//! the way a conforming XML parser (expat, which ParaView uses) does.

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

/// Parse a whole document and return its root element.
pub fn parse(text: &str) -> Result<Element, XmlError> {
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
                let el = open(text, &tag, start)?;
                stack.push(el);
            }
            Event::Empty(tag) => {
                let el = open(text, &tag, start)?;
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
                let value = unescape(trimmed).map_err(|message| XmlError {
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
            Event::DocType(_) => {
                return Err(XmlError {
                    message: "document type declarations (<!DOCTYPE>) are not supported".into(),
                    offset: start,
                });
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

fn open(text: &str, tag: &BytesStart<'_>, offset: usize) -> Result<Element, XmlError> {
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
        let value =
            unescape(&normalize_attribute_whitespace(&raw)).map_err(|message| XmlError {
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

fn unescape(raw: &str) -> Result<String, String> {
    quick_xml::escape::unescape(raw)
        .map(|c| c.into_owned())
        .map_err(|e| match e {
            quick_xml::escape::EscapeError::UnrecognizedEntity(_, name) => {
                format!(
                    "unknown entity `&{name};` (only &lt; &gt; &amp; &quot; &apos; and &#N; exist)"
                )
            }
            other => format!("bad character reference: {other}"),
        })
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
