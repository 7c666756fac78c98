//! The smallest complete RAG program: index a folder, ask a question, print
//! the streamed answer and its sources.
//!
//! `cargo run --release --example rag_in_30_lines -- docs "How does kb verify downloaded models?"`

use std::sync::Arc;

use futures::StreamExt;
use kb::chains::{AnswerEvent, RagChain};
use kb::models::{DEFAULT_LLM, MULTILINGUAL_EMBEDDER, ModelCache};
use kb::retrievers::{Access, IngestOptions, KnowledgeBase};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let folder = args.next().unwrap_or_else(|| "docs".into());
    let question = args
        .next()
        .unwrap_or_else(|| "What does kb ingest do?".into());
    let cache = ModelCache::from_env()?;
    let embedder = kb::embeddings::LocalEmbedder::open(cache.resolve(MULTILINGUAL_EMBEDDER)?)?;
    let dir = tempfile::tempdir()?;
    let kb = KnowledgeBase::open(dir.path(), Arc::new(embedder), Access::Write)?;
    kb.ingest(&[folder.into()], &IngestOptions::default(), &mut |_| {})
        .await?;
    let model = kb::llm::open(DEFAULT_LLM, &cache, &Default::default())?;
    let mut answer = RagChain::new(Arc::new(kb.retriever(None)), model)
        .stream(&question)
        .await?;
    while let Some(event) = answer.next().await {
        match event? {
            AnswerEvent::Token(text) => print!("{text}"),
            AnswerEvent::Done(done) => {
                println!();
                for source in done
                    .sources
                    .iter()
                    .filter(|s| done.cited.contains(&s.number))
                {
                    println!("[{}] {}", source.number, source.source);
                }
            }
            AnswerEvent::Sources(_) => {}
        }
    }
    Ok(())
}
