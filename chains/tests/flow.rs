//! The chains' control flow with a scripted model and a fixed retriever:
//! citation checking while streaming, abstention without chunks, the
//! strategies' calls, memory and follow-up rewriting, parsers.
//! The same paths run on the real models in `real_models.rs`.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;
use kb_chains::{
    AnswerEvent, ConversationalRagChain, JsonOutputParser, LlmChain, RagChain, Strategy,
    WindowMemory,
};
use kb_core::{
    ChatModel, ChatPromptTemplate, ChatResponse, Chunk, FinishReason, GenerateOptions, Message,
    Result, Retriever, ScoredChunk, Usage,
};

/// Replies with the scripted answers in order (the last one repeats) and
/// records every conversation it was given. Streams word by word.
struct Scripted {
    replies: Vec<String>,
    seen: Mutex<Vec<Vec<Message>>>,
}

impl Scripted {
    fn new(replies: &[&str]) -> Arc<Self> {
        Arc::new(Scripted {
            replies: replies.iter().map(|r| r.to_string()).collect(),
            seen: Mutex::new(Vec::new()),
        })
    }

    fn calls(&self) -> Vec<Vec<Message>> {
        self.seen.lock().expect("lock").clone()
    }
}

#[async_trait]
impl ChatModel for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }

    fn context_window(&self) -> Option<usize> {
        Some(2048)
    }

    async fn chat(&self, messages: &[Message], _: &GenerateOptions) -> Result<ChatResponse> {
        let mut seen = self.seen.lock().expect("lock");
        seen.push(messages.to_vec());
        let reply = self
            .replies
            .get(seen.len() - 1)
            .or(self.replies.last())
            .cloned()
            .unwrap_or_default();
        Ok(ChatResponse {
            message: Message::assistant(reply),
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            timings: None,
        })
    }

    async fn stream(
        &self,
        messages: &[Message],
        options: &GenerateOptions,
    ) -> Result<kb_core::ChatStream> {
        let reply = self.chat(messages, options).await?;
        let mut events: Vec<Result<kb_core::ChatEvent>> = reply
            .message
            .content
            .split_inclusive(' ')
            .map(|w| Ok(kb_core::ChatEvent::Token(w.to_string())))
            .collect();
        events.push(Ok(kb_core::ChatEvent::Done {
            usage: Usage::default(),
            finish: FinishReason::Stop,
            timings: None,
        }));
        Ok(Box::pin(futures::stream::iter(events)))
    }
}

/// Returns its chunks for every query, recording the queries.
struct Fixed {
    chunks: Vec<ScoredChunk>,
    queries: Mutex<Vec<String>>,
}

impl Fixed {
    fn new(texts: &[&str]) -> Arc<Self> {
        Arc::new(Fixed {
            chunks: texts
                .iter()
                .enumerate()
                .map(|(i, t)| ScoredChunk {
                    chunk: Chunk::new(format!("doc{i}.md"), 0, *t)
                        .with_metadata("source", format!("doc{i}.md")),
                    score: 1.0 / (i + 1) as f32,
                })
                .collect(),
            queries: Mutex::new(Vec::new()),
        })
    }
}

#[async_trait]
impl Retriever for Fixed {
    async fn retrieve(&self, query: &str, k: usize) -> Result<Vec<ScoredChunk>> {
        self.queries.lock().expect("lock").push(query.to_string());
        Ok(self.chunks.iter().take(k).cloned().collect())
    }
}

const CHUNKS: [&str; 3] = [
    "BM25 ranks documents by term frequency and inverse document frequency.",
    "Reciprocal rank fusion adds 1/(k + rank) over the rankings.",
    "The KV cache keeps keys and values of past tokens.",
];

#[tokio::test]
async fn invalid_citations_are_removed_while_streaming_and_reported() {
    let model = Scripted::new(&["BM25 uses term statistics [1][9]. Fusion adds ranks [2, 7]."]);
    let chain = RagChain::new(Fixed::new(&CHUNKS), model.clone()).k(3);
    let mut stream = chain.stream("How does BM25 rank?").await.expect("stream");
    let mut shown = String::new();
    let mut tokens = 0;
    let mut sources = None;
    let mut answer = None;
    while let Some(event) = stream.next().await {
        match event.expect("event") {
            AnswerEvent::Sources(s) => sources = Some(s),
            AnswerEvent::Token(t) => {
                tokens += 1;
                shown.push_str(&t);
            }
            AnswerEvent::Done(a) => answer = Some(*a),
        }
    }
    let answer = answer.expect("done");
    assert_eq!(sources.expect("sources first").len(), 3);
    assert!(tokens > 1, "streamed in pieces");
    assert_eq!(shown.trim(), answer.text);
    assert_eq!(
        answer.text,
        "BM25 uses term statistics [1]. Fusion adds ranks [2]."
    );
    assert_eq!(answer.cited, vec![1, 2]);
    assert_eq!(answer.invalid_citations, vec![9, 7]);
    assert!(answer.attributed.is_empty());
    // The prompt numbered the chunks and asked the question.
    let prompt = &model.calls()[0];
    let user = &prompt.last().expect("user").content;
    assert!(
        user.contains("[1] BM25 ranks") && user.contains("[3] The KV cache"),
        "{user}"
    );
}

#[tokio::test]
async fn uncited_copies_are_attributed_and_marked_as_such() {
    let model = Scripted::new(&["The KV cache keeps keys and values of past tokens. Bye."]);
    let chain = RagChain::new(Fixed::new(&CHUNKS), model.clone()).k(3);
    let answer = chain.ask("What is the KV cache?").await.expect("answer");
    assert_eq!(
        answer.text,
        "The KV cache keeps keys and values of past tokens [3]. Bye."
    );
    assert_eq!(answer.cited, vec![3]);
    assert_eq!(answer.attributed, vec![3]);
    let plain = RagChain::new(Fixed::new(&CHUNKS), model)
        .k(3)
        .attribute(false)
        .ask("What is the KV cache?")
        .await
        .expect("answer");
    assert!(plain.cited.is_empty());
}

#[tokio::test]
async fn no_chunks_means_abstaining_without_the_model() {
    let model = Scripted::new(&["never used"]);
    let chain = RagChain::new(Fixed::new(&[]), model.clone());
    let answer = chain.ask("什么是 BM25？").await.expect("answer");
    assert!(answer.abstained);
    assert_eq!(
        answer.text,
        kb_chains::no_answer(kb_chains::Language::Chinese)
    );
    assert!(model.calls().is_empty());
    let err = chain.ask("  ").await.expect_err("empty question");
    assert!(err.to_string().contains("empty"), "{err}");
}

#[tokio::test]
async fn the_model_saying_it_does_not_know_is_an_abstention() {
    let model = Scripted::new(&["The documents do not contain the answer."]);
    let answer = RagChain::new(Fixed::new(&CHUNKS), model)
        .ask("Who won in 1998?")
        .await
        .expect("answer");
    assert!(answer.abstained);
    assert!(answer.cited.is_empty());
}

#[tokio::test]
async fn map_reduce_and_refine_make_their_calls() {
    // map_reduce: one call per chunk ("NONE" drops it), then the answer.
    let model = Scripted::new(&[
        "BM25 uses term frequency.",
        "NONE",
        "KV cache.",
        "Final [2].",
    ]);
    let answer = RagChain::new(Fixed::new(&CHUNKS), model.clone())
        .k(3)
        .strategy(Strategy::MapReduce)
        .ask("Explain")
        .await
        .expect("answer");
    let calls = model.calls();
    assert_eq!(calls.len(), 4);
    assert_eq!(
        answer.sources.len(),
        2,
        "the chunk mapped to NONE is dropped"
    );
    assert_eq!(answer.sources[1].text, "KV cache.");
    assert_eq!(answer.text, "Final [2].");

    // refine: a draft from the first chunk, one refinement per further chunk.
    let model = Scripted::new(&["Draft [1].", "Better [1][2].", "Best [1][3]."]);
    let answer = RagChain::new(Fixed::new(&CHUNKS), model.clone())
        .k(3)
        .strategy(Strategy::Refine)
        .ask("Explain")
        .await
        .expect("answer");
    let calls = model.calls();
    assert_eq!(calls.len(), 3);
    assert!(
        calls[2]
            .last()
            .expect("user")
            .content
            .contains("Better [1][2].")
    );
    assert_eq!(answer.text, "Best [1][3].");
    assert_eq!(answer.sources.len(), 3);
    assert_eq!(answer.cited, vec![1, 3]);
}

#[tokio::test]
async fn follow_ups_are_rewritten_from_memory_before_retrieval() {
    let model = Scripted::new(&[
        "BM25 ranks by term statistics [1].",
        "\"How does BM25 handle long documents?\"",
        "It normalises by length [1].",
    ]);
    let retriever = Fixed::new(&CHUNKS);
    let chat = ConversationalRagChain::new(
        RagChain::new(retriever.clone(), model.clone()).k(2),
        WindowMemory::new(2),
    );
    let first = chat.ask("What is BM25?").await.expect("first");
    assert!(first.standalone_question.is_none());
    let second = chat.ask("And long documents?").await.expect("second");
    assert_eq!(
        second.standalone_question.as_deref(),
        Some("How does BM25 handle long documents?")
    );
    assert_eq!(second.question, "And long documents?");
    let queries = retriever.queries.lock().expect("lock").clone();
    assert_eq!(
        queries,
        ["What is BM25?", "How does BM25 handle long documents?"]
    );
    // The rewriting prompt carried the first turn.
    let condense = &model.calls()[1];
    assert!(
        condense[0]
            .content
            .contains("BM25 ranks by term statistics")
    );
    assert_eq!(chat.history().len(), 4);
    chat.reset();
    assert!(chat.history().is_empty());
}

#[tokio::test]
async fn llm_chain_parses_almost_json() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Verdict {
        relevant: bool,
    }
    let model = Scripted::new(&["```json\n{'relevant': True,}\n```"]);
    let chain = LlmChain::new(
        ChatPromptTemplate::new()
            .user("Is {{ text }} relevant?")
            .expect("template"),
        model.clone(),
    )
    .parser(JsonOutputParser::<Verdict>::new());
    let verdict = kb_core::Runnable::invoke(&chain, serde_json::json!({"text": "BM25"}))
        .await
        .expect("parsed");
    assert_eq!(verdict, Verdict { relevant: true });
    assert_eq!(model.calls()[0][0].content, "Is BM25 relevant?");
    let err = kb_core::Runnable::invoke(&chain, serde_json::json!({}))
        .await
        .expect_err("missing variable");
    assert!(err.to_string().contains("text"), "{err}");
}
