//! Tools and agents: a ReAct agent that survives small local models,
//! chain-of-thought, self-consistency and tree-of-thoughts.
//!
//! - [`tools`]: [`KbSearch`](tools::KbSearch), [`Calculator`](tools::Calculator),
//!   [`ReadFile`](tools::ReadFile), [`FnTool`](tools::FnTool) for closures,
//!   and the [`Toolbox`](tools::Toolbox) agents call them through.
//! - [`ReActAgent`]: Thought / Action / Observation with native tool calling
//!   when the model has it, lenient parsing, retries and budgets; every step
//!   streamed as an [`AgentEvent`].
//! - [`ChainOfThought`] and [`SelfConsistency`]: reasoning before answering,
//!   and a majority vote over sampled chains.
//! - [`tot`]: tree-of-thoughts search, BFS with a beam or DFS with pruning.
//! - [`Metered`]: counts a model's calls and tokens, for budgets and reports.

mod cot;
mod meter;
mod react;
mod reply;
mod self_consistency;
pub mod tools;
pub mod tot;

pub use cot::{ChainOfThought, CotAnswer, CotExample, extract_answer, normalize_answer};
pub use meter::{Counts, Meter, Metered};
pub use react::{
    AgentEvent, AgentOutcome, AgentStep, AgentStream, ReActAgent, STEP_TOKENS, StopReason, ToolMode,
};
pub use reply::{Reply, parse_reply};
pub use self_consistency::{SelfConsistency, Tally, Vote, tally};
