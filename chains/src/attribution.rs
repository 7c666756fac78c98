//! Citations the model left out, added by matching: an answer sentence
//! without a marker that repeats a passage gets that passage's number.
//! Small models often copy from the context without citing it.

use std::collections::HashSet;

/// Shortest sentence (in characters) worth attributing.
const MIN_SENTENCE_CHARS: usize = 8;

/// Share of a sentence's character bigrams that must occur in a passage.
const MIN_COVERAGE: f32 = 0.6;

/// Adds `[n]` to finished sentences that carry no marker and whose
/// bigrams (of words, and of characters in CJK text, lower-cased) are
/// mostly found in passage `n`; the best-covering passage wins. Works on streamed text:
/// a marker is inserted before the sentence's final punctuation.
#[derive(Debug, Clone)]
pub struct Attributor {
    passages: Vec<HashSet<u64>>,
    sentence: String,
    attributed: Vec<usize>,
}

/// The bigrams of `text`'s tokens, hashed: a token is a lower-cased word
/// of letters and digits, or a single CJK character.
fn bigrams(text: &str) -> Vec<u64> {
    use std::hash::{Hash, Hasher};
    let mut tokens: Vec<String> = Vec::new();
    let mut word = String::new();
    for c in text.chars() {
        if crate::language::is_cjk(c) {
            if !word.is_empty() {
                tokens.push(std::mem::take(&mut word));
            }
            tokens.push(c.to_string());
        } else if c.is_alphanumeric() {
            word.extend(c.to_lowercase());
        } else if !word.is_empty() {
            tokens.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        tokens.push(word);
    }
    tokens
        .windows(2)
        .map(|pair| {
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            pair.hash(&mut hasher);
            hasher.finish()
        })
        .collect()
}

fn ends_sentence(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '\n' | '。' | '！' | '？' | '；')
}

impl Attributor {
    /// An attributor over the passages numbered `1..=passages.len()`.
    pub fn new<'a>(passages: impl IntoIterator<Item = &'a str>) -> Self {
        Attributor {
            passages: passages
                .into_iter()
                .map(|p| bigrams(p).into_iter().collect())
                .collect(),
            sentence: String::new(),
            attributed: Vec::new(),
        }
    }

    /// Feeds shown text (markers already checked); returns it with markers
    /// added.
    pub fn push(&mut self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for c in text.chars() {
            if ends_sentence(c) {
                if let Some(marker) = self.close_sentence() {
                    out.push_str(&marker);
                }
            } else {
                self.sentence.push(c);
            }
            out.push(c);
        }
        out
    }

    /// Ends the text: the last sentence may still get a marker.
    pub fn finish(&mut self) -> String {
        self.close_sentence().unwrap_or_default()
    }

    /// The numbers added, in order.
    pub fn attributed(&self) -> &[usize] {
        &self.attributed
    }

    fn close_sentence(&mut self) -> Option<String> {
        let sentence = std::mem::take(&mut self.sentence);
        if sentence.contains(['[', '【']) || sentence.trim().chars().count() < MIN_SENTENCE_CHARS {
            return None;
        }
        let grams = bigrams(&sentence);
        if grams.is_empty() {
            return None;
        }
        let (best, coverage) = self
            .passages
            .iter()
            .enumerate()
            .map(|(i, passage)| {
                let found = grams.iter().filter(|g| passage.contains(g)).count();
                (i + 1, found as f32 / grams.len() as f32)
            })
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))?;
        if coverage < MIN_COVERAGE {
            return None;
        }
        if !self.attributed.contains(&best) {
            self.attributed.push(best);
        }
        let space = if sentence.ends_with(' ') { "" } else { " " };
        Some(format!("{space}[{best}]"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copied_sentences_get_the_passage_they_copy() {
        let mut a = Attributor::new([
            "BM25 scores documents by term frequency and rarity.",
            "随机mask每一个句子中15%的词，用其上下文来做预测。",
        ]);
        let mut out = String::new();
        for piece in [
            "BM25 scores documents by ",
            "term frequency. It is ",
            "great",
            "! 模型随机mask每一个句子中15%的词。",
            "The documents do not contain the answer",
        ] {
            out.push_str(&a.push(piece));
        }
        out.push_str(&a.finish());
        assert_eq!(
            out,
            "BM25 scores documents by term frequency [1]. It is great! 模型随机mask每一个句子中15%的词 [2]。The documents do not contain the answer"
        );
        assert_eq!(a.attributed(), &[1, 2]);
    }

    #[test]
    fn sentences_with_markers_are_left_alone() {
        let mut a = Attributor::new(["BM25 scores documents by term frequency."]);
        let out = a.push("BM25 scores documents [1].");
        assert_eq!(out, "BM25 scores documents [1].");
        assert!(a.attributed().is_empty());
    }
}
