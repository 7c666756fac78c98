//! Tree-of-thoughts: search over partial solutions ("thoughts"), with a
//! [`Proposer`] of next steps and an [`Evaluator`] of how promising a state
//! is, breadth-first with a beam or depth-first with pruning and
//! backtracking.

mod llm;

use std::sync::Arc;

use async_trait::async_trait;
use kb_core::Result;
use serde::{Deserialize, Serialize};

pub use llm::{LlmEvaluator, LlmProposer, Valuation, verbal_value};

use crate::meter::Meter;

/// Proposes up to `k` next states from a state.
#[async_trait]
pub trait Proposer<S>: Send + Sync {
    /// The next states reachable from `state`, at most `k`.
    async fn propose(&self, state: &S, k: usize) -> Result<Vec<S>>;
}

/// Scores states from 0 (hopeless) to 1 (certain to lead to a solution).
///
/// It takes a whole level at once so that an LLM evaluator sends its prompts
/// back to back, sharing their common prefix in the model's cache.
#[async_trait]
pub trait Evaluator<S>: Send + Sync {
    /// One score per state, in order.
    async fn evaluate(&self, states: &[S]) -> Result<Vec<f32>>;
}

/// A closure as a [`Proposer`].
pub struct FnProposer<F>(pub F);

#[async_trait]
impl<S, F> Proposer<S> for FnProposer<F>
where
    S: Sync,
    F: Fn(&S, usize) -> Vec<S> + Send + Sync,
{
    async fn propose(&self, state: &S, k: usize) -> Result<Vec<S>> {
        let mut next = (self.0)(state, k);
        next.truncate(k);
        Ok(next)
    }
}

/// A closure as an [`Evaluator`]: a programmatic checker.
pub struct FnEvaluator<F>(pub F);

#[async_trait]
impl<S, F> Evaluator<S> for FnEvaluator<F>
where
    S: Sync,
    F: Fn(&S) -> f32 + Send + Sync,
{
    async fn evaluate(&self, states: &[S]) -> Result<Vec<f32>> {
        Ok(states.iter().map(|s| (self.0)(s)).collect())
    }
}

/// How the tree is searched.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Strategy {
    /// Breadth-first: each level keeps the `beam` best states.
    Bfs {
        /// States kept per level.
        beam: usize,
    },
    /// Depth-first, best child first; children scoring below `threshold`
    /// are pruned, and a dead end backtracks to the next sibling.
    Dfs {
        /// The lowest score worth exploring.
        threshold: f32,
    },
}

/// One state of the searched tree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node<S> {
    /// The state.
    pub state: S,
    /// The index of its parent in [`SearchOutcome::tree`] (`None` for the root).
    pub parent: Option<usize>,
    /// Steps from the root.
    pub depth: usize,
    /// The evaluator's score (1 for the root).
    pub score: f32,
    /// Whether it was expanded (asked for next steps).
    pub expanded: bool,
    /// Whether it was pruned (scored below the DFS threshold or left out of
    /// the BFS beam).
    pub pruned: bool,
}

/// Why a search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchStop {
    /// A solution was found.
    Solved,
    /// The tree was searched to its depth limit without one.
    Exhausted,
    /// The budget ran out first.
    Budget,
}

/// The result of a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchOutcome<S> {
    /// Indices into [`tree`](Self::tree) from the root to the solution.
    pub solution: Option<Vec<usize>>,
    /// Why the search ended.
    pub stop: SearchStop,
    /// Every state generated, the root first.
    pub tree: Vec<Node<S>>,
    /// Proposer calls made.
    pub proposals: usize,
    /// States evaluated.
    pub evaluations: usize,
    /// DFS only: times a dead end sent the search back up.
    pub backtracks: usize,
}

impl<S> SearchOutcome<S> {
    /// The states from the root to the solution.
    pub fn solution_states(&self) -> Option<Vec<&S>> {
        self.solution
            .as_ref()
            .map(|path| path.iter().map(|&i| &self.tree[i].state).collect())
    }

    /// States generated at each depth (index 0 is the root).
    pub fn per_depth(&self) -> Vec<usize> {
        let deepest = self.tree.iter().map(|n| n.depth).max().unwrap_or(0);
        let mut counts = vec![0; deepest + 1];
        for node in &self.tree {
            counts[node.depth] += 1;
        }
        counts
    }
}

/// Limits on one search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Most proposer calls plus state evaluations.
    pub max_calls: usize,
    /// Most tokens (prompt plus completion) counted by the search's
    /// [`Meter`], when it has one.
    pub max_tokens: usize,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_calls: 200,
            max_tokens: usize::MAX,
        }
    }
}

/// A tree-of-thoughts search.
///
/// ```
/// use kb_agents::tot::{FnEvaluator, FnProposer, SearchStop, Strategy, TreeOfThoughts};
/// // Reach 10 from 1 by "+1" or "×2" steps, preferring states near 10.
/// let search = TreeOfThoughts::new(
///     FnProposer(|n: &i32, _k| vec![n + 1, n * 2]),
///     FnEvaluator(|n: &i32| if *n > 10 { 0.0 } else { *n as f32 / 10.0 }),
///     |n: &i32| *n == 10,
/// )
/// .strategy(Strategy::Bfs { beam: 2 })
/// .max_depth(5);
/// # futures::executor::block_on(async {
/// let outcome = search.run(1).await?;
/// assert_eq!(outcome.stop, SearchStop::Solved);
/// let path: Vec<i32> = outcome.solution_states().unwrap().into_iter().copied().collect();
/// assert_eq!(path.last(), Some(&10));
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// ```
pub struct TreeOfThoughts<S> {
    proposer: Arc<dyn Proposer<S>>,
    evaluator: Arc<dyn Evaluator<S>>,
    is_solution: Arc<dyn Fn(&S) -> bool + Send + Sync>,
    strategy: Strategy,
    max_depth: usize,
    k: usize,
    budget: Budget,
    meter: Option<Meter>,
}

impl<S> std::fmt::Debug for TreeOfThoughts<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TreeOfThoughts")
            .field("strategy", &self.strategy)
            .field("max_depth", &self.max_depth)
            .field("k", &self.k)
            .field("budget", &self.budget)
            .finish_non_exhaustive()
    }
}

/// A search in progress.
struct Run<'a, S> {
    search: &'a TreeOfThoughts<S>,
    tree: Vec<Node<S>>,
    proposals: usize,
    evaluations: usize,
    backtracks: usize,
}

impl<S: Clone + PartialEq + Send + Sync> Run<'_, S> {
    fn calls(&self) -> usize {
        self.proposals + self.evaluations
    }

    fn over_budget(&self, next_calls: usize) -> bool {
        let budget = self.search.budget;
        if self.calls() + next_calls > budget.max_calls {
            return true;
        }
        self.search
            .meter
            .as_ref()
            .is_some_and(|m| m.counts().usage.total_tokens() >= budget.max_tokens)
    }

    fn path(&self, mut at: usize) -> Vec<usize> {
        let mut path = vec![at];
        while let Some(parent) = self.tree[at].parent {
            path.push(parent);
            at = parent;
        }
        path.reverse();
        path
    }

    /// Proposes and scores the children of node `at`, adding them to the
    /// tree; `None` when the budget does not allow it.
    async fn expand(&mut self, at: usize) -> Result<Option<Vec<usize>>> {
        if self.over_budget(1) {
            return Ok(None);
        }
        self.proposals += 1;
        self.tree[at].expanded = true;
        let state = self.tree[at].state.clone();
        let mut children = self.search.proposer.propose(&state, self.search.k).await?;
        children.truncate(self.search.k);
        let mut unique: Vec<S> = Vec::with_capacity(children.len());
        for child in children {
            if !unique.contains(&child) {
                unique.push(child);
            }
        }
        let depth = self.tree[at].depth + 1;
        let first = self.tree.len();
        for state in unique {
            self.tree.push(Node {
                state,
                parent: Some(at),
                depth,
                score: 0.0,
                expanded: false,
                pruned: false,
            });
        }
        Ok(Some((first..self.tree.len()).collect()))
    }

    /// Scores `nodes`; `false` when the budget does not allow it.
    async fn score(&mut self, nodes: &[usize]) -> Result<bool> {
        if nodes.is_empty() {
            return Ok(true);
        }
        if self.over_budget(nodes.len()) {
            return Ok(false);
        }
        let states: Vec<S> = nodes.iter().map(|&i| self.tree[i].state.clone()).collect();
        let scores = self.search.evaluator.evaluate(&states).await?;
        self.evaluations += nodes.len();
        for (&i, score) in nodes.iter().zip(scores) {
            self.tree[i].score = if score.is_finite() {
                score.clamp(0.0, 1.0)
            } else {
                0.0
            };
        }
        Ok(true)
    }

    fn solved(&self, nodes: &[usize]) -> Option<usize> {
        nodes
            .iter()
            .copied()
            .find(|&i| (self.search.is_solution)(&self.tree[i].state))
    }

    async fn bfs(&mut self, beam: usize) -> Result<(SearchStop, Option<usize>)> {
        let mut frontier = vec![0];
        for _ in 0..self.search.max_depth {
            let mut level = Vec::new();
            // Every proposal of the level first, then every evaluation: two
            // runs of prompts that share a prefix.
            for &at in &frontier {
                match self.expand(at).await? {
                    Some(children) => level.extend(children),
                    None => return Ok((SearchStop::Budget, None)),
                }
            }
            // Drop states equal to one seen earlier on this level.
            let mut kept: Vec<usize> = Vec::new();
            for i in level {
                if kept
                    .iter()
                    .any(|&j| self.tree[j].state == self.tree[i].state)
                {
                    self.tree[i].pruned = true;
                } else {
                    kept.push(i);
                }
            }
            if let Some(found) = self.solved(&kept) {
                return Ok((SearchStop::Solved, Some(found)));
            }
            if !self.score(&kept).await? {
                return Ok((SearchStop::Budget, None));
            }
            kept.sort_by(|&a, &b| self.tree[b].score.total_cmp(&self.tree[a].score));
            for &i in kept.iter().skip(beam) {
                self.tree[i].pruned = true;
            }
            kept.truncate(beam);
            if kept.is_empty() {
                break;
            }
            frontier = kept;
        }
        Ok((SearchStop::Exhausted, None))
    }

    async fn dfs(&mut self, threshold: f32) -> Result<(SearchStop, Option<usize>)> {
        // Each entry: children of a node still to try, best last.
        let mut stack: Vec<Vec<usize>> = Vec::new();
        let mut at = 0;
        loop {
            if self.tree[at].depth < self.search.max_depth {
                let Some(children) = self.expand(at).await? else {
                    return Ok((SearchStop::Budget, None));
                };
                if let Some(found) = self.solved(&children) {
                    return Ok((SearchStop::Solved, Some(found)));
                }
                if !self.score(&children).await? {
                    return Ok((SearchStop::Budget, None));
                }
                let mut promising = Vec::new();
                for i in children {
                    if self.tree[i].score >= threshold {
                        promising.push(i);
                    } else {
                        self.tree[i].pruned = true;
                    }
                }
                promising.sort_by(|&a, &b| self.tree[a].score.total_cmp(&self.tree[b].score));
                stack.push(promising);
            } else {
                stack.push(Vec::new());
            }
            // The next state: the best untried child, climbing back up past
            // exhausted levels.
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok((SearchStop::Exhausted, None));
                };
                if let Some(next) = top.pop() {
                    at = next;
                    break;
                }
                stack.pop();
                if !stack.is_empty() {
                    self.backtracks += 1;
                }
            }
        }
    }
}

impl<S: Clone + PartialEq + Send + Sync + 'static> TreeOfThoughts<S> {
    /// A search proposing with `proposer`, scoring with `evaluator`, ending at
    /// a state `is_solution` accepts: BFS with a beam of 5, depth 4, 5
    /// proposals per state, 200 calls.
    pub fn new(
        proposer: impl Proposer<S> + 'static,
        evaluator: impl Evaluator<S> + 'static,
        is_solution: impl Fn(&S) -> bool + Send + Sync + 'static,
    ) -> Self {
        TreeOfThoughts {
            proposer: Arc::new(proposer),
            evaluator: Arc::new(evaluator),
            is_solution: Arc::new(is_solution),
            strategy: Strategy::Bfs { beam: 5 },
            max_depth: 4,
            k: 5,
            budget: Budget::default(),
            meter: None,
        }
    }

    /// BFS or DFS (default BFS, beam 5).
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Most steps from the root (default 4).
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth.max(1);
        self
    }

    /// Proposals asked for per state (default 5).
    pub fn proposals(mut self, k: usize) -> Self {
        self.k = k.max(1);
        self
    }

    /// Limits on calls and tokens.
    pub fn budget(mut self, budget: Budget) -> Self {
        self.budget = budget;
        self
    }

    /// Counts tokens against [`Budget::max_tokens`] with `meter`.
    pub fn meter(mut self, meter: Meter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// Searches from `root`.
    pub async fn run(&self, root: S) -> Result<SearchOutcome<S>> {
        let mut run = Run {
            search: self,
            tree: vec![Node {
                state: root,
                parent: None,
                depth: 0,
                score: 1.0,
                expanded: false,
                pruned: false,
            }],
            proposals: 0,
            evaluations: 0,
            backtracks: 0,
        };
        let (stop, found) = if (self.is_solution)(&run.tree[0].state) {
            (SearchStop::Solved, Some(0))
        } else {
            match self.strategy {
                Strategy::Bfs { beam } => run.bfs(beam.max(1)).await?,
                Strategy::Dfs { threshold } => run.dfs(threshold).await?,
            }
        };
        Ok(SearchOutcome {
            solution: found.map(|at| run.path(at)),
            stop,
            proposals: run.proposals,
            evaluations: run.evaluations,
            backtracks: run.backtracks,
            tree: run.tree,
        })
    }
}
