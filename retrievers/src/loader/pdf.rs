//! PDF files: the text layer of every page, read with lopdf. Each page's
//! decompressed content is bounded, so a small file that inflates to
//! gigabytes (a compression bomb) is refused instead of exhausting memory.

use lopdf::Document;

/// The most a page's content may decompress to.
const MAX_PAGE_BYTES: usize = 64 << 20;

/// The text of the PDF in `bytes`, pages separated by blank lines, or why it
/// cannot be read (not a PDF, encrypted, a page too large, no text layer).
pub(super) fn text(bytes: &[u8]) -> Result<String, String> {
    // lopdf reports malformed files as errors; a parser panic on some input
    // no one has tried yet must still not take the whole ingestion down.
    std::panic::catch_unwind(|| extract(bytes))
        .unwrap_or_else(|_| Err("the PDF parser failed on this file".into()))
}

fn extract(bytes: &[u8]) -> Result<String, String> {
    let document = Document::load_mem(bytes).map_err(|e| format!("not a readable PDF: {e}"))?;
    if document.is_encrypted() {
        return Err("the PDF is encrypted; decrypt it first".into());
    }
    let mut pages = Vec::new();
    for number in document.get_pages().keys() {
        let page = document
            .extract_text_with_limit(&[*number], MAX_PAGE_BYTES)
            .map_err(|e| format!("page {number}: {e}"))?;
        let page = page.trim();
        if !page.is_empty() {
            pages.push(page.to_string());
        }
    }
    if pages.is_empty() {
        return Err("the PDF has no text layer (a scanned PDF needs OCR first)".into());
    }
    Ok(pages.join("\n\n"))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid PDF with one page per entry of `pages`, each showing its text
    /// with the standard Helvetica font.
    pub(crate) fn pdf(pages: &[&str]) -> Vec<u8> {
        let streams: Vec<(Vec<u8>, &str)> = pages
            .iter()
            .map(|text| {
                (
                    format!("BT /F1 12 Tf 72 720 Td ({text}) Tj ET").into_bytes(),
                    "",
                )
            })
            .collect();
        pdf_of_streams(&streams)
    }

    /// A valid PDF with one page per content stream: (bytes as stored, extra
    /// entries of the stream dictionary such as `/Filter /FlateDecode`).
    fn pdf_of_streams(streams: &[(Vec<u8>, &str)]) -> Vec<u8> {
        let mut objects: Vec<Vec<u8>> = vec![
            b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
            Vec::new(), // the page tree, once the page ids are known
            b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
        ];
        let mut kids = Vec::new();
        for (content, extra) in streams {
            let mut stream =
                format!("<< /Length {} {extra} >>\nstream\n", content.len()).into_bytes();
            stream.extend_from_slice(content);
            stream.extend_from_slice(b"\nendstream");
            objects.push(stream);
            let content_id = objects.len();
            objects.push(
                format!(
                    "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] \
                     /Resources << /Font << /F1 3 0 R >> >> /Contents {content_id} 0 R >>"
                )
                .into_bytes(),
            );
            kids.push(format!("{} 0 R", objects.len()));
        }
        objects[1] = format!(
            "<< /Type /Pages /Kids [{}] /Count {} >>",
            kids.join(" "),
            kids.len()
        )
        .into_bytes();
        let mut out = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (i, body) in objects.iter().enumerate() {
            offsets.push(out.len());
            out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
            out.extend_from_slice(body);
            out.extend_from_slice(b"\nendobj\n");
        }
        let xref = out.len();
        out.extend_from_slice(
            format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
        );
        for offset in offsets {
            out.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
        }
        out.extend_from_slice(
            format!(
                "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
                objects.len() + 1
            )
            .as_bytes(),
        );
        out
    }

    #[test]
    fn a_page_that_inflates_past_the_limit_is_refused() {
        use std::io::Write;
        let mut content = b"BT /F1 12 Tf 72 720 Td (bomb) Tj ET\n".to_vec();
        content.resize(MAX_PAGE_BYTES + (1 << 20), b' ');
        let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&content).expect("deflate");
        let packed = encoder.finish().expect("deflate");
        assert!(packed.len() < 200_000, "{} bytes", packed.len());
        let bytes = pdf_of_streams(&[(packed, "/Filter /FlateDecode")]);
        let err = text(&bytes).unwrap_err();
        assert!(err.starts_with("page 1:"), "{err}");
    }

    #[test]
    fn every_page_is_read_in_order() {
        let text = text(&pdf(&["Retrieval first.", "Generation second."])).expect("read");
        let first = text.find("Retrieval first.").expect("page 1");
        let second = text.find("Generation second.").expect("page 2");
        assert!(first < second, "{text:?}");
    }

    #[test]
    fn broken_truncated_and_empty_pdfs_are_clear_errors() {
        let err = text(b"%PDF-1.4\nnot really").unwrap_err();
        assert!(err.contains("not a readable PDF"), "{err}");
        let whole = pdf(&["Some text here."]);
        let err = text(&whole[..whole.len() / 2]).unwrap_err();
        assert!(!err.is_empty());
        let err = text(&pdf(&[""])).unwrap_err();
        assert!(err.contains("no text layer"), "{err}");
    }
}
