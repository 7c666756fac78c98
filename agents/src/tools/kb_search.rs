//! [`KbSearch`]: the knowledge base as a tool.

use std::sync::Arc;

use async_trait::async_trait;
use kb_chains::Source;
use kb_core::{Error, Result, Retriever, Tool};
use serde_json::{Value, json};

/// Searches a knowledge base (any [`Retriever`]; kb's hybrid retriever in
/// `kb agent`) and shows the model the best passages, numbered, with their
/// sources.
///
/// ```
/// use async_trait::async_trait;
/// use kb_agents::tools::KbSearch;
/// use kb_core::{Chunk, Result, Retriever, ScoredChunk, Tool};
///
/// struct One;
/// #[async_trait]
/// impl Retriever for One {
///     async fn retrieve(&self, _: &str, _: usize) -> Result<Vec<ScoredChunk>> {
///         Ok(vec![ScoredChunk { chunk: Chunk::new("notes.md", 0, "BM25 ranks by term statistics."), score: 1.0 }])
///     }
/// }
///
/// # futures::executor::block_on(async {
/// let text = KbSearch::new(One).call(serde_json::json!({"query": "what is BM25"})).await?;
/// assert!(text.starts_with("[1] notes.md"), "{text}");
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// ```
pub struct KbSearch {
    retriever: Arc<dyn Retriever>,
    k: usize,
    max_chars: usize,
}

impl std::fmt::Debug for KbSearch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KbSearch")
            .field("k", &self.k)
            .field("max_chars", &self.max_chars)
            .finish_non_exhaustive()
    }
}

impl KbSearch {
    /// Searches `retriever`, 3 passages of at most 600 characters each.
    pub fn new(retriever: impl Retriever + 'static) -> Self {
        KbSearch {
            retriever: Arc::new(retriever),
            k: 3,
            max_chars: 600,
        }
    }

    /// How many passages a search returns (default 3).
    pub fn k(mut self, k: usize) -> Self {
        self.k = k.max(1);
        self
    }

    /// Longest passage shown, in characters (default 600).
    pub fn max_chars(mut self, max_chars: usize) -> Self {
        self.max_chars = max_chars.max(20);
        self
    }
}

#[async_trait]
impl Tool for KbSearch {
    fn name(&self) -> &str {
        "kb_search"
    }

    fn description(&self) -> &str {
        "Searches the knowledge base (the user's documents) and returns the most relevant passages with their sources. \
         Use it for any question about the documents."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to look for, in words likely to appear in the documents"}
            },
            "required": ["query"],
        })
    }

    async fn call(&self, args: Value) -> Result<String> {
        let query = match &args {
            Value::String(s) => s.as_str(),
            _ => args
                .get("query")
                .or_else(|| args.get("q"))
                .or_else(|| args.get("input"))
                .and_then(Value::as_str)
                .ok_or_else(|| Error::Tool {
                    tool: "kb_search".into(),
                    message: "give the search as {\"query\": \"…\"}".into(),
                })?,
        };
        if query.trim().is_empty() {
            return Err(Error::Tool {
                tool: "kb_search".into(),
                message: "the query is empty".into(),
            });
        }
        let hits = self.retriever.retrieve(query, self.k).await?;
        if hits.is_empty() {
            return Ok(format!("No passages match {query:?}."));
        }
        let passages: Vec<String> = hits
            .iter()
            .enumerate()
            .map(|(i, hit)| {
                let source = Source::new(i + 1, hit);
                let mut text: String = source.text.chars().take(self.max_chars).collect();
                if text.len() < source.text.len() {
                    text.push('…');
                }
                let place = match &source.heading {
                    Some(heading) => format!("{} › {heading}", source.source),
                    None => source.source.clone(),
                };
                format!("[{}] {place}\n{}", i + 1, text.trim())
            })
            .collect();
        Ok(passages.join("\n\n"))
    }
}
