//! [`Glossary`]: the bilingual terms a corpus defines itself, used to search
//! across languages.
//!
//! Chinese technical notes often give a term's English name in parentheses,
//! `张量并行 (Tensor Parallelism)`, or the other way round, `beam search
//! (束搜索)`. kb collects these pairs at ingestion ([`mine`]) and, at search
//! time, adds the other language's term to a query that contains one of them
//! ([`Glossary::expand`]): an English question about tensor parallelism then
//! also looks for 张量并行, which BM25 alone cannot connect.

use std::collections::BTreeSet;

use kb_core::is_cjk;
use serde::{Deserialize, Serialize};

/// A term and its name in the other script.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TermPair {
    /// The term in Latin letters, as written (`Tensor Parallelism`, `TP`).
    pub latin: String,
    /// The term in Chinese (`张量并行`).
    pub cjk: String,
}

/// Words that end a Chinese term when walking back from the parenthesis:
/// particles and verbs that introduce a term rather than belong to it.
const BOUNDARY_WORDS: &[&str] = &[
    "的", "是", "在", "和", "与", "了", "将", "把", "对", "为", "被", "及", "或", "等", "以", "从",
    "向", "用", "使", "让", "这", "那", "其", "之", "而", "要", "会", "叫", "即", "称", "如", "由",
    "通过", "使用", "称为", "叫做", "包括", "一个", "一种", "引入", "采用", "利用", "基于", "所谓",
    "以及", "或者", "例如", "比如", "就是", "也", "都", "再",
];

/// The longest term, in characters, on either side.
const MAX_CHARS: usize = 40;

fn is_latin_term_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '+' | '.' | '/')
}

/// A Latin term worth keeping: letters first, at least two of them, at most
/// five words, and not code (`f(x)`, `self.W_q`).
fn clean_latin(term: &str) -> Option<String> {
    let term = term.trim().trim_end_matches('.');
    let letters = term.chars().filter(char::is_ascii_alphabetic).count();
    let words = term.split_whitespace().count();
    let first = term.chars().next()?;
    (first.is_ascii_alphabetic()
        && letters >= 2
        && (1..=5).contains(&words)
        && term.chars().count() <= MAX_CHARS
        && term.chars().all(is_latin_term_char))
    .then(|| term.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// How many Chinese characters a Latin term's translation may take: about
/// two per English word, or two per letter of an acronym (`TP` → 张量并行).
fn cjk_budget(latin: &str) -> usize {
    let acronym = latin.len() <= 6 && latin.chars().all(|c| c.is_ascii_uppercase());
    if acronym {
        2 * latin.len()
    } else {
        let words = latin.split([' ', '-']).filter(|w| !w.is_empty()).count();
        2 * words + 1
    }
}

/// The Chinese term that ends `run` (a run of Chinese characters), at most
/// `budget` characters: whole jieba words, walking back until a boundary word
/// or the budget.
fn trailing_term(run: &str, budget: usize) -> Option<String> {
    let words = crate::bm25::jieba().cut(run, false);
    let mut taken: Vec<&str> = Vec::new();
    let mut chars = 0;
    for word in words.iter().rev() {
        let n = word.chars().count();
        if BOUNDARY_WORDS.contains(word) || chars + n > budget {
            break;
        }
        taken.push(word);
        chars += n;
    }
    taken.reverse();
    let term: String = taken.concat();
    (term.chars().count() >= 2).then_some(term)
}

/// The term pairs `text` defines: `中文(English)` and `English (中文)`, with
/// full-width or ASCII parentheses and an optional space before them.
///
/// ```
/// use kb_retrievers::glossary::mine;
/// let pairs = mine("模型的自注意力(Self Attention)机制；并行方式有张量并行 (TP)。");
/// let found: Vec<(&str, &str)> = pairs.iter().map(|p| (p.latin.as_str(), p.cjk.as_str())).collect();
/// assert_eq!(found, [("Self Attention", "自注意力"), ("TP", "张量并行")]);
/// ```
pub fn mine(text: &str) -> Vec<TermPair> {
    let chars: Vec<char> = text.chars().collect();
    let mut pairs = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !matches!(chars[i], '(' | '（') {
            i += 1;
            continue;
        }
        let Some(close) = chars[i + 1..]
            .iter()
            .take(MAX_CHARS + 2)
            .position(|&c| matches!(c, ')' | '）'))
            .map(|p| i + 1 + p)
        else {
            i += 1;
            continue;
        };
        let inside: String = chars[i + 1..close].iter().collect();
        let inside = inside.trim();
        // The text right before the parenthesis, skipping one space.
        let mut end = i;
        if end > 0 && chars[end - 1] == ' ' {
            end -= 1;
        }
        if end > 0 && is_cjk(chars[end - 1]) {
            // 中文(English)
            if let Some(latin) = clean_latin(inside) {
                let start = (0..end)
                    .rev()
                    .take_while(|&j| is_cjk(chars[j]))
                    .last()
                    .unwrap_or(end);
                let run: String = chars[start..end].iter().collect();
                if let Some(cjk) = trailing_term(&run, cjk_budget(&latin)) {
                    pairs.push(TermPair { latin, cjk });
                }
            }
        } else if end > 0
            && chars[end - 1].is_ascii_alphanumeric()
            && !inside.is_empty()
            && inside.chars().count() <= 12
            && inside.chars().all(is_cjk)
        {
            // English (中文): the Latin words before it, up to four.
            let start = (0..end)
                .rev()
                .take_while(|&j| is_latin_term_char(chars[j]))
                .last()
                .unwrap_or(end);
            let before: String = chars[start..end].iter().collect();
            let words: Vec<&str> = before.split_whitespace().collect();
            let kept = words[words.len().saturating_sub(4)..].join(" ");
            if let Some(latin) = clean_latin(&kept) {
                pairs.push(TermPair {
                    latin,
                    cjk: inside.to_string(),
                });
            }
        }
        i = close + 1;
    }
    pairs
}

/// The term pairs of a knowledge base, for query expansion.
#[derive(Debug, Clone, Default)]
pub struct Glossary {
    /// (lowercased Latin term, pair), longest Latin term first.
    pairs: Vec<(String, TermPair)>,
}

impl Glossary {
    /// A glossary of `pairs` (duplicates are dropped).
    pub fn new(pairs: impl IntoIterator<Item = TermPair>) -> Self {
        let unique: BTreeSet<TermPair> = pairs.into_iter().collect();
        let mut pairs: Vec<(String, TermPair)> = unique
            .into_iter()
            .map(|p| (p.latin.to_lowercase(), p))
            .collect();
        pairs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.cmp(b)));
        Glossary { pairs }
    }

    /// Pairs known.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether it knows no pair.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// The terms to add to `query`: the Chinese name of every Latin term it
    /// contains as whole words (any case; acronyms in capitals only), and the
    /// Latin name of every Chinese term it contains. At most eight, and none
    /// the query already holds.
    ///
    /// ```
    /// use kb_retrievers::glossary::{Glossary, TermPair};
    /// let glossary = Glossary::new([TermPair { latin: "Tensor Parallelism".into(), cjk: "张量并行".into() }]);
    /// assert_eq!(glossary.expand("How does tensor parallelism split a layer?"), ["张量并行"]);
    /// assert_eq!(glossary.expand("张量并行怎么切分？"), ["Tensor Parallelism"]);
    /// assert!(glossary.expand("tensor parallelisms").is_empty());
    /// ```
    pub fn expand(&self, query: &str) -> Vec<String> {
        let lower = query.to_lowercase();
        let mut added: Vec<String> = Vec::new();
        for (latin_lower, pair) in &self.pairs {
            if added.len() >= 8 {
                break;
            }
            let acronym = pair.latin.chars().all(|c| c.is_ascii_uppercase());
            let (haystack, needle) = if acronym {
                (query, pair.latin.as_str())
            } else {
                (lower.as_str(), latin_lower.as_str())
            };
            let extra = if contains_words(haystack, needle) {
                &pair.cjk
            } else if query.contains(pair.cjk.as_str()) {
                &pair.latin
            } else {
                continue;
            };
            if !lower.contains(&extra.to_lowercase()) && !added.contains(extra) {
                added.push(extra.clone());
            }
        }
        added
    }
}

/// Whether `needle` occurs in `haystack` with no letter or digit right
/// before or after it.
fn contains_words(haystack: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return false;
    }
    haystack.match_indices(needle).any(|(at, _)| {
        let before = haystack[..at].chars().next_back();
        let after = haystack[at + needle.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() && !is_cjk(c))
            && !after.is_some_and(|c| c.is_alphanumeric() && !is_cjk(c))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str) -> Vec<(String, String)> {
        mine(text).into_iter().map(|p| (p.latin, p.cjk)).collect()
    }

    #[test]
    fn chinese_terms_stop_at_particles_and_at_their_budget() {
        assert_eq!(
            pairs("这里可以使用点积注意力(Scaled Dot-Product Attention)。"),
            [("Scaled Dot-Product Attention".into(), "点积注意力".into())]
        );
        assert_eq!(
            pairs("为什么要引入位置编码 (Position Embedding)"),
            [("Position Embedding".into(), "位置编码".into())]
        );
        assert_eq!(
            pairs("通过应用神经切线核(NTK)"),
            [("NTK".into(), "神经切线核".into())]
        );
        assert_eq!(
            pairs("参数高效微调（PEFT）是"),
            [("PEFT".into(), "参数高效微调".into())]
        );
    }

    #[test]
    fn english_first_pairs_take_the_words_before_the_parenthesis() {
        assert_eq!(
            pairs("解码时用 beam search (束搜索) 保留"),
            [("beam search".into(), "束搜索".into())]
        );
        assert_eq!(
            pairs("perplexity（困惑度）"),
            [("perplexity".into(), "困惑度".into())]
        );
    }

    #[test]
    fn code_single_letters_and_unclosed_parentheses_are_not_terms() {
        assert!(pairs("查询(Q)、键(K)").is_empty());
        assert!(pairs("调用self.W_q(x)和函数(f_x)").is_empty());
        assert!(pairs("张量并行(Tensor Parallelism").is_empty());
        assert!(pairs("（）()( )").is_empty());
        assert!(pairs("").is_empty());
    }

    #[test]
    fn expansion_matches_whole_words_and_respects_acronym_case() {
        let glossary = Glossary::new([
            TermPair {
                latin: "TP".into(),
                cjk: "张量并行".into(),
            },
            TermPair {
                latin: "Self Attention".into(),
                cjk: "自注意力".into(),
            },
        ]);
        assert_eq!(glossary.len(), 2);
        assert_eq!(glossary.expand("What is TP?"), ["张量并行"]);
        assert!(
            glossary.expand("tp setup").is_empty(),
            "acronyms match in capitals only"
        );
        assert!(glossary.expand("HTTP server").is_empty(), "inside a word");
        assert_eq!(
            glossary.expand("self attention in 张量并行"),
            ["自注意力", "TP"]
        );
        assert!(
            glossary.expand("自注意力 self attention").is_empty(),
            "both already there"
        );
    }
}
