//! Arithmetic word problems: one greedy chain of thought against
//! self-consistency (several sampled chains and a majority vote).
//!
//! ```text
//! cargo run --release --example cot_self_consistency
//! cargo run --release --example cot_self_consistency -- --samples 7 --few-shot
//! cargo run --release --example cot_self_consistency -- --model http://localhost:8080/v1#qwen2.5
//! ```

mod common;

use anyhow::Result;
use kb::agents::{ChainOfThought, CotExample, SelfConsistency, normalize_answer};

const USAGE: &str =
    "cot_self_consistency [--model M] [--samples N] [--problems N] [--temperature T] [--few-shot]

Answers arithmetic word problems with a greedy chain of thought and with
self-consistency (N sampled chains, majority vote), and scores both.";

/// (question, the right answer)
const PROBLEMS: [(&str, &str); 6] = [
    (
        "Tom has 3 boxes with 4 apples in each box. He eats 2 apples. How many apples are left?",
        "10",
    ),
    (
        "A pen costs 3 dollars. How much do 7 pens cost, in dollars?",
        "21",
    ),
    (
        "Sara read 12 pages on Monday and twice as many pages on Tuesday. How many pages did she read in the two days?",
        "36",
    ),
    (
        "A bus has 13 passengers. At the first stop 5 get off and 9 get on. How many passengers are on the bus now?",
        "17",
    ),
    (
        "There are 5 baskets with 6 eggs in each. 4 eggs break. How many eggs are not broken?",
        "26",
    ),
    (
        "小明有15颗糖，给了妹妹6颗，又买了4颗。他现在有多少颗糖？",
        "13",
    ),
];

fn examples() -> Vec<CotExample> {
    vec![
        CotExample::new(
            "Anna has 2 bags with 5 marbles each. She finds 3 more marbles. How many marbles does she have?",
            "2 bags of 5 marbles is 2 * 5 = 10 marbles. With 3 more she has 10 + 3 = 13.",
            "13",
        ),
        CotExample::new(
            "A book costs 8 dollars. Ben pays with a 20 dollar note. How much change does he get?",
            "The change is 20 - 8 = 12 dollars.",
            "12",
        ),
    ]
}

/// An answer cut to 40 characters for the vote table.
fn short(answer: &str) -> String {
    match answer.char_indices().nth(40) {
        Some((cut, _)) => format!("{}…", &answer[..cut]),
        None => answer.to_string(),
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = common::Args::parse(USAGE, &["few-shot"])?;
    let samples: usize = args.get("samples", 5)?;
    let count: usize = args.get("problems", PROBLEMS.len())?;
    let temperature: f32 = args.get("temperature", 0.7)?;
    let mut cot = ChainOfThought::new(args.chat_model()?);
    if args.has("few-shot") {
        cot = cot.examples(examples());
    }
    let voter = SelfConsistency::new(cot.clone())
        .samples(samples)
        .temperature(temperature);
    println!(
        "Chain-of-thought ({}) vs self-consistency ({samples} samples, T={temperature}) with {}",
        if args.has("few-shot") {
            "few-shot"
        } else {
            "zero-shot"
        },
        args.model
    );
    let (mut greedy_right, mut vote_right, mut tokens) = (0, 0, 0);
    for (question, right) in PROBLEMS.iter().take(count) {
        println!("\nQ: {question}");
        let greedy = cot.answer(question).await?;
        let greedy_ok = greedy.answer.as_deref().map(normalize_answer).as_deref() == Some(*right);
        greedy_right += usize::from(greedy_ok);
        tokens += greedy.usage.completion_tokens;
        println!(
            "  chain of thought: {} {}",
            greedy.answer.as_deref().unwrap_or("(no answer)"),
            if greedy_ok { "✓" } else { "✗" }
        );
        let vote = voter.vote(question).await?;
        let vote_ok = vote.answer.as_deref().map(normalize_answer).as_deref() == Some(*right);
        vote_right += usize::from(vote_ok);
        tokens += vote.usage.completion_tokens;
        let table: Vec<String> = vote
            .table
            .iter()
            .map(|t| format!("{}×{}", short(&t.answer), t.count))
            .collect();
        let unanswered = vote.samples.iter().filter(|s| s.answer.is_none()).count();
        println!(
            "  self-consistency: {} {} (votes: {}{}; agreement {:.0}%)",
            vote.answer
                .as_deref()
                .map_or("(no answer)".to_string(), short),
            if vote_ok { "✓" } else { "✗" },
            if table.is_empty() {
                "none".to_string()
            } else {
                table.join(", ")
            },
            if unanswered > 0 {
                format!(", {unanswered} without an answer")
            } else {
                String::new()
            },
            100.0 * vote.agreement()
        );
        println!("  expected: {right}");
    }
    let n = count.min(PROBLEMS.len());
    println!(
        "\nchain of thought: {greedy_right}/{n} right; self-consistency: {vote_right}/{n} right; {tokens} tokens generated"
    );
    Ok(())
}
