//! Typed composition: `prompt.pipe(model).pipe(parser)`, invoked, batched and
//! streamed.
//!
//! The model here is a stand-in that writes its answer one word at a time, so
//! the example runs anywhere in a second; swap in kb's local GGUF model or a
//! remote one and nothing else changes.
//!
//! Run with `cargo run --example pipe`.

use async_trait::async_trait;
use futures::{StreamExt, stream};
use kb::{
    ChatEvent, ChatModel, ChatResponse, ChatStream, FinishReason, GenerateOptions, Message,
    PromptTemplate, Result, Runnable, StrOutputParser, Usage, collect_stream,
};
use serde_json::json;

/// Answers by reversing the order of the prompt's words, one word per token.
struct Reverser;

#[async_trait]
impl ChatModel for Reverser {
    fn name(&self) -> &str {
        "reverser"
    }

    async fn chat(&self, messages: &[Message], options: &GenerateOptions) -> Result<ChatResponse> {
        collect_stream(self.stream(messages, options).await?).await
    }

    async fn stream(&self, messages: &[Message], _: &GenerateOptions) -> Result<ChatStream> {
        let prompt = messages
            .last()
            .map(|m| m.content.clone())
            .unwrap_or_default();
        let mut events: Vec<Result<ChatEvent>> = prompt
            .split_whitespace()
            .rev()
            .map(|word| Ok(ChatEvent::Token(format!("{word} "))))
            .collect();
        events.push(Ok(ChatEvent::Done {
            usage: Usage::default(),
            finish: FinishReason::Stop,
            timings: None,
        }));
        Ok(Box::pin(stream::iter(events)))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let chain = PromptTemplate::new("Explain {{ topic }} to a {{ audience }}")?
        .partial("audience", "newcomer")?
        .pipe(Reverser)
        .pipe(StrOutputParser);

    let answer = chain
        .invoke(json!({"topic": "reciprocal rank fusion"}))
        .await?;
    println!("invoke: {answer}");

    let answers = chain
        .batch(vec![json!({"topic": "BM25"}), json!({"topic": "HNSW"})])
        .await?;
    println!("batch:  {answers:?}");

    print!("stream: ");
    let mut tokens = chain.stream(json!({"topic": "KV caches"})).await?;
    while let Some(token) = tokens.next().await {
        print!("[{}]", token?);
    }
    println!();
    Ok(())
}
