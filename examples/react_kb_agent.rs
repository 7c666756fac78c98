//! A ReAct agent over a knowledge base: it searches the documents with
//! `kb_search`, computes with `calculator`, and prints every step as it
//! happens.
//!
//! ```text
//! cargo run --release --example react_kb_agent
//! cargo run --release --example react_kb_agent -- --kb ~/.local/share/kb/kb "What does RRF add up?"
//! cargo run --release --example react_kb_agent -- --docs ../shared/corpus --max-steps 6 "…"
//! ```

mod common;

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use futures::StreamExt;
use kb::agents::tools::{Calculator, KbSearch, Toolbox};
use kb::agents::{AgentEvent, ReActAgent};
use kb::retrievers::{Access, IngestOptions, KnowledgeBase};

const USAGE: &str =
    "react_kb_agent [--model M] [--kb DIR | --docs FOLDER] [--max-steps N] [QUESTION]

Answers QUESTION with a ReAct agent that can search the knowledge base
(an existing one with --kb, else FOLDER indexed into a temporary one;
kb's own docs/ by default) and use a calculator.";

const QUESTION: &str = "Documents are split into chunks of about how many characters? \
                        How many chunks would a 10000-character document make?";

#[tokio::main]
async fn main() -> Result<()> {
    let args = common::Args::parse(USAGE, &[])?;
    let question = if args.words.is_empty() {
        QUESTION.to_string()
    } else {
        args.words.join(" ")
    };
    let max_steps: usize = args.get("max-steps", 6)?;
    let temp = tempfile::tempdir()?;
    let kb = match args.get::<String>("kb", String::new())? {
        dir if !dir.is_empty() => {
            KnowledgeBase::open(dir.as_ref(), common::embedder()?, Access::Read)
                .with_context(|| format!("opening the knowledge base {dir}"))?
        }
        _ => {
            let docs = PathBuf::from(args.get("docs", "docs".to_string())?);
            let kb = KnowledgeBase::open(temp.path(), common::embedder()?, Access::Write)?;
            let report = kb
                .ingest(
                    std::slice::from_ref(&docs),
                    &IngestOptions::default(),
                    &mut |_| {},
                )
                .await
                .with_context(|| format!("indexing {}", docs.display()))?;
            eprintln!(
                "indexed {} ({} chunks)",
                docs.display(),
                report.chunks_written
            );
            kb
        }
    };
    let tools = Toolbox::new()
        .with(KbSearch::new(kb.retriever(None)))
        .with(Calculator);
    let agent = ReActAgent::new(args.chat_model()?, tools).max_steps(max_steps);
    println!("Question: {question}\n");
    let mut events = agent.stream(&question);
    let mut stdout = std::io::stdout();
    while let Some(event) = events.next().await {
        match event? {
            AgentEvent::Step { number } => println!("── step {number}"),
            AgentEvent::Token { text } => {
                print!("{text}");
                stdout.flush()?;
            }
            AgentEvent::ToolCall { call } => println!("\n→ {}({})", call.name, call.arguments),
            AgentEvent::Observation { observation, .. } => {
                let preview: String = observation.text.chars().take(300).collect();
                let mark = if observation.error {
                    "error"
                } else {
                    "observation"
                };
                println!("← {mark}: {preview}");
            }
            AgentEvent::Retry { error } => println!("\n(unreadable reply: {error}; asking again)"),
            AgentEvent::Answer { .. } | AgentEvent::Thought { .. } => {}
            AgentEvent::Finished { outcome } => {
                println!();
                match &outcome.answer {
                    Some(answer) => println!("Answer: {answer}"),
                    None => println!("No answer: the run stopped ({:?}).", outcome.stop),
                }
                println!(
                    "{} steps, {} tool calls, {} tokens generated, stop: {:?}",
                    outcome.steps.len(),
                    outcome.steps.iter().map(|s| s.calls.len()).sum::<usize>(),
                    outcome.usage.completion_tokens,
                    outcome.stop
                );
            }
        }
    }
    Ok(())
}
