//! Citation markers (`[1]`, `[2, 3]`, `【4】`) in generated answers: which
//! chunks an answer cites, and removal of markers that point at no chunk.

use serde::{Deserialize, Serialize};

/// The result of checking an answer's citation markers against the number
/// of chunks the model was given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verified {
    /// The text with invalid numbers removed from its markers (a marker left
    /// with no valid number is removed whole).
    pub text: String,
    /// The valid chunk numbers cited, in order of first citation.
    pub cited: Vec<usize>,
    /// The numbers that pointed at no provided chunk, in order of appearance.
    pub invalid: Vec<usize>,
}

/// Checks every marker of `text` against chunks numbered `1..=provided`.
///
/// ```
/// use kb_chains::verify_citations;
/// let checked = verify_citations("BM25 ranks by term statistics [1][7]. Vectors too [2, 9].", 2);
/// assert_eq!(checked.text, "BM25 ranks by term statistics [1]. Vectors too [2].");
/// assert_eq!(checked.cited, vec![1, 2]);
/// assert_eq!(checked.invalid, vec![7, 9]);
/// ```
pub fn verify_citations(text: &str, provided: usize) -> Verified {
    let mut filter = CitationFilter::new(provided);
    let mut out = filter.push(text);
    out.push_str(&filter.finish());
    Verified {
        text: out,
        cited: filter.cited,
        invalid: filter.invalid,
    }
}

/// A streaming version of [`verify_citations`]: text goes in as it is
/// generated and comes out with invalid markers removed. A possible marker
/// is held back until it closes (at most a few characters).
#[derive(Debug, Clone, Default)]
pub struct CitationFilter {
    provided: usize,
    pending: String,
    cited: Vec<usize>,
    invalid: Vec<usize>,
}

/// Longest text held back while waiting for a marker to close.
const MAX_MARKER: usize = 24;

impl CitationFilter {
    /// A filter for chunks numbered `1..=provided`.
    pub fn new(provided: usize) -> Self {
        CitationFilter {
            provided,
            ..CitationFilter::default()
        }
    }

    /// Feeds `text`; returns what can be shown now.
    pub fn push(&mut self, text: &str) -> String {
        self.pending.push_str(text);
        let mut out = String::new();
        loop {
            let Some(open) = self.pending.find(['[', '【', '［']) else {
                out.push_str(&self.pending);
                self.pending.clear();
                return out;
            };
            out.push_str(&self.pending[..open]);
            self.pending.drain(..open);
            let opener_len = self.pending.chars().next().map_or(1, char::len_utf8);
            match marker(&self.pending[opener_len..]) {
                Scan::Marker { numbers, len } => {
                    let kept = self.check(&numbers);
                    if !kept.is_empty() {
                        let list: Vec<String> = kept.iter().map(usize::to_string).collect();
                        let (open, close) = if self.pending.starts_with('[') {
                            ("[", "]")
                        } else {
                            ("【", "】")
                        };
                        out.push_str(open);
                        out.push_str(&list.join(", "));
                        out.push_str(close);
                    }
                    self.pending.drain(..opener_len + len);
                }
                Scan::NotMarker => {
                    out.push_str(&self.pending[..opener_len]);
                    self.pending.drain(..opener_len);
                }
                Scan::Incomplete => {
                    if self.pending.len() > MAX_MARKER {
                        out.push_str(&self.pending[..opener_len]);
                        self.pending.drain(..opener_len);
                    } else {
                        return out;
                    }
                }
            }
        }
    }

    /// Ends the text; returns whatever was held back.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }

    /// Valid chunk numbers cited so far, in order of first citation.
    pub fn cited(&self) -> &[usize] {
        &self.cited
    }

    /// Invalid numbers seen so far.
    pub fn invalid(&self) -> &[usize] {
        &self.invalid
    }

    fn check(&mut self, numbers: &[usize]) -> Vec<usize> {
        let mut kept = Vec::new();
        for &n in numbers {
            if (1..=self.provided).contains(&n) {
                if !self.cited.contains(&n) {
                    self.cited.push(n);
                }
                if !kept.contains(&n) {
                    kept.push(n);
                }
            } else {
                self.invalid.push(n);
            }
        }
        kept
    }
}

enum Scan {
    /// A complete marker: its numbers and its length after the opener,
    /// closer included.
    Marker {
        numbers: Vec<usize>,
        len: usize,
    },
    NotMarker,
    Incomplete,
}

/// Scans the text after an opening bracket: digits separated by commas
/// (ASCII or full-width) and spaces, then a closing bracket.
fn marker(rest: &str) -> Scan {
    let mut numbers = Vec::new();
    let mut current: Option<usize> = None;
    for (i, c) in rest.char_indices() {
        match c {
            '0'..='9' => {
                let digit = c as usize - '0' as usize;
                current = Some(
                    current
                        .unwrap_or(0)
                        .saturating_mul(10)
                        .saturating_add(digit),
                );
            }
            ',' | '，' | '、' | ' ' => {
                if let Some(n) = current.take() {
                    numbers.push(n);
                } else if c != ' ' {
                    return Scan::NotMarker;
                }
            }
            ']' | '】' | '］' => {
                if let Some(n) = current.take() {
                    numbers.push(n);
                }
                return if numbers.is_empty() {
                    Scan::NotMarker
                } else {
                    Scan::Marker {
                        numbers,
                        len: i + c.len_utf8(),
                    }
                };
            }
            _ => return Scan::NotMarker,
        }
    }
    Scan::Incomplete
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_split_across_pushes_are_held_then_checked() {
        let mut filter = CitationFilter::new(3);
        let mut out = String::new();
        for piece in [
            "RRF fuses ranks [",
            "2",
            "][",
            "5",
            "] and ",
            "【3】。",
            "[x] [",
            "1",
        ] {
            out.push_str(&filter.push(piece));
        }
        out.push_str(&filter.finish());
        assert_eq!(out, "RRF fuses ranks [2] and 【3】。[x] [1");
        assert_eq!(filter.cited(), &[2, 3]);
        assert_eq!(filter.invalid(), &[5]);
    }

    #[test]
    fn non_markers_pass_through() {
        let text = "arrays a[i], [], [a, b], [1.5], [ ] and [0]";
        let checked = verify_citations(text, 4);
        assert_eq!(checked.text, "arrays a[i], [], [a, b], [1.5], [ ] and ");
        assert_eq!(checked.invalid, vec![0]);
        assert!(checked.cited.is_empty());
    }

    #[test]
    fn a_long_unclosed_bracket_is_released() {
        let mut filter = CitationFilter::new(2);
        let out = filter.push("[1 2 3 4 5 6 7 8 9 10 11 12 13");
        assert_eq!(out, "[1 2 3 4 5 6 7 8 9 10 11 12 13");
    }

    #[test]
    fn lists_keep_valid_numbers_once() {
        let checked = verify_citations("see [1, 1, 4，2]", 2);
        assert_eq!(checked.text, "see [1, 2]");
        assert_eq!(checked.cited, vec![1, 2]);
        assert_eq!(checked.invalid, vec![4]);
    }
}
