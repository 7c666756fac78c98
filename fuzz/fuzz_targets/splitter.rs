//! Both splitters on arbitrary text: no panic, no empty chunk, and every
//! chunk is exactly the document's bytes `start..end`.
#![no_main]

use kb_retrievers::{MarkdownSplitter, RecursiveSplitter, Split};
use libfuzzer_sys::fuzz_target;

fn check(text: &str, splits: &[Split]) {
    for split in splits {
        assert!(!split.text.trim().is_empty(), "an empty chunk: {split:?}");
        assert_eq!(text.get(split.start..split.end), Some(split.text.as_str()));
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&size, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let size = usize::from(size % 64) + 1;
    let overlap = size / 4;
    check(&text, &RecursiveSplitter::new(size, overlap).split(&text));
    check(&text, &MarkdownSplitter::new(size * 8, overlap).split(&text));
});
