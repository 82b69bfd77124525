//! A small element tree read with quick-xml, and a view of it ([`Node`]) that knows its XML path
//! and refuses what a parser did not ask for.
//!
//! The document is read into a tree first, not walked as events, so that every error can name the
//! path of the element or attribute in question, and so that an element's unknown attributes and
//! children can be refused before its known ones are interpreted. Limits on size and depth keep a
//! hostile document from a deep recursion and bound its tree to some tens of megabytes (1 MiB of
//! empty elements is ~260,000 elements); the daemon reads one document per call.

use quick_xml::Reader;
use quick_xml::XmlVersion;
use quick_xml::escape::resolve_predefined_entity;
use quick_xml::events::{BytesStart, Event};

use crate::error::DomainError;

/// The largest document accepted, in bytes (libvirt's own RPC limit for a string is 4 MiB).
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;
/// The deepest element nesting accepted; the supported subset needs 5.
pub const MAX_DEPTH: usize = 16;

/// One element: its name, attributes in document order, child elements and direct text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The qualified name as written (a prefix stays part of it).
    pub name: String,
    /// Attributes with their values normalized as XML 1.0 says.
    pub attrs: Vec<(String, String)>,
    /// Child elements in document order.
    pub children: Vec<Element>,
    /// The element's own text (text of children excluded), entities resolved.
    pub text: String,
}

impl Element {
    fn new(start: &BytesStart<'_>, path: &str) -> Result<Self, DomainError> {
        let name = start.name().as_ref().to_string();
        let mut attrs = Vec::new();
        for attr in start.attributes() {
            let attr = attr.map_err(|e| malformed(path, 0, &e.to_string()))?;
            let key = attr.key.as_ref().to_string();
            let value = attr
                .normalized_value(XmlVersion::Implicit1_0)
                .map_err(|e| malformed(path, 0, &e.to_string()))?;
            check_chars(&format!("{path}/{name}/@{key}"), &value)?;
            attrs.push((key, value.into_owned()));
        }
        Ok(Element {
            name,
            attrs,
            children: Vec::new(),
            text: String::new(),
        })
    }
}

fn malformed(path: &str, position: u64, reason: &str) -> DomainError {
    DomainError::Malformed {
        path: if path.is_empty() { "/" } else { path }.to_string(),
        position,
        reason: reason.to_string(),
    }
}

/// Characters XML 1.0 cannot carry (control characters other than tab, newline and carriage
/// return, and U+FFFE/U+FFFF) would make our output invalid, so they are refused where they come in.
fn check_chars(path: &str, text: &str) -> Result<(), DomainError> {
    let not_xml = |c: char| {
        (c < ' ' && !matches!(c, '\t' | '\n' | '\r')) || matches!(c, '\u{FFFE}' | '\u{FFFF}')
    };
    match text.chars().find(|&c| not_xml(c)) {
        Some(c) => Err(DomainError::invalid(
            path,
            text,
            format!("contains U+{:04X}, which XML 1.0 cannot carry", c as u32),
        )),
        None => Ok(()),
    }
}

fn path_of(stack: &[Element]) -> String {
    stack.iter().map(|e| format!("/{}", e.name)).collect()
}

/// Parses a whole document into its root element.
pub fn parse_document(text: &str) -> Result<Element, DomainError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(DomainError::TooLarge {
            path: "/".into(),
            reason: format!(
                "the document has {} bytes, more than the {MAX_DOCUMENT_BYTES} accepted",
                text.len()
            ),
        });
    }
    let mut reader = Reader::from_str(text);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut root: Option<Element> = None;
    loop {
        let position = reader.buffer_position();
        let event = reader
            .read_event()
            .map_err(|e| malformed(&path_of(&stack), position, &e.to_string()))?;
        let path = path_of(&stack);
        match event {
            Event::Start(start) => {
                open(&mut stack, &root, &start, &path, position)?;
            }
            Event::Empty(start) => {
                open(&mut stack, &root, &start, &path, position)?;
                close(&mut stack, &mut root);
            }
            Event::End(_) => close(&mut stack, &mut root),
            Event::Text(content) => {
                add_text(&mut stack, &content.xml10_content(), &path, position)?
            }
            Event::CData(data) => {
                add_text(&mut stack, &data.xml10_content(), &path, position)?;
            }
            Event::GeneralRef(reference) => {
                let resolved = match reference.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    Ok(None) => match resolve_predefined_entity(&reference) {
                        Some(text) => text.to_string(),
                        None => {
                            let reason = format!("unknown entity &{};", &*reference);
                            return Err(malformed(&path, position, &reason));
                        }
                    },
                    Err(e) => return Err(malformed(&path, position, &e.to_string())),
                };
                add_text(&mut stack, &resolved, &path, position)?;
            }
            Event::DocType(_) => {
                return Err(malformed(&path, position, "a DOCTYPE is not accepted"));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(malformed(
            &path_of(&stack),
            reader.buffer_position(),
            "the document ends inside an element",
        ));
    }
    root.ok_or_else(|| malformed("/", 0, "the document has no element"))
}

fn open(
    stack: &mut Vec<Element>,
    root: &Option<Element>,
    start: &BytesStart<'_>,
    path: &str,
    position: u64,
) -> Result<(), DomainError> {
    if stack.is_empty() && root.is_some() {
        return Err(malformed(path, position, "a second root element"));
    }
    if stack.len() >= MAX_DEPTH {
        return Err(DomainError::TooLarge {
            path: path.to_string(),
            reason: format!("elements nest deeper than {MAX_DEPTH} levels"),
        });
    }
    stack.push(Element::new(start, path)?);
    Ok(())
}

fn close(stack: &mut Vec<Element>, root: &mut Option<Element>) {
    if let Some(done) = stack.pop() {
        match stack.last_mut() {
            Some(parent) => parent.children.push(done),
            None => *root = Some(done),
        }
    }
}

fn add_text(
    stack: &mut [Element],
    text: &str,
    path: &str,
    position: u64,
) -> Result<(), DomainError> {
    match stack.last_mut() {
        Some(element) => {
            check_chars(path, text)?;
            element.text.push_str(text);
            Ok(())
        }
        None if text.trim().is_empty() => Ok(()),
        None => Err(malformed("/", position, "text outside the root element")),
    }
}

/// An element together with its path, for parsers that want errors naming where they are.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    element: &'a Element,
    path: &'a str,
}

/// An owned path string a [`Node`] can borrow (paths are built as the parser descends).
pub struct Located<'a> {
    element: &'a Element,
    path: String,
}

impl<'a> Located<'a> {
    /// The root element at `/name`.
    pub fn root(element: &'a Element) -> Self {
        Located {
            path: format!("/{}", element.name),
            element,
        }
    }

    /// A borrowed view of this element.
    pub fn node(&self) -> Node<'_> {
        Node {
            element: self.element,
            path: &self.path,
        }
    }
}

impl<'a> Node<'a> {
    /// This element's path.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The path of one of this element's attributes.
    pub fn attr_path(&self, name: &str) -> String {
        format!("{}/@{name}", self.path)
    }

    /// The element's name.
    pub fn name(&self) -> &'a str {
        &self.element.name
    }

    /// Refuses attributes and child elements not listed, and any non-blank text.
    pub fn allow(&self, attrs: &[&str], children: &[&str]) -> Result<(), DomainError> {
        self.allow_attrs(attrs)?;
        if let Some(child) = self
            .element
            .children
            .iter()
            .find(|c| !children.contains(&c.name.as_str()))
        {
            return Err(DomainError::UnsupportedElement {
                path: format!("{}/{}", self.path, child.name),
            });
        }
        if !self.element.text.trim().is_empty() {
            return Err(DomainError::UnexpectedText {
                path: self.path.to_string(),
            });
        }
        Ok(())
    }

    /// For a leaf element with text: refuses attributes not listed and any child element.
    pub fn allow_text(&self, attrs: &[&str]) -> Result<(), DomainError> {
        self.allow_attrs(attrs)?;
        match self.element.children.first() {
            Some(child) => Err(DomainError::UnsupportedElement {
                path: format!("{}/{}", self.path, child.name),
            }),
            None => Ok(()),
        }
    }

    fn allow_attrs(&self, attrs: &[&str]) -> Result<(), DomainError> {
        match self
            .element
            .attrs
            .iter()
            .find(|(key, _)| !attrs.contains(&key.as_str()))
        {
            Some((key, _)) => Err(DomainError::UnsupportedAttribute {
                path: self.attr_path(key),
            }),
            None => Ok(()),
        }
    }

    /// An attribute's value, if present.
    pub fn attr(&self, name: &str) -> Option<&'a str> {
        self.element
            .attrs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// An attribute that must be present.
    pub fn required_attr(&self, name: &str) -> Result<&'a str, DomainError> {
        self.attr(name)
            .ok_or_else(|| DomainError::MissingAttribute {
                path: self.attr_path(name),
            })
    }

    /// The element's text as written.
    pub fn raw_text(&self) -> &'a str {
        &self.element.text
    }

    /// The element's text without surrounding white space.
    pub fn text(&self) -> &'a str {
        self.element.text.trim()
    }

    /// The one child with this name, if any; a second one is an error.
    pub fn child(&self, name: &str) -> Result<Option<Located<'a>>, DomainError> {
        let mut found = self.element.children.iter().filter(|c| c.name == name);
        let first = found.next();
        if found.next().is_some() {
            return Err(DomainError::DuplicateElement {
                path: format!("{}/{name}", self.path),
            });
        }
        Ok(first.map(|element| Located {
            element,
            path: format!("{}/{name}", self.path),
        }))
    }

    /// The one child with this name, which must be present.
    pub fn required_child(&self, name: &str) -> Result<Located<'a>, DomainError> {
        self.child(name)?
            .ok_or_else(|| DomainError::MissingElement {
                path: format!("{}/{name}", self.path),
            })
    }

    /// Every child with this name, in document order, with 1-based indexes in their paths.
    pub fn children(&self, name: &'a str) -> impl Iterator<Item = Located<'a>> + 'a {
        let parent = self.path.to_string();
        let element = self.element;
        element
            .children
            .iter()
            .filter(move |c| c.name == name)
            .enumerate()
            .map(move |(i, element)| Located {
                element,
                path: format!("{parent}/{name}[{}]", i + 1),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_attributes_text_and_children_with_entities_resolved() {
        let root = parse_document(
            "<?xml version='1.0'?><!-- hi --><a x='1 &amp; 2'>t&lt;<b/>&#65;<![CDATA[<c>]]></a>",
        )
        .unwrap();

        assert_eq!(root.name, "a");
        assert_eq!(root.attrs, vec![("x".into(), "1 & 2".into())]);
        assert_eq!(root.text, "t<A<c>");
        assert_eq!(root.children.len(), 1);
    }

    #[test]
    fn refuses_malformed_documents() {
        for text in [
            "",
            "<a>",
            "<a></b>",
            "<a/><b/>",
            "<a x='1' x='2'/>",
            "<a>&foo;</a>",
            "<!DOCTYPE a><a/>",
            "text<a/>",
            "<a>\u{1}</a>",
            "<a x='&#1;'/>",
        ] {
            assert!(parse_document(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn refuses_deep_and_large_documents() {
        let deep = "<a>".repeat(MAX_DEPTH + 1) + &"</a>".repeat(MAX_DEPTH + 1);
        let large = format!("<a>{}</a>", " ".repeat(MAX_DOCUMENT_BYTES));

        assert!(matches!(
            parse_document(&deep),
            Err(DomainError::TooLarge { .. })
        ));
        assert!(matches!(
            parse_document(&large),
            Err(DomainError::TooLarge { .. })
        ));
    }

    #[test]
    fn nodes_refuse_what_was_not_asked_for_with_paths() {
        let root = parse_document("<d a='1'><x/><y k='v'/><y/>text</d>").unwrap();
        let located = Located::root(&root);
        let node = located.node();

        let unknown_attr = node.allow(&[], &["x", "y"]).unwrap_err();
        let unknown_child = node.allow(&["a"], &["x"]).unwrap_err();
        let text = node.allow(&["a"], &["x", "y"]).unwrap_err();
        let duplicate = node.child("y").err().unwrap();
        let ys: Vec<String> = node.children("y").map(|y| y.path).collect();

        assert_eq!(unknown_attr.to_string(), "unsupported attribute /d/@a");
        assert_eq!(unknown_child.to_string(), "unsupported element /d/y");
        assert_eq!(text.to_string(), "unexpected text in /d");
        assert_eq!(duplicate.to_string(), "duplicate element /d/y");
        assert_eq!(ys, ["/d/y[1]", "/d/y[2]"]);
    }
}
