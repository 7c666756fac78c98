//! Game of 24 with tree-of-thoughts: the model proposes arithmetic steps
//! (BFS, beam 5), judges the numbers left ("sure / likely / impossible"), and
//! a programmatic checker keeps every step honest. A solution is printed only
//! after its whole expression has been re-evaluated to 24 with exactly the
//! puzzle's numbers.
//!
//! ```text
//! cargo run --release --example tot_game24                 # the 10 fixed puzzles
//! cargo run --release --example tot_game24 -- 4 9 10 13    # one puzzle
//! cargo run --release --example tot_game24 -- --puzzles 3 --beam 3
//! cargo run --release --example tot_game24 -- --model http://localhost:8080/v1#qwen2.5
//! ```

mod common;

use std::sync::Arc;

use anyhow::{Result, bail};
use async_trait::async_trait;
use kb::agents::tools::{evaluate, format_number};
use kb::agents::tot::{
    Budget, Evaluator, LlmEvaluator, LlmProposer, SearchStop, Strategy, TreeOfThoughts,
};
use kb::agents::{Meter, Metered};
use kb::{ChatModel, Message};

const USAGE: &str = "tot_game24 [--model M] [--puzzles N] [--beam B] [--calls C] [NUMBERS…]

Solves the Game of 24 (combine four numbers with + - * / into 24) by
tree-of-thoughts search. Without numbers it plays the 10 fixed puzzles.";

/// Ten solvable puzzles, from easy to hard.
const PUZZLES: [[u32; 4]; 10] = [
    [1, 2, 3, 4],
    [6, 6, 6, 6],
    [2, 3, 4, 5],
    [1, 1, 4, 6],
    [4, 9, 10, 13],
    [2, 8, 8, 14],
    [4, 4, 10, 10],
    [1, 3, 4, 6],
    [1, 5, 5, 5],
    [3, 3, 8, 8],
];

/// A position: the numbers left and how each was made.
#[derive(Debug, Clone, PartialEq)]
struct Game {
    numbers: Vec<f64>,
    exprs: Vec<String>,
    steps: Vec<String>,
}

impl Game {
    fn new(numbers: &[u32]) -> Self {
        Game {
            numbers: numbers.iter().map(|&n| n as f64).collect(),
            exprs: numbers.iter().map(|n| n.to_string()).collect(),
            steps: Vec::new(),
        }
    }

    fn left(&self) -> String {
        let mut sorted = self.numbers.clone();
        sorted.sort_by(f64::total_cmp);
        sorted
            .iter()
            .map(|&n| format_number(n))
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn is_24(&self) -> bool {
        self.numbers.len() == 1 && (self.numbers[0] - 24.0).abs() < 1e-9
    }

    /// The position after `a op b = result`, if that step is legal here and
    /// its arithmetic right.
    fn apply(&self, a: f64, op: char, b: f64, claimed: f64) -> Option<Game> {
        let result = match op {
            '+' => a + b,
            '-' => a - b,
            '*' => a * b,
            '/' if b != 0.0 => a / b,
            _ => return None,
        };
        if (result - claimed).abs() > 1e-6 * claimed.abs().max(1.0) {
            return None;
        }
        let i = self.numbers.iter().position(|&n| (n - a).abs() < 1e-9)?;
        let j = (0..self.numbers.len()).find(|&j| j != i && (self.numbers[j] - b).abs() < 1e-9)?;
        let mut next = self.clone();
        let expr = format!("({} {op} {})", self.exprs[i], self.exprs[j]);
        for k in [i.max(j), i.min(j)] {
            next.numbers.remove(k);
            next.exprs.remove(k);
        }
        next.numbers.push(result);
        next.exprs.push(expr);
        next.steps.push(format!(
            "{} {op} {} = {} (left: {})",
            format_number(a),
            format_number(b),
            format_number(result),
            next.left()
        ));
        Some(next)
    }
}

/// Reads "a op b = c" lines; anything else, and any illegal or wrong step, is
/// dropped.
fn parse_steps(game: &Game, reply: &str) -> Vec<Game> {
    let mut out = Vec::new();
    for line in reply.lines() {
        let line = line.replace(['×', 'x'], "*").replace('÷', "/");
        let Some((lhs, rhs)) = line.split_once('=') else {
            continue;
        };
        let claimed: String = rhs
            .trim()
            .chars()
            .take_while(|c| c.is_ascii_digit() || matches!(c, '.' | '-'))
            .collect();
        let Ok(claimed) = claimed.parse::<f64>() else {
            continue;
        };
        let lhs = lhs.trim().trim_start_matches(|c: char| !c.is_ascii_digit());
        let Some(at) = lhs[1..].find(['+', '-', '*', '/']).map(|p| p + 1) else {
            continue;
        };
        let op = lhs[at..].chars().next().unwrap_or(' ');
        let (Ok(a), Ok(b)) = (
            lhs[..at].trim().parse::<f64>(),
            lhs[at + 1..].trim().parse::<f64>(),
        ) else {
            continue;
        };
        if let Some(next) = game.apply(a, op, b, claimed)
            && !out.contains(&next)
        {
            out.push(next);
        }
    }
    out
}

fn propose_prompt(game: &Game, _k: usize) -> Vec<Message> {
    vec![
        Message::system(
            "You play the Game of 24. Each step combines two of the numbers left with + - * or / \
             into one number. List possible next steps, one per line, as: a op b = c (left: …)",
        ),
        Message::user("Input: 2 8 8 14\nPossible next steps:"),
        Message::assistant(
            "2 + 8 = 10 (left: 8 10 14)\n8 / 2 = 4 (left: 4 8 14)\n14 + 2 = 16 (left: 8 8 16)\n\
             2 * 8 = 16 (left: 8 14 16)\n8 - 2 = 6 (left: 6 8 14)\n14 - 8 = 6 (left: 2 6 8)\n\
             14 / 2 = 7 (left: 7 8 8)\n14 - 2 = 12 (left: 8 8 12)",
        ),
        Message::user(format!("Input: {}\nPossible next steps:", game.left())),
    ]
}

fn value_prompt(game: &Game) -> Vec<Message> {
    vec![
        Message::system(
            "Judge whether the numbers can reach 24 with + - * /, each number used once. \
             Answer with one word: sure, likely or impossible.",
        ),
        Message::user("10 14"),
        Message::assistant("sure"),
        Message::user("11 12"),
        Message::assistant("impossible"),
        Message::user("4 4 10"),
        Message::assistant("sure"),
        Message::user("5 7 8"),
        Message::assistant("likely"),
        Message::user("1 3 3"),
        Message::assistant("impossible"),
        Message::user(game.left()),
    ]
}

/// The model judges positions with two or more numbers; a lone number is
/// judged by the checker.
struct Judge(LlmEvaluator<Game>);

#[async_trait]
impl Evaluator<Game> for Judge {
    async fn evaluate(&self, states: &[Game]) -> kb::Result<Vec<f32>> {
        let open: Vec<Game> = states
            .iter()
            .filter(|g| g.numbers.len() > 1)
            .cloned()
            .collect();
        let mut judged = self.0.evaluate(&open).await?.into_iter();
        Ok(states
            .iter()
            .map(|g| match g.numbers.len() {
                1 => f32::from(u8::from(g.is_24())),
                _ => judged.next().unwrap_or(0.0),
            })
            .collect())
    }
}

/// Re-checks a solution from scratch: its expression evaluates to 24 and
/// uses exactly the puzzle's numbers.
fn verify(puzzle: &[u32], game: &Game) -> bool {
    let Some(expr) = game.exprs.first() else {
        return false;
    };
    let mut used: Vec<u32> = expr
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect();
    let mut wanted = puzzle.to_vec();
    used.sort_unstable();
    wanted.sort_unstable();
    game.exprs.len() == 1 && used == wanted && evaluate(expr).is_ok_and(|v| (v - 24.0).abs() < 1e-9)
}

async fn play(
    model: Arc<dyn ChatModel>,
    meter: &Meter,
    puzzle: &[u32],
    beam: usize,
    calls: usize,
) -> Result<bool> {
    let search = TreeOfThoughts::new(
        LlmProposer::new(model.clone(), propose_prompt, parse_steps),
        Judge(LlmEvaluator::new(model, value_prompt)),
        Game::is_24,
    )
    .strategy(Strategy::Bfs { beam })
    .max_depth(3)
    .proposals(8)
    .budget(Budget {
        max_calls: calls,
        max_tokens: usize::MAX,
    })
    .meter(meter.clone());
    let outcome = search.run(Game::new(puzzle)).await?;
    let per_depth = outcome.per_depth();
    println!(
        "  tree: {} states by depth {:?}, {} proposal calls, {} evaluations, stop: {:?}",
        outcome.tree.len(),
        per_depth,
        outcome.proposals,
        outcome.evaluations,
        outcome.stop
    );
    let best = outcome
        .tree
        .iter()
        .filter(|n| n.depth > 0)
        .max_by(|a, b| a.depth.cmp(&b.depth).then(a.score.total_cmp(&b.score)));
    if let Some(node) = best.filter(|_| outcome.stop != SearchStop::Solved) {
        println!(
            "  deepest best: {} (score {:.2})",
            node.state.steps.join("; "),
            node.score
        );
    }
    match outcome
        .solution_states()
        .and_then(|path| path.last().copied().cloned())
    {
        Some(game) if verify(puzzle, &game) => {
            for step in &game.steps {
                println!("    {step}");
            }
            println!("  solved: {} = 24 (verified)", game.exprs[0]);
            Ok(true)
        }
        Some(game) => bail!(
            "the search returned a solution the checker rejects: {:?}",
            game.exprs
        ),
        None => {
            println!("  no solution found");
            Ok(false)
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = common::Args::parse(USAGE, &[])?;
    let beam: usize = args.get("beam", 5)?;
    let calls: usize = args.get("calls", 80)?;
    let puzzles: Vec<Vec<u32>> = if args.words.is_empty() {
        let n: usize = args.get("puzzles", PUZZLES.len())?;
        PUZZLES.iter().take(n).map(|p| p.to_vec()).collect()
    } else {
        let numbers: Vec<u32> = args
            .words
            .iter()
            .map(|w| w.parse())
            .collect::<Result<_, _>>()
            .map_err(|e| anyhow::anyhow!("the numbers must be whole numbers: {e}"))?;
        if numbers.len() != 4 {
            bail!("give four numbers, e.g. 4 9 10 13\n\n{USAGE}");
        }
        vec![numbers]
    };
    let metered = Metered::new(args.chat_model()?);
    let meter = metered.meter();
    let model: Arc<dyn ChatModel> = Arc::new(metered);
    println!(
        "Game of 24 by tree-of-thoughts (BFS, beam {beam}) with {}",
        args.model
    );
    let mut solved = 0;
    for puzzle in &puzzles {
        println!("puzzle {puzzle:?}");
        if play(model.clone(), &meter, puzzle, beam, calls).await? {
            solved += 1;
        }
    }
    let counts = meter.counts();
    println!(
        "solved {solved}/{} ({:.0}%)",
        puzzles.len(),
        100.0 * solved as f64 / puzzles.len() as f64
    );
    println!(
        "model: {} generations, {} scorings; generation prompts {} tokens, of which {} prefilled and {} reused from the prefix cache ({:.0}%)",
        counts.calls,
        counts.scores,
        counts.usage.prompt_tokens,
        counts.prefilled_tokens(),
        counts.usage.cached_prompt_tokens,
        100.0 * counts.usage.cached_prompt_tokens as f64 / counts.usage.prompt_tokens.max(1) as f64
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_legal_right_steps_are_kept() {
        let game = Game::new(&[4, 9, 10, 13]);
        let next = parse_steps(
            &game,
            "13 - 9 = 4 (left: 4 4 10)\n10 - 4 = 7\n4 * 4 = 16\nhello\n10 - 4 = 6 (left: 4 6 13)",
        );
        assert_eq!(next.len(), 2);
        assert_eq!(next[0].left(), "4 4 10");
        let last = parse_steps(&next[1], "13 - 4 = 9").remove(0);
        let done = parse_steps(&last, "9 + 6 = 15");
        assert_eq!(done[0].numbers, [15.0]);
        assert!(!verify(&[4, 9, 10, 13], &done[0]));
        let g = parse_steps(&game, "10 - 4 = 6").remove(0);
        let g = parse_steps(&g, "13 - 9 = 4").remove(0);
        let g = parse_steps(&g, "6 * 4 = 24").remove(0);
        assert!(g.is_24() && verify(&[4, 9, 10, 13], &g), "{:?}", g.exprs);
    }
}
