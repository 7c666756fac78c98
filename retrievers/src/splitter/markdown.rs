//! [`MarkdownSplitter`]: splits at headings first, remembers the heading path.

use crate::splitter::{RecursiveSplitter, Split};

/// Splits Markdown section by section (a heading and its body; headings inside
/// fenced code do not count), then each section with a [`RecursiveSplitter`].
/// Every chunk records the path of headings above it.
///
/// ```
/// use kb_retrievers::MarkdownSplitter;
///
/// let text = "# Guide\nIntro.\n## Install\nRun the script.\n## Use\nAsk away.";
/// let splits = MarkdownSplitter::new(40, 0).split(text);
/// assert_eq!(splits[1].text, "## Install\nRun the script.");
/// assert_eq!(splits[1].heading_path(), "# Guide > ## Install");
/// ```
#[derive(Debug, Clone)]
pub struct MarkdownSplitter {
    inner: RecursiveSplitter,
}

impl MarkdownSplitter {
    /// Chunks of at most `chunk_size` characters, overlapping by up to `overlap`.
    pub fn new(chunk_size: usize, overlap: usize) -> Self {
        Self::with_splitter(RecursiveSplitter::new(chunk_size, overlap))
    }

    /// Splits sections with `inner` (e.g. one that measures tokens).
    pub fn with_splitter(inner: RecursiveSplitter) -> Self {
        MarkdownSplitter { inner }
    }

    /// Splits `text`.
    pub fn split(&self, text: &str) -> Vec<Split> {
        let mut splits = Vec::new();
        let mut path: Vec<(usize, String)> = Vec::new();
        let mut section_start = 0;
        let mut section_path: Vec<String> = Vec::new();
        let mut fence: Option<&str> = None;
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if indent <= 3 {
                if let Some(marker) = fence {
                    if trimmed.starts_with(marker) {
                        fence = None;
                    }
                } else if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
                    fence = Some(&trimmed[..3]);
                } else if let Some((level, title)) = heading(trimmed) {
                    self.flush(text, section_start, offset, &section_path, &mut splits);
                    while path.last().is_some_and(|(l, _)| *l >= level) {
                        path.pop();
                    }
                    path.push((level, format!("{} {title}", "#".repeat(level))));
                    section_path = path.iter().map(|(_, h)| h.clone()).collect();
                    section_start = offset;
                }
            }
            offset += line.len();
        }
        self.flush(text, section_start, text.len(), &section_path, &mut splits);
        splits
    }

    fn flush(
        &self,
        text: &str,
        start: usize,
        end: usize,
        headings: &[String],
        out: &mut Vec<Split>,
    ) {
        for mut split in self.inner.split_range(text, start, end) {
            split.headings = headings.to_vec();
            out.push(split);
        }
    }
}

/// `(level, title)` of an ATX heading line (`## Title`), if it is one.
fn heading(line: &str) -> Option<(usize, &str)> {
    let level = line.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !(rest.is_empty() || rest.starts_with([' ', '\t', '\n', '\r'])) {
        return None;
    }
    let title = rest.trim().trim_end_matches('#').trim_end();
    Some((level, title))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heading_paths_follow_levels() {
        let text = "intro\n# A\na\n## B\nb\n### C\nc\n## D\nd\n# E\ne\n";
        let splits = MarkdownSplitter::new(100, 0).split(text);
        let paths: Vec<String> = splits.iter().map(Split::heading_path).collect();
        assert_eq!(
            paths,
            [
                "",
                "# A",
                "# A > ## B",
                "# A > ## B > ### C",
                "# A > ## D",
                "# E"
            ]
        );
        for split in &splits {
            assert_eq!(&text[split.start..split.end], split.text);
        }
    }

    #[test]
    fn hashes_in_code_and_text_are_not_headings() {
        let text = "# Real\n```sh\n# a comment\n```\n#hashtag\nbody\n";
        let splits = MarkdownSplitter::new(200, 0).split(text);
        assert_eq!(splits.len(), 1);
        assert_eq!(splits[0].heading_path(), "# Real");
    }

    #[test]
    fn long_sections_are_split_and_keep_their_path() {
        let body = "这是一个很长的句子。".repeat(20);
        let text = format!("# 指南\n## 安装\n{body}\n## 使用\n短。");
        let splits = MarkdownSplitter::new(50, 0).split(&text);
        assert!(splits.len() > 3);
        assert!(splits.iter().all(|s| s.text.chars().count() <= 50));
        let install: Vec<&Split> = splits
            .iter()
            .filter(|s| s.heading_path() == "# 指南 > ## 安装")
            .collect();
        assert!(install.len() >= 4, "{splits:?}");
        assert_eq!(
            splits.last().map(Split::heading_path).as_deref(),
            Some("# 指南 > ## 使用")
        );
    }
}
