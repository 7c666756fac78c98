//! [`LlmReranker`]: a chat model asked, passage by passage, whether the
//! passage answers the question; the log-odds of its "Yes" is the score.

use std::sync::Arc;

use async_trait::async_trait;
use kb_core::{ChatModel, Chunk, Error, Message, Reranker, Result};

/// Reranks with a local model's next-token probabilities: for each passage
/// the model reads the question and the passage and is asked "Does the
/// passage answer the question?"; the score is `log p(Yes) − log p(No)` as
/// the first word of its answer. Nothing is generated, so a passage costs
/// one prompt pass, and the instructions and question before the passage
/// come from the prompt cache after the first one.
///
/// Needs a model that can score continuations ([`ChatModel::score`]): the
/// local GGUF engine can; most remote servers cannot.
///
/// ```no_run
/// use std::sync::Arc;
/// use kb_chains::LlmReranker;
/// use kb_core::{ChatModel, Chunk, Reranker};
///
/// # async fn demo(model: Arc<dyn ChatModel>) -> kb_core::Result<()> {
/// let reranker = LlmReranker::new(model);
/// let chunks = [Chunk::new("notes.md", 0, "LoRA trains low-rank adapters.")];
/// let scores = reranker.score("What does LoRA train?", &chunks).await?;
/// # Ok(())
/// # }
/// ```
pub struct LlmReranker {
    model: Arc<dyn ChatModel>,
    name: String,
    max_chars: usize,
}

/// The instructions before every question and passage.
const INSTRUCTIONS: &str = "You judge search results. Read the question and the passage, \
then say whether the passage contains the answer to the question. Reply with Yes or No.";

impl LlmReranker {
    /// Reranks with `model`, reading at most the first 800 characters of
    /// each passage.
    pub fn new(model: Arc<dyn ChatModel>) -> Self {
        let name = format!("llm:{}", model.name());
        LlmReranker {
            model,
            name,
            max_chars: 800,
        }
    }

    /// Reads at most `max_chars` characters of each passage (a longer one is
    /// cut at a character boundary): the cost of a passage is its length.
    pub fn max_chars(mut self, max_chars: usize) -> Self {
        self.max_chars = max_chars.max(1);
        self
    }

    /// The conversation that asks about one passage. The question comes
    /// first, so every passage of a query shares that prefix.
    fn messages(&self, query: &str, passage: &str) -> Vec<Message> {
        let passage = match passage.char_indices().nth(self.max_chars) {
            Some((end, _)) => &passage[..end],
            None => passage,
        };
        vec![
            Message::system(INSTRUCTIONS),
            Message::user(format!(
                "Question: {query}\n\nPassage:\n{passage}\n\n\
                 Does the passage answer the question? Reply Yes or No."
            )),
        ]
    }
}

#[async_trait]
impl Reranker for LlmReranker {
    fn name(&self) -> &str {
        &self.name
    }

    async fn score(&self, query: &str, chunks: &[Chunk]) -> Result<Vec<f32>> {
        let labels = ["Yes".to_string(), "No".to_string()];
        let mut scores = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            let messages = self.messages(query, &chunk.text);
            let logprobs = self.model.score(&messages, &labels).await?;
            let [yes, no] = logprobs[..] else {
                return Err(Error::Model(format!(
                    "the model scored {} of 2 answers",
                    logprobs.len()
                )));
            };
            scores.push(yes - no);
        }
        Ok(scores)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kb_core::{ChatResponse, GenerateOptions};

    /// Answers "Yes" with high probability when the passage mentions the
    /// question's last word, and records the prompts it saw.
    struct Judge;

    #[async_trait]
    impl ChatModel for Judge {
        fn name(&self) -> &str {
            "judge"
        }
        async fn chat(&self, _: &[Message], _: &GenerateOptions) -> Result<ChatResponse> {
            Err(Error::Unsupported("judge only scores".into()))
        }
        async fn score(&self, messages: &[Message], answers: &[String]) -> Result<Vec<f32>> {
            let prompt = &messages[1].content;
            let passage = prompt.split("Passage:\n").nth(1).unwrap_or("");
            let yes = if passage.contains("otter") {
                -0.1
            } else {
                -3.0
            };
            Ok(answers
                .iter()
                .map(|a| if a == "Yes" { yes } else { -1.0 })
                .collect())
        }
    }

    #[tokio::test]
    async fn scores_are_the_log_odds_of_yes() {
        let reranker = LlmReranker::new(Arc::new(Judge));
        assert_eq!(reranker.name(), "llm:judge");
        let chunks = [
            Chunk::new("a", 0, "Cats sleep."),
            Chunk::new("b", 0, "The otter holds hands."),
        ];
        let scores = reranker
            .score("what holds hands? otter", &chunks)
            .await
            .unwrap();
        assert_eq!(scores, [-2.0, 0.9]);
    }

    #[test]
    fn long_passages_are_cut_at_a_character_boundary() {
        let reranker = LlmReranker::new(Arc::new(Judge)).max_chars(3);
        let messages = reranker.messages("q", "水獭牵手睡觉");
        assert!(messages[1].content.contains("Passage:\n水獭牵\n"));
    }

    #[tokio::test]
    async fn a_model_that_cannot_score_is_an_error() {
        struct Mute;
        #[async_trait]
        impl ChatModel for Mute {
            fn name(&self) -> &str {
                "mute"
            }
            async fn chat(&self, _: &[Message], _: &GenerateOptions) -> Result<ChatResponse> {
                Err(Error::Unsupported("mute".into()))
            }
        }
        let reranker = LlmReranker::new(Arc::new(Mute));
        let err = reranker
            .score("q", &[Chunk::new("a", 0, "text")])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cannot score"), "{err}");
    }
}
