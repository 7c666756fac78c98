//! [`RecursiveSplitter`]: cuts text at the coarsest boundary that makes pieces
//! small enough — paragraphs, lines, sentences (Chinese and Western), clauses,
//! words, and finally characters — and packs the pieces into chunks.

use std::fmt;
use std::sync::Arc;

use crate::splitter::Split;

/// How the size of a piece of text is measured.
pub type LengthFn = Arc<dyn Fn(&str) -> usize + Send + Sync>;

/// One level of boundaries, from coarsest to finest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// A blank line.
    Paragraph,
    /// A line break.
    Line,
    /// After `。！？；` or `.!?;` (a Western mark only when whitespace follows,
    /// so `3.14` and `e.g.x` stay whole).
    Sentence,
    /// After `，、,：:`.
    Clause,
    /// Before whitespace.
    Word,
    /// Between characters.
    Char,
}

const LEVELS: [Level; 6] = [
    Level::Paragraph,
    Level::Line,
    Level::Sentence,
    Level::Clause,
    Level::Word,
    Level::Char,
];

/// Splits text into chunks of at most `chunk_size` (by default in characters),
/// consecutive chunks sharing up to `overlap` of text.
///
/// Every chunk is a slice of the input (its byte span is kept), never empty,
/// never cut inside a UTF-8 character, and sentence-ending punctuation stays
/// with the sentence it ends.
///
/// ```
/// use kb_retrievers::RecursiveSplitter;
///
/// let splitter = RecursiveSplitter::new(12, 0);
/// let text = "第一句话。第二句话！Third one. Fourth.";
/// let chunks: Vec<String> = splitter.split(text).into_iter().map(|s| s.text).collect();
/// assert_eq!(chunks, ["第一句话。第二句话！", "Third one.", "Fourth."]);
/// ```
#[derive(Clone)]
pub struct RecursiveSplitter {
    chunk_size: usize,
    overlap: usize,
    length: LengthFn,
}

impl fmt::Debug for RecursiveSplitter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecursiveSplitter")
            .field("chunk_size", &self.chunk_size)
            .field("overlap", &self.overlap)
            .finish_non_exhaustive()
    }
}

impl RecursiveSplitter {
    /// Chunks of at most `chunk_size` characters, overlapping by up to
    /// `overlap` characters (clamped below `chunk_size`; at least 1 character).
    pub fn new(chunk_size: usize, overlap: usize) -> Self {
        let chunk_size = chunk_size.max(1);
        RecursiveSplitter {
            chunk_size,
            overlap: overlap.min(chunk_size - 1),
            length: Arc::new(|s: &str| s.chars().count()),
        }
    }

    /// Measures size with `length` instead of characters, e.g. an embedder's
    /// token count. A single character longer than the chunk size still makes
    /// a chunk of its own.
    pub fn with_length(mut self, length: LengthFn) -> Self {
        self.length = length;
        self
    }

    /// The chunk size.
    pub fn chunk_size(&self) -> usize {
        self.chunk_size
    }

    /// Splits `text` into chunks.
    pub fn split(&self, text: &str) -> Vec<Split> {
        self.split_range(text, 0, text.len())
    }

    /// Splits `text[start..end]`; spans stay relative to `text`.
    pub(crate) fn split_range(&self, text: &str, start: usize, end: usize) -> Vec<Split> {
        let mut pieces = Vec::new();
        self.pieces(text, start, end, 0, &mut pieces);
        self.merge(text, &pieces)
    }

    fn len(&self, text: &str, (start, end): (usize, usize)) -> usize {
        (self.length)(&text[start..end])
    }

    /// Cuts `text[start..end]` into pieces each within the chunk size (or a
    /// single character), using the coarsest level that has boundaries.
    fn pieces(
        &self,
        text: &str,
        start: usize,
        end: usize,
        level: usize,
        out: &mut Vec<(usize, usize)>,
    ) {
        if start >= end {
            return;
        }
        if self.len(text, (start, end)) <= self.chunk_size {
            out.push((start, end));
            return;
        }
        let Some((index, cuts)) = LEVELS[level..]
            .iter()
            .enumerate()
            .map(|(i, &l)| (level + i, boundaries(text, start, end, l)))
            .find(|(_, cuts)| !cuts.is_empty())
        else {
            out.push((start, end));
            return;
        };
        let mut from = start;
        for cut in cuts.into_iter().chain([end]) {
            if cut > from {
                self.pieces(text, from, cut, index + 1, out);
                from = cut;
            }
        }
    }

    /// Packs consecutive pieces into chunks, then trims each chunk's outer
    /// whitespace and drops chunks that are only whitespace.
    fn merge(&self, text: &str, pieces: &[(usize, usize)]) -> Vec<Split> {
        let mut chunks: Vec<(usize, usize)> = Vec::new();
        let mut previous_first = 0;
        let mut i = 0;
        while i < pieces.len() {
            // Start with overlap: the last pieces of the previous chunk that fit.
            let mut first = i;
            if let Some(&(_, prev_end)) = chunks.last()
                && self.overlap > 0
            {
                while first > previous_first + 1
                    && pieces[first - 1].1 <= prev_end
                    && self.len(text, (pieces[first - 1].0, prev_end)) <= self.overlap
                    && self.len(text, (pieces[first - 1].0, pieces[i].1)) <= self.chunk_size
                {
                    first -= 1;
                }
            }
            let start = pieces[first].0;
            let mut end = pieces[i].1;
            i += 1;
            while i < pieces.len() && self.len(text, (start, pieces[i].1)) <= self.chunk_size {
                end = pieces[i].1;
                i += 1;
            }
            chunks.push((start, end));
            previous_first = first;
        }
        chunks
            .into_iter()
            .filter_map(|(start, end)| {
                let slice = &text[start..end];
                let trimmed_start = start + (slice.len() - slice.trim_start().len());
                let trimmed_end = end - (slice.len() - slice.trim_end().len());
                (trimmed_start < trimmed_end).then(|| Split {
                    text: text[trimmed_start..trimmed_end].to_string(),
                    start: trimmed_start,
                    end: trimmed_end,
                    headings: Vec::new(),
                })
            })
            .collect()
    }
}

/// Byte offsets inside `(start, end)` where a piece may end at `level`.
fn boundaries(text: &str, start: usize, end: usize, level: Level) -> Vec<usize> {
    let slice = &text[start..end];
    let mut cuts = Vec::new();
    let mut chars = slice.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let after = start + i + c.len_utf8();
        let next = chars.peek().map(|&(_, n)| n);
        let cut = match level {
            Level::Paragraph => c == '\n' && next == Some('\n'),
            Level::Line => c == '\n',
            Level::Sentence => {
                matches!(c, '。' | '！' | '？' | '；' | '…')
                    || (matches!(c, '.' | '!' | '?' | ';')
                        && next.is_none_or(|n| n.is_whitespace() || is_closing(n)))
            }
            Level::Clause => matches!(c, '，' | '、' | '：' | ',' | ':'),
            Level::Word => next.is_some_and(char::is_whitespace) && !c.is_whitespace(),
            Level::Char => true,
        };
        if !cut {
            continue;
        }
        let mut at = after;
        if level == Level::Paragraph {
            // Keep the whole run of newlines with the paragraph it ends.
            while chars.peek().is_some_and(|&(_, n)| n == '\n') {
                chars.next();
                at += 1;
            }
        }
        if level != Level::Char {
            // Closing quotes and brackets stay with the sentence or clause.
            while let Some(&(j, n)) = chars.peek() {
                if is_closing(n) {
                    at = start + j + n.len_utf8();
                    chars.next();
                } else {
                    break;
                }
            }
        }
        if at < end {
            cuts.push(at);
        }
    }
    cuts
}

/// Closing quotes and brackets, which stay with what they close.
fn is_closing(c: char) -> bool {
    matches!(c, '”' | '’' | '」' | '』' | '）' | ')' | '"' | '\'')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(splits: Vec<Split>) -> Vec<String> {
        splits.into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn punctuation_stays_with_its_sentence() {
        let s = RecursiveSplitter::new(10, 0);
        assert_eq!(
            texts(s.split("大模型很强。注意力机制很重要！对吗？")),
            ["大模型很强。", "注意力机制很重要！", "对吗？"]
        );
        let s = RecursiveSplitter::new(22, 0);
        assert_eq!(
            texts(s.split("Pi is 3.14 exactly. “Really?” she asked.")),
            ["Pi is 3.14 exactly.", "“Really?” she asked."]
        );
    }

    #[test]
    fn paragraphs_come_before_sentences() {
        let s = RecursiveSplitter::new(30, 0);
        let text = "First paragraph. Still first.\n\nSecond paragraph here.";
        assert_eq!(
            texts(s.split(text)),
            ["First paragraph. Still first.", "Second paragraph here."]
        );
    }

    #[test]
    fn long_words_fall_back_to_characters() {
        let s = RecursiveSplitter::new(4, 0);
        assert_eq!(texts(s.split("abcdefghij")), ["abcd", "efgh", "ij"]);
        assert_eq!(texts(s.split("🚀🔥🚀🔥🚀")), ["🚀🔥🚀🔥", "🚀"]);
    }

    #[test]
    fn overlap_repeats_the_tail_of_the_previous_chunk() {
        let s = RecursiveSplitter::new(12, 6);
        let chunks = texts(s.split("one two three four five six"));
        assert!(chunks.len() >= 2, "{chunks:?}");
        for pair in chunks.windows(2) {
            let last_word = pair[0].split_whitespace().last().expect("word");
            assert!(pair[1].starts_with(last_word), "{pair:?}");
        }
    }

    #[test]
    fn size_can_be_measured_in_other_units() {
        // Words instead of characters, as an embedder's token count would be.
        let s = RecursiveSplitter::new(3, 0)
            .with_length(Arc::new(|t: &str| t.split_whitespace().count()));
        assert_eq!(texts(s.split("a b c d e f g")), ["a b c", "d e f", "g"]);
    }

    #[test]
    fn spans_point_into_the_input_and_whitespace_only_text_gives_nothing() {
        let text = "  alpha beta\n\n   \n\ngamma  ";
        let s = RecursiveSplitter::new(6, 0);
        for split in s.split(text) {
            assert_eq!(&text[split.start..split.end], split.text);
        }
        assert!(s.split("   \n\n ").is_empty());
        assert!(s.split("").is_empty());
    }

    /// Random text of Chinese, ASCII, emoji, punctuation and whitespace:
    /// chunks are never empty, within size, at char boundaries, in order, and
    /// without overlap they cover every non-whitespace character once.
    #[test]
    fn property_random_text() {
        const ALPHABET: &[&str] = &[
            "注", "意", "力", "。", "，", "！", "a", "b", "Z", " ", "\n", "\n\n", ".", "?", "🚀",
            "é", "；", "3.14", "”", "\t",
        ];
        let mut state: u64 = 42;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        for round in 0..300 {
            let text: String = (0..next() % 200)
                .map(|_| ALPHABET[next() % ALPHABET.len()])
                .collect();
            let size = 1 + next() % 40;
            let overlap = if round % 2 == 0 { 0 } else { next() % size };
            let splits = RecursiveSplitter::new(size, overlap).split(&text);
            let mut last_start = 0;
            for split in &splits {
                assert!(!split.text.trim().is_empty(), "empty chunk in {text:?}");
                assert!(
                    split.text.chars().count() <= size,
                    "{:?} over {size}",
                    split.text
                );
                assert!(text.is_char_boundary(split.start) && text.is_char_boundary(split.end));
                assert_eq!(&text[split.start..split.end], split.text);
                assert!(split.start >= last_start, "out of order");
                last_start = split.start;
            }
            if overlap == 0 {
                let joined: String = splits.iter().map(|s| s.text.as_str()).collect();
                let strip = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
                assert_eq!(strip(&joined), strip(&text), "size {size}");
            }
        }
    }
}
