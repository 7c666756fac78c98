//! Bytes to text: byte-order marks, UTF-8, and legacy encodings (GBK, GB18030,
//! Big5, Shift-JIS, …) detected from the content.

/// How a file's bytes were decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded<'a> {
    /// The encoding's name (`UTF-8`, `GBK`, …).
    pub(crate) encoding: &'a str,
}

/// Why bytes could not be decoded as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NotText {
    /// NUL bytes: a binary file.
    Binary,
    /// No encoding decodes it cleanly.
    Undecodable(&'static str),
}

/// Decodes `bytes` as text, or says why it is not text.
pub(crate) fn decode(bytes: &[u8]) -> Result<(String, Decoded<'static>), NotText> {
    if let Some((encoding, bom_len)) = encoding_rs::Encoding::for_bom(bytes) {
        let (text, had_errors) = encoding.decode_without_bom_handling(&bytes[bom_len..]);
        if had_errors {
            return Err(NotText::Undecodable(encoding.name()));
        }
        return Ok((
            text.into_owned(),
            Decoded {
                encoding: encoding.name(),
            },
        ));
    }
    if bytes.iter().take(8192).any(|&b| b == 0) {
        return Err(NotText::Binary);
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        return Ok((text.to_string(), Decoded { encoding: "UTF-8" }));
    }
    if mostly_utf8(bytes) {
        // A UTF-8 file with a few damaged bytes (a bad copy, a cut-off
        // download): keep its text and mark the damage with U+FFFD, rather
        // than read the whole file in some legacy encoding as mojibake.
        return Ok((
            String::from_utf8_lossy(bytes).into_owned(),
            Decoded {
                encoding: "UTF-8 (damaged bytes replaced)",
            },
        ));
    }
    let mut detector = chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Deny);
    detector.feed(bytes, true);
    // Chinese documents are the common case: let the detector prefer them.
    let encoding = detector.guess(Some(b"cn"), chardetng::Utf8Detection::Allow);
    let (text, had_errors) = encoding.decode_without_bom_handling(bytes);
    if had_errors {
        return Err(NotText::Undecodable(encoding.name()));
    }
    Ok((
        text.into_owned(),
        Decoded {
            encoding: encoding.name(),
        },
    ))
}

/// Whether `bytes` are UTF-8 apart from a few invalid bytes: at least eight
/// valid multi-byte characters, and at least four for each invalid byte. Text in a legacy encoding has almost no valid UTF-8
/// multi-byte sequences, so it does not pass.
fn mostly_utf8(bytes: &[u8]) -> bool {
    let (mut multibyte, mut invalid) = (0usize, 0usize);
    for chunk in bytes.utf8_chunks() {
        multibyte += chunk.valid().chars().filter(|c| !c.is_ascii()).count();
        invalid += chunk.invalid().len();
    }
    multibyte >= 8 && multibyte >= 4 * invalid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_boms_utf8_gbk_and_binary() {
        let (text, how) = decode("\u{feff}标题".as_bytes()).expect("utf-8 bom");
        assert_eq!((text.as_str(), how.encoding), ("标题", "UTF-8"));
        let (gbk, _, _) = encoding_rs::GBK.encode("大模型的注意力机制是如何工作的？请详细说明。");
        let (text, how) = decode(&gbk).expect("gbk");
        assert_eq!(text, "大模型的注意力机制是如何工作的？请详细说明。");
        assert!(
            how.encoding == "GBK" || how.encoding == "gb18030",
            "{}",
            how.encoding
        );
        assert_eq!(decode(b"\x7fELF\x02\x01\x00\x00"), Err(NotText::Binary));
        let utf16: Vec<u8> = [0xff, 0xfe]
            .into_iter()
            .chain("hi".encode_utf16().flat_map(u16::to_le_bytes))
            .collect();
        assert_eq!(decode(&utf16).expect("utf-16").0, "hi");
    }

    #[test]
    fn a_few_damaged_bytes_in_utf8_are_replaced_not_misread() {
        let mut bytes = "# 标题\n\n检索增强生成把信息检索与大语言模型结合起来。"
            .as_bytes()
            .to_vec();
        bytes.extend_from_slice(b"\xff\xfe");
        bytes.extend_from_slice("后面的文字仍然完好，系统继续工作。".as_bytes());
        let (text, how) = decode(&bytes).expect("decoded");
        assert_eq!(how.encoding, "UTF-8 (damaged bytes replaced)");
        assert!(
            text.contains("结合起来。\u{fffd}\u{fffd}后面的文字"),
            "{text}"
        );
        // Latin-1 text is still read as such: it has no valid UTF-8 sequences.
        let (text, _) =
            decode(b"caf\xe9 cr\xe8me br\xfbl\xe9e, na\xefve r\xe9sum\xe9").expect("latin-1");
        assert!(text.starts_with("café crème"), "{text}");
    }
}
