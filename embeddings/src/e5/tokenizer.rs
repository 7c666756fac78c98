//! The XLM-R SentencePiece unigram tokenizer of the packed E5 model: the file's
//! per-code-point normalisation, `▁` for spaces, and a Viterbi search that
//! follows the reference engine exactly (f32 scores, strictly-better updates in
//! ascending start order, one `<unk>` per unknown character).

use std::collections::HashMap;

use crate::e5::packed::Vocabulary;

const SPACE: char = '\u{2581}';

/// The unigram tokenizer.
pub(crate) struct Tokenizer {
    ids: HashMap<String, u32>,
    scores: Vec<f32>,
    normalization: HashMap<u32, Vec<char>>,
    longest_piece: usize,
    unk_score: f32,
    pub(crate) bos: u32,
    pub(crate) eos: u32,
    unk: u32,
}

impl Tokenizer {
    pub(crate) fn new(vocabulary: Vocabulary) -> Self {
        let unk = vocabulary.unk;
        let min = vocabulary
            .scores
            .iter()
            .copied()
            .fold(f32::INFINITY, f32::min);
        let longest_piece = vocabulary.pieces.iter().map(String::len).max().unwrap_or(1);
        let ids = vocabulary
            .pieces
            .into_iter()
            .enumerate()
            .filter(|&(id, _)| id as u32 != unk)
            .map(|(id, piece)| (piece, id as u32))
            .collect();
        Tokenizer {
            ids,
            scores: vocabulary.scores,
            normalization: vocabulary.normalization,
            longest_piece,
            unk_score: min - 10.0,
            bos: vocabulary.bos,
            eos: vocabulary.eos,
            unk,
        }
    }

    /// The text as the model sees it: normalised, spaces collapsed, `▁` for
    /// every space and in front.
    fn normalize(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + 3);
        let mut last_space = false;
        for c in text.chars() {
            let mapped = self.normalization.get(&(c as u32));
            let replaced: &[char] = match mapped {
                Some(chars) => chars,
                None => std::slice::from_ref(&c),
            };
            for &r in replaced {
                if r == ' ' {
                    if !last_space {
                        out.push(SPACE);
                    }
                    last_space = true;
                } else {
                    out.push(r);
                    last_space = false;
                }
            }
        }
        if !out.starts_with(SPACE) {
            out.insert(0, SPACE);
        }
        out
    }

    /// Token ids of the content, without `<s>` and `</s>`.
    pub(crate) fn content_ids(&self, text: &str) -> Vec<u32> {
        let text = self.normalize(text);
        let bounds: Vec<usize> = text
            .char_indices()
            .map(|(i, _)| i)
            .chain([text.len()])
            .collect();
        let n = bounds.len() - 1;
        let mut best = vec![f32::NEG_INFINITY; n + 1];
        let mut back = vec![(0usize, 0u32); n + 1];
        best[0] = 0.0;
        for start in 0..n {
            if best[start] == f32::NEG_INFINITY {
                continue;
            }
            let base = best[start];
            for end in start + 1..=n {
                let len = bounds[end] - bounds[start];
                if len > self.longest_piece {
                    break;
                }
                if let Some(&id) = self.ids.get(&text[bounds[start]..bounds[end]]) {
                    let score = base + self.scores[id as usize];
                    if score > best[end] {
                        best[end] = score;
                        back[end] = (start, id);
                    }
                }
            }
            let score = base + self.unk_score;
            if score > best[start + 1] {
                best[start + 1] = score;
                back[start + 1] = (start, self.unk);
            }
        }
        let mut ids = Vec::new();
        let mut at = n;
        while at > 0 {
            let (start, id) = back[at];
            ids.push(id);
            at = start;
        }
        ids.reverse();
        ids
    }

    /// `<s>` + content + `</s>`.
    pub(crate) fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = vec![self.bos];
        ids.extend(self.content_ids(text));
        ids.push(self.eos);
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokenizer() -> Tokenizer {
        let pieces = ["<s>", "<pad>", "</s>", "<unk>", "▁", "▁a", "b", "ab", "▁ab"];
        let scores = [0.0, 0.0, 0.0, 0.0, -3.0, -2.0, -2.5, -1.5, -4.5];
        let mut normalization = HashMap::new();
        normalization.insert('\t' as u32, vec![' ']);
        normalization.insert(0x7f, vec![]);
        normalization.insert('Ａ' as u32, vec!['a']);
        Tokenizer::new(Vocabulary {
            pieces: pieces.iter().map(|p| p.to_string()).collect(),
            scores: scores.to_vec(),
            bos: 0,
            eos: 2,
            unk: 3,
            normalization,
        })
    }

    #[test]
    fn normalises_per_code_point_and_marks_spaces() {
        let t = tokenizer();
        assert_eq!(t.normalize("Ａb\t\t c\u{7f}"), "▁ab▁c");
        assert_eq!(t.normalize(" x"), "▁x");
        assert_eq!(t.normalize(""), "▁");
    }

    #[test]
    fn viterbi_prefers_the_best_path_and_keeps_unknowns_apart() {
        let t = tokenizer();
        // "▁ab" (-4.5, from start 0) ties "▁"+"ab" (-3 - 1.5, from start 1)
        // and "▁a"+"b" (-2 - 2.5, from start 2): starts are tried in ascending
        // order and only a strictly better path replaces the best, so the
        // earliest stays.
        assert_eq!(t.content_ids("ab"), vec![8]);
        assert_eq!(t.content_ids("abb"), vec![8, 6]);
        // A strictly better split wins: "▁"+"ab" (-4.5) over "▁a"+"b"+"b" (-7)
        // cannot happen here, so check "b ab": "▁b" is no piece.
        assert_eq!(t.content_ids("b ab"), vec![4, 6, 8]);
        // Unknown characters get one <unk> each.
        assert_eq!(t.encode("zz"), vec![0, 4, 3, 3, 2]);
        // Literal special strings are pieces too.
        assert_eq!(t.content_ids("<s>"), vec![4, 0]);
    }
}
