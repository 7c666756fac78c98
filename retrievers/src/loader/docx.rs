//! Word documents (`.docx`): the paragraphs of `word/document.xml`, with
//! headings kept as Markdown headings so the Markdown splitter sees the
//! structure. The archive entry is size-checked before it is inflated.

use std::io::{Cursor, Read};

use quick_xml::Reader;
use quick_xml::events::{BytesStart, Event};

/// The most `word/document.xml` may inflate to.
const MAX_XML_BYTES: u64 = 64 << 20;

/// The text of the `.docx` in `bytes`: one line per paragraph, `#`… in front
/// of headings, or why it cannot be read.
pub(super) fn text(bytes: &[u8]) -> Result<String, String> {
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| format!("not a .docx file (not a zip archive: {e})"))?;
    let mut entry = archive
        .by_name("word/document.xml")
        .map_err(|_| "not a .docx file (no word/document.xml inside)".to_string())?;
    if entry.size() > MAX_XML_BYTES {
        return Err(format!(
            "its text part inflates to {} bytes, over the {MAX_XML_BYTES}-byte limit",
            entry.size()
        ));
    }
    let mut xml = String::new();
    (&mut entry)
        .take(MAX_XML_BYTES + 1)
        .read_to_string(&mut xml)
        .map_err(|e| format!("cannot inflate word/document.xml: {e}"))?;
    if xml.len() as u64 > MAX_XML_BYTES {
        return Err(format!(
            "its text part inflates to more than {MAX_XML_BYTES} bytes"
        ));
    }
    let text = paragraphs(&xml)?;
    if text.trim().is_empty() {
        return Err("the document has no text".into());
    }
    Ok(text)
}

/// The heading level a paragraph style names (`Heading2` → 2, `Title` → 1).
fn heading_level(style: &str) -> Option<usize> {
    if style.eq_ignore_ascii_case("title") {
        return Some(1);
    }
    let digits = style
        .strip_prefix("Heading")
        .or_else(|| style.strip_prefix("heading"))?;
    digits.trim().parse().ok().filter(|n| (1..=6).contains(n))
}

fn attribute(element: &BytesStart<'_>, name: &str) -> Option<String> {
    element
        .attributes()
        .flatten()
        .find(|a| a.key.as_ref() == name)
        .and_then(|a| {
            a.normalized_value(quick_xml::XmlVersion::default())
                .ok()
                .map(|v| v.into_owned())
        })
}

/// Walks the WordprocessingML: text runs (`w:t`), tabs and breaks inside
/// paragraphs (`w:p`), whose style (`w:pStyle`) may make them headings.
fn paragraphs(xml: &str) -> Result<String, String> {
    let mut reader = Reader::from_str(xml);
    let mut out = String::new();
    let mut paragraph = String::new();
    let mut level: Option<usize> = None;
    let mut in_text = false;
    loop {
        let event = reader
            .read_event()
            .map_err(|e| format!("word/document.xml is not valid XML: {e}"))?;
        match event {
            Event::Start(e) | Event::Empty(e) => match e.name().as_ref() {
                "w:p" => {
                    paragraph.clear();
                    level = None;
                }
                "w:pStyle" => level = attribute(&e, "w:val").and_then(|s| heading_level(&s)),
                "w:t" => in_text = true,
                "w:tab" => paragraph.push('\t'),
                "w:br" | "w:cr" => paragraph.push('\n'),
                _ => {}
            },
            Event::Text(t) if in_text => paragraph.push_str(&t.xml10_content()),
            Event::GeneralRef(r) if in_text => {
                let name = r.xml10_content();
                if let Ok(Some(c)) = r.resolve_char_ref() {
                    paragraph.push(c);
                } else if let Some(s) = quick_xml::escape::resolve_predefined_entity(&name) {
                    paragraph.push_str(s);
                }
            }
            Event::End(e) => match e.name().as_ref() {
                "w:t" => in_text = false,
                "w:p" => {
                    let line = paragraph.trim();
                    if !line.is_empty() {
                        if let Some(n) = level {
                            out.push_str(&"#".repeat(n));
                            out.push(' ');
                        }
                        out.push_str(line);
                        out.push_str(if level.is_some() { "\n\n" } else { "\n" });
                    }
                    paragraph.clear();
                }
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// A minimal `.docx` whose body is `body` (WordprocessingML paragraphs).
    pub(crate) fn docx(body: &str) -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        zip.start_file("[Content_Types].xml", options)
            .expect("entry");
        zip.write_all(br#"<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types"/>"#)
            .expect("write");
        zip.start_file("word/document.xml", options).expect("entry");
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><w:document xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"><w:body>{body}</w:body></w:document>"#
        );
        zip.write_all(xml.as_bytes()).expect("write");
        zip.finish().expect("finish").into_inner()
    }

    #[test]
    fn paragraphs_headings_and_entities() {
        let bytes = docx(concat!(
            r#"<w:p><w:pPr><w:pStyle w:val="Heading1"/></w:pPr><w:r><w:t>检索增强</w:t></w:r></w:p>"#,
            r#"<w:p><w:r><w:t xml:space="preserve">RAG &amp; </w:t></w:r><w:r><w:t>BM25</w:t></w:r><w:r><w:tab/><w:t>&#x4E2D;文</w:t></w:r></w:p>"#,
            r#"<w:p><w:pPr><w:pStyle w:val="Heading2"/></w:pPr><w:r><w:t>Details</w:t></w:r></w:p>"#,
            r#"<w:p/><w:p><w:r><w:t>Last line.</w:t></w:r></w:p>"#,
        ));
        let text = text(&bytes).expect("read");
        assert_eq!(
            text,
            "# 检索增强\n\nRAG & BM25\t中文\n## Details\n\nLast line.\n"
        );
    }

    #[test]
    fn other_zips_broken_xml_and_non_zips_are_clear_errors() {
        let err = text(b"PK\x03\x04 not a zip").unwrap_err();
        assert!(err.contains("not a .docx"), "{err}");
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        zip.start_file("hello.txt", zip::write::SimpleFileOptions::default())
            .expect("entry");
        zip.write_all(b"hi").expect("write");
        let other = zip.finish().expect("finish").into_inner();
        let err = text(&other).unwrap_err();
        assert!(err.contains("no word/document.xml"), "{err}");
        let err = text(&docx("<w:p><w:r><w:t>open")).unwrap_err();
        assert!(
            err.contains("not valid XML") || err.contains("no text"),
            "{err}"
        );
    }
}
