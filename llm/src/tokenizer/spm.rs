//! [`Spm`]: SentencePiece-style tokenization as GGUF files describe it
//! (`tokenizer.ggml.model = "llama"`: Llama 1/2, Mistral, Phi-3, …).
//!
//! The vocabulary carries a score per piece. Encoding starts from the text's
//! characters and keeps merging the adjacent pair whose concatenation is the
//! highest-scoring piece in the vocabulary (leftmost on ties) until no pair is
//! a piece. A character that is not a piece becomes its UTF-8 bytes, each as a
//! `<0xXX>` byte token. Spaces are written `▁` (U+2581), and text that starts
//! the input or follows a special token gets one space in front
//! (`tokenizer.ggml.add_space_prefix`, on unless the GGUF says otherwise).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// The character SentencePiece writes for a space.
pub(crate) const SPACE: char = '\u{2581}';

/// The vocabulary an SPM encoder merges with.
pub(crate) struct Spm {
    /// Piece text → id; where two ids share a text, the later one (as llama.cpp).
    ids: HashMap<String, u32>,
    scores: Vec<f32>,
    /// The `<0xXX>` token of each byte, for characters that are not pieces.
    byte_tokens: Vec<Option<u32>>,
    unknown: Option<u32>,
    pub(crate) add_space_prefix: bool,
}

impl Spm {
    /// An encoder over the pieces `ids` (text → id) with their `scores`
    /// (by id). `byte_tokens[b]` is the token for byte `b`, where the
    /// vocabulary has one.
    pub(crate) fn new(
        ids: HashMap<String, u32>,
        scores: Vec<f32>,
        byte_tokens: Vec<Option<u32>>,
        unknown: Option<u32>,
        add_space_prefix: bool,
    ) -> Self {
        Spm {
            ids,
            scores,
            byte_tokens,
            unknown,
            add_space_prefix,
        }
    }

    /// The id of piece `text`, if the vocabulary has it.
    pub(crate) fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// Appends the ids of one run of plain text (no special tokens in it).
    /// `prefix_space` puts the SentencePiece space in front.
    pub(crate) fn encode_text(&self, text: &str, prefix_space: bool, out: &mut Vec<u32>) {
        let mut escaped = String::with_capacity(text.len() + 3);
        if prefix_space && self.add_space_prefix {
            escaped.push(SPACE);
        }
        escaped.extend(text.chars().map(|c| if c == ' ' { SPACE } else { c }));
        if escaped.is_empty() {
            return;
        }
        let mut symbols: Vec<Symbol> = Vec::with_capacity(escaped.len());
        for (i, (start, c)) in escaped.char_indices().enumerate() {
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                symbols[i - 1].next = Some(i);
            }
        }
        let mut queue = BinaryHeap::new();
        for right in 1..symbols.len() {
            self.push_pair(&escaped, &symbols, right - 1, right, &mut queue);
        }
        while let Some(pair) = queue.pop() {
            let (left, right) = (&symbols[pair.left], &symbols[pair.right]);
            // Stale: one side has merged since this pair was queued.
            if left.len == 0 || right.len == 0 || left.len + right.len != pair.len {
                continue;
            }
            let right_next = right.next;
            symbols[pair.left].len += symbols[pair.right].len;
            symbols[pair.right].len = 0;
            symbols[pair.left].next = right_next;
            if let Some(next) = right_next {
                symbols[next].prev = Some(pair.left);
            }
            if let Some(prev) = symbols[pair.left].prev {
                self.push_pair(&escaped, &symbols, prev, pair.left, &mut queue);
            }
            if let Some(next) = right_next {
                self.push_pair(&escaped, &symbols, pair.left, next, &mut queue);
            }
        }
        let mut at = Some(0);
        while let Some(i) = at {
            let symbol = &symbols[i];
            let piece = &escaped[symbol.start..symbol.start + symbol.len];
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    out.extend(
                        piece
                            .bytes()
                            .filter_map(|b| self.byte_tokens[b as usize].or(self.unknown)),
                    );
                }
            }
            at = symbol.next;
        }
    }

    fn push_pair(
        &self,
        text: &str,
        symbols: &[Symbol],
        left: usize,
        right: usize,
        queue: &mut BinaryHeap<Pair>,
    ) {
        let start = symbols[left].start;
        let len = symbols[left].len + symbols[right].len;
        if let Some(&id) = self.ids.get(&text[start..start + len]) {
            queue.push(Pair {
                score: self.scores.get(id as usize).copied().unwrap_or(f32::MIN),
                left,
                right,
                len,
            });
        }
    }
}

/// A run of the text that may still merge with its neighbours.
struct Symbol {
    start: usize,
    /// Bytes; 0 once merged into the symbol on its left.
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

/// Two adjacent symbols whose concatenation is a piece.
struct Pair {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl Ord for Pair {
    /// Higher score first, then the leftmost pair.
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Pair {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Pair {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Pair {}

/// The byte a `<0xXX>` token stands for.
pub(crate) fn byte_of_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy() -> Spm {
        // ▁ab scores highest, then ab, then the rest.
        let tokens = ["<unk>", "▁", "a", "b", "ab", "▁ab", "c", "<0x0A>", "<0xE2>"];
        let scores = vec![0.0, -1.0, -2.0, -2.0, -0.5, -0.1, -3.0, 0.0, 0.0];
        let mut bytes = vec![None; 256];
        bytes[0x0A] = Some(7);
        bytes[0xE2] = Some(8);
        let ids = tokens
            .iter()
            .enumerate()
            .map(|(id, t)| (t.to_string(), id as u32))
            .collect();
        Spm::new(ids, scores, bytes, Some(0), true)
    }

    #[test]
    fn merges_by_score_and_falls_back_to_bytes() {
        let spm = toy();
        let mut ids = Vec::new();
        spm.encode_text("ab c", true, &mut ids);
        // "▁ab" "▁" "c"
        assert_eq!(ids, vec![5, 1, 6]);
        ids.clear();
        spm.encode_text("a\n", false, &mut ids);
        assert_eq!(ids, vec![2, 7]);
        ids.clear();
        // '≠' is E2 89 A0: only E2 has a byte token; the others become <unk>.
        spm.encode_text("≠", false, &mut ids);
        assert_eq!(ids, vec![8, 0, 0]);
    }

    #[test]
    fn reads_byte_tokens() {
        assert_eq!(byte_of_token("<0x0A>"), Some(10));
        assert_eq!(byte_of_token("<0xff>"), Some(255));
        assert_eq!(byte_of_token("<0x1>"), None);
        assert_eq!(byte_of_token("0x0A"), None);
    }
}
