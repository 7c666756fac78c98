//! [`Language`]: which language a question is asked in, so the answer uses it too.

use serde::{Deserialize, Serialize};

/// The languages kb's built-in prompts are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// English, and the fallback for every language without its own prompts.
    English,
    /// Chinese.
    Chinese,
}

impl Language {
    /// The language `text` is mostly written in: Chinese when at least a
    /// fifth of its letters are CJK ideographs, English otherwise.
    ///
    /// ```
    /// use kb_chains::Language;
    /// assert_eq!(Language::detect("什么是 RRF 融合？"), Language::Chinese);
    /// assert_eq!(Language::detect("What is reciprocal rank fusion?"), Language::English);
    /// ```
    pub fn detect(text: &str) -> Language {
        let (mut cjk, mut letters) = (0usize, 0usize);
        for c in text.chars().filter(|c| c.is_alphabetic()) {
            letters += 1;
            if is_cjk(c) {
                cjk += 1;
            }
        }
        // Ideographs carry a word each, Latin letters a fraction of one.
        if cjk > 0 && cjk * 5 >= letters {
            Language::Chinese
        } else {
            Language::English
        }
    }

    /// The ISO 639-1 code: `en` or `zh`.
    pub fn code(self) -> &'static str {
        match self {
            Language::English => "en",
            Language::Chinese => "zh",
        }
    }
}

pub(crate) use kb_core::is_cjk;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mixed_text_counts_ideographs_more_than_letters() {
        assert_eq!(
            Language::detect("BM25 和向量检索有什么区别"),
            Language::Chinese
        );
        assert_eq!(
            Language::detect("Explain the KV cache 缓存"),
            Language::English
        );
        assert_eq!(Language::detect(""), Language::English);
        assert_eq!(Language::detect("1234 ?"), Language::English);
    }
}
