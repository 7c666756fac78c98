//! The context of a RAG prompt: retrieved chunks numbered `[1] … [n]` with
//! their source, fitted into the model's context window with the model's
//! own tokenizer.

use kb_core::{ChatModel, Error, Message, Result, ScoredChunk};
use serde::{Deserialize, Serialize};

use crate::language::is_cjk;

/// A retrieved chunk as the model saw it: its number in the prompt and where
/// it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// Its number in the prompt: the `n` of `[n]`.
    pub number: usize,
    /// The chunk's id in the knowledge base.
    pub chunk_id: String,
    /// The file it comes from (the chunk's `source` metadata, else its
    /// document id).
    pub source: String,
    /// The document's title, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The heading path above the chunk (`Install › Models`), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
    /// The retriever's score.
    pub score: f32,
    /// The text given to the model (shortened only when even the best chunk
    /// alone does not fit the window).
    pub text: String,
    /// The first line or so of the text, for display.
    pub snippet: String,
}

/// Characters kept in [`Source::snippet`].
const SNIPPET_CHARS: usize = 160;

impl Source {
    /// The chunk `scored`, numbered `number`.
    pub fn new(number: usize, scored: &ScoredChunk) -> Self {
        let chunk = &scored.chunk;
        let text_of = |key: &str| {
            chunk
                .metadata
                .get(key)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
                .map(str::to_string)
        };
        Source {
            number,
            chunk_id: chunk.id.clone(),
            source: text_of("source").unwrap_or_else(|| chunk.doc_id.clone()),
            title: text_of("title"),
            heading: text_of("headings").map(|h| clean_heading(&h)),
            score: scored.score,
            text: chunk.text.clone(),
            snippet: snippet(&chunk.text),
        }
    }
}

/// `# Models > ## Fetching` → `Models › Fetching`.
fn clean_heading(path: &str) -> String {
    path.split(" > ")
        .map(|part| part.trim().trim_start_matches('#').trim())
        .filter(|part| !part.is_empty())
        .collect::<Vec<_>>()
        .join(" › ")
}

/// The first [`SNIPPET_CHARS`] characters of `text` on one line.
fn snippet(text: &str) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(SNIPPET_CHARS) {
        Some((cut, _)) => format!("{}…", &flat[..cut]),
        None => flat,
    }
}

/// A rough token count for models that cannot count (remote ones): one
/// token per CJK character, one per three bytes of anything else. It
/// overestimates English BPE, which is the safe side.
pub fn estimate_tokens(text: &str) -> usize {
    let mut tokens = 0;
    let mut other = 0;
    for c in text.chars() {
        if is_cjk(c) {
            tokens += 1;
        } else {
            other += c.len_utf8();
        }
    }
    tokens + other.div_ceil(3)
}

/// Prompt tokens of `messages`: the model's own count, or an estimate.
pub fn count_tokens(model: &dyn ChatModel, messages: &[Message]) -> Result<usize> {
    Ok(match model.count_tokens(messages)? {
        Some(n) => n,
        None => messages
            .iter()
            .map(|m| estimate_tokens(&m.content) + 4)
            .sum(),
    })
}

/// The outcome of [`fit`].
#[derive(Debug, Clone, PartialEq)]
pub struct Fitted {
    /// The prompt, with the sources that fit.
    pub messages: Vec<Message>,
    /// The sources in the prompt, numbered from 1 in rank order.
    pub sources: Vec<Source>,
    /// Retrieved chunks left out because the window was full.
    pub dropped: usize,
    /// Whether the only source had to be shortened to fit.
    pub truncated: bool,
    /// Prompt tokens.
    pub prompt_tokens: usize,
}

/// Builds the prompt `render` makes from as many of `chunks` (best first) as
/// fit in `budget` tokens, counted with `model`'s tokenizer.
///
/// Chunks are taken in rank order until the next one does not fit; the rest
/// (the lowest ranked) are dropped. When not even the best chunk fits, it is
/// shortened at a character boundary to what does. When the prompt without
/// any chunk does not fit, the error says by how much.
pub fn fit<F>(
    model: &dyn ChatModel,
    budget: usize,
    chunks: &[ScoredChunk],
    render: F,
) -> Result<Fitted>
where
    F: Fn(&[Source]) -> Result<Vec<Message>>,
{
    let empty = render(&[])?;
    let base = count_tokens(model, &empty)?;
    if base > budget {
        return Err(Error::InvalidInput(format!(
            "the question and instructions take {base} tokens, more than the {budget} the context window leaves for the prompt; shorten the question or lower --max-tokens"
        )));
    }
    let mut sources: Vec<Source> = Vec::new();
    let mut messages = empty;
    let mut prompt_tokens = base;
    for (i, scored) in chunks.iter().enumerate() {
        let mut candidate = sources.clone();
        candidate.push(Source::new(i + 1, scored));
        let rendered = render(&candidate)?;
        let tokens = count_tokens(model, &rendered)?;
        if tokens > budget {
            break;
        }
        sources = candidate;
        messages = rendered;
        prompt_tokens = tokens;
    }
    let mut truncated = false;
    if sources.is_empty()
        && let Some(best) = chunks.first()
    {
        // Binary search for the longest prefix (in characters) that fits.
        let full = Source::new(1, best);
        let bounds: Vec<usize> = full
            .text
            .char_indices()
            .map(|(i, _)| i)
            .chain([full.text.len()])
            .collect();
        let (mut lo, mut hi) = (0usize, bounds.len() - 1);
        let mut best_fit = None;
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            let mut source = full.clone();
            source.text = format!("{}…", &full.text[..bounds[mid]]);
            let rendered = render(std::slice::from_ref(&source))?;
            let tokens = count_tokens(model, &rendered)?;
            if tokens <= budget {
                lo = mid;
                best_fit = Some((source, rendered, tokens));
            } else {
                hi = mid - 1;
            }
        }
        if let Some((source, rendered, tokens)) = best_fit {
            sources.push(source);
            messages = rendered;
            prompt_tokens = tokens;
            truncated = true;
        }
    }
    Ok(Fitted {
        dropped: chunks.len() - sources.len(),
        messages,
        sources,
        truncated,
        prompt_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_one_line_and_cut_at_characters() {
        assert_eq!(snippet("a\n\n b  c"), "a b c");
        let long = "检索".repeat(100);
        let s = snippet(&long);
        assert_eq!(s.chars().count(), SNIPPET_CHARS + 1);
        assert!(s.ends_with('…'));
    }

    #[test]
    fn heading_paths_lose_their_markdown() {
        assert_eq!(clean_heading("# Models > ## Fetching"), "Models › Fetching");
        assert_eq!(clean_heading("Intro"), "Intro");
    }

    #[test]
    fn estimates_count_ideographs_one_each() {
        assert_eq!(estimate_tokens("检索增强"), 4);
        assert_eq!(estimate_tokens("abcdef"), 2);
        assert_eq!(estimate_tokens(""), 0);
    }
}
