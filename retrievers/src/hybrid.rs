//! Retrieval over a knowledge base's two indexes: [`VectorRetriever`],
//! [`Bm25Retriever`], and [`HybridRetriever`], which fuses them with
//! reciprocal-rank fusion.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use kb_core::{Chunk, Embedder, Filter, Reranker, Retriever, ScoredChunk, VectorStore};
use serde::{Deserialize, Serialize};

use crate::adjacent::merge_adjacent;
use crate::glossary::Glossary;
use crate::keywords::KeywordIndex;
use crate::snapshot::Snapshots;

/// Which indexes a search uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Vectors and BM25, fused.
    #[default]
    Hybrid,
    /// Embedding similarity only.
    Vector,
    /// Keywords only.
    Bm25,
}

impl std::str::FromStr for SearchMode {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "hybrid" => Ok(SearchMode::Hybrid),
            "vector" | "dense" => Ok(SearchMode::Vector),
            "bm25" | "keyword" => Ok(SearchMode::Bm25),
            other => Err(crate::Error::InvalidInput(format!(
                "unknown search mode {other:?}; use hybrid, vector or bm25"
            ))),
        }
    }
}

/// Where a hit ranked in each index.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Rank {
    /// 1-based rank.
    pub rank: usize,
    /// The index's own score (cosine similarity, or BM25).
    pub score: f32,
    /// What this ranking added to the fused score (hybrid search only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contribution: Option<f32>,
}

/// A search result with its explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Hit {
    /// The chunk, with the fused score (or the single index's score).
    #[serde(flatten)]
    pub scored: ScoredChunk,
    /// Its rank among the vector candidates, if it was one.
    pub vector: Option<Rank>,
    /// Its rank among the BM25 candidates, if it was one.
    pub bm25: Option<Rank>,
    /// Its rank and score by the reranker, when one reordered the best hits
    /// (the hits are then in the reranker's order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rerank: Option<Rank>,
}

/// How [`fuse`] combines the two rankings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FusionMethod {
    /// Weighted reciprocal-rank fusion: each ranking adds `w / (k + rank)`.
    #[default]
    Rrf,
    /// Weighted sum of the indexes' own scores, each min-max normalised over
    /// its candidates (the best candidate 1, the last 0): a clear winner in
    /// one index counts for more than a near-tie.
    Scores,
}

impl std::str::FromStr for FusionMethod {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "rrf" => Ok(FusionMethod::Rrf),
            "scores" => Ok(FusionMethod::Scores),
            other => Err(format!("unknown fusion {other:?} (rrf or scores)")),
        }
    }
}

/// How [`HybridRetriever`] fuses.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fusion {
    /// How the rankings are combined.
    pub method: FusionMethod,
    /// RRF's constant `k` in `w / (k + rank)` (60 in the original paper).
    pub rrf_k: f32,
    /// Weight of the vector ranking.
    pub vector_weight: f32,
    /// Weight of the BM25 ranking.
    pub bm25_weight: f32,
    /// Candidates taken from each index, as a multiple of the hits asked for.
    pub candidates_factor: usize,
}

impl Default for Fusion {
    fn default() -> Self {
        Fusion {
            method: FusionMethod::Rrf,
            rrf_k: 60.0,
            vector_weight: 1.0,
            bm25_weight: 1.0,
            candidates_factor: 4,
        }
    }
}

/// Embedding search over the vector store.
#[derive(Clone)]
pub struct VectorRetriever {
    embedder: Arc<dyn Embedder>,
    store: Arc<dyn VectorStore>,
    filter: Option<Filter>,
}

impl VectorRetriever {
    /// Searches `store` with queries embedded by `embedder`.
    pub fn new(embedder: Arc<dyn Embedder>, store: Arc<dyn VectorStore>) -> Self {
        VectorRetriever {
            embedder,
            store,
            filter: None,
        }
    }

    /// Only chunks `filter` accepts.
    pub fn with_filter(mut self, filter: Option<Filter>) -> Self {
        self.filter = filter;
        self
    }
}

#[async_trait]
impl Retriever for VectorRetriever {
    async fn retrieve(&self, query: &str, k: usize) -> kb_core::Result<Vec<ScoredChunk>> {
        let vector = self.embedder.embed_query(query).await?;
        self.store.search(&vector, k, self.filter.as_ref()).await
    }
}

/// Keyword search over a [`KeywordIndex`] (the local BM25 index, or the
/// keywords kept on a Qdrant server).
#[derive(Clone)]
pub struct Bm25Retriever {
    index: Arc<dyn KeywordIndex>,
    filter: Option<Filter>,
}

impl Bm25Retriever {
    /// Searches `index`.
    pub fn new(index: Arc<dyn KeywordIndex>) -> Self {
        Bm25Retriever {
            index,
            filter: None,
        }
    }

    /// Only chunks `filter` accepts.
    pub fn with_filter(mut self, filter: Option<Filter>) -> Self {
        self.filter = filter;
        self
    }

    /// The `k` best chunks for `query`.
    async fn search(&self, query: &str, k: usize) -> kb_core::Result<Vec<ScoredChunk>> {
        Ok(self
            .index
            .keyword_search(query, k, self.filter.as_ref())
            .await?)
    }
}

#[async_trait]
impl Retriever for Bm25Retriever {
    async fn retrieve(&self, query: &str, k: usize) -> kb_core::Result<Vec<ScoredChunk>> {
        self.search(query, k).await
    }
}

/// Vector and BM25 search fused by weighted reciprocal-rank fusion: each
/// chunk scores `Σ wᵢ / (k + rankᵢ)` over the rankings it appears in, so
/// neither index's raw scores need calibrating against the other's.
///
/// ```no_run
/// # async fn demo(kb: &kb_retrievers::KnowledgeBase) -> kb_core::Result<()> {
/// use kb_retrievers::SearchMode;
/// for hit in kb.search("注意力机制", 5, None, SearchMode::Hybrid).await? {
///     println!("{:.4} {} (vector {:?}, bm25 {:?})",
///         hit.scored.score, hit.scored.chunk.doc_id, hit.vector, hit.bm25);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct HybridRetriever {
    vector: VectorRetriever,
    bm25: Bm25Retriever,
    fusion: Fusion,
    rerank: Option<Rerank>,
    glossary: Option<Arc<Glossary>>,
    snapshots: Option<Arc<Snapshots>>,
    merge_adjacent: bool,
}

/// A reranker and how many of the best hits it reorders.
#[derive(Clone)]
pub struct Rerank {
    /// Scores query–passage pairs.
    pub reranker: Arc<dyn Reranker>,
    /// How many of the first hits it scores; the rest keep their order
    /// after them. Its cost grows with this: each is one model call.
    pub depth: usize,
}

impl std::fmt::Debug for Rerank {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rerank")
            .field("reranker", &self.reranker.name())
            .field("depth", &self.depth)
            .finish()
    }
}

impl HybridRetriever {
    /// Fuses the two retrievers.
    pub fn new(vector: VectorRetriever, bm25: Bm25Retriever, fusion: Fusion) -> Self {
        HybridRetriever {
            vector,
            bm25,
            fusion,
            rerank: None,
            glossary: None,
            snapshots: None,
            merge_adjacent: false,
        }
    }

    /// Joins hits on neighbouring chunks of a document into one passage
    /// ([`merge_adjacent`](crate::merge_adjacent)); the places they free go
    /// to the next hits.
    pub fn with_adjacent_merge(mut self, merge: bool) -> Self {
        self.merge_adjacent = merge;
        self
    }

    /// Reads both indexes between the changes of the knowledge base that
    /// owns `snapshots`, so a document being re-ingested shows its old or
    /// its new chunks, never a mix.
    pub(crate) fn with_snapshots(mut self, snapshots: Arc<Snapshots>) -> Self {
        self.snapshots = Some(snapshots);
        self
    }

    /// Adds to each query the other language's name of the `glossary` terms
    /// it contains.
    pub fn with_glossary(mut self, glossary: Option<Arc<Glossary>>) -> Self {
        self.glossary = glossary;
        self
    }

    /// `query` with the glossary's additions: both indexes search with it
    /// (on kb's held-out questions, the multilingual embedder also gains from
    /// the added terms).
    fn expanded(&self, query: &str) -> String {
        let added = self.expansion(query);
        if added.is_empty() {
            query.to_string()
        } else {
            format!("{query} {}", added.join(" "))
        }
    }

    /// The terms the glossary adds to `query`.
    pub fn expansion(&self, query: &str) -> Vec<String> {
        self.glossary
            .as_ref()
            .map(|g| g.expand(query))
            .unwrap_or_default()
    }

    /// Reorders the best hits of every search with `rerank`.
    pub fn with_rerank(mut self, rerank: Option<Rerank>) -> Self {
        self.rerank = rerank;
        self
    }

    /// Only chunks `filter` accepts.
    pub fn with_filter(mut self, filter: Option<Filter>) -> Self {
        self.vector.filter = filter.clone();
        self.bm25.filter = filter;
        self
    }

    /// The `k` best hits with their rank in each index, reordered by the
    /// reranker when there is one.
    pub async fn search(
        &self,
        query: &str,
        k: usize,
        mode: SearchMode,
    ) -> kb_core::Result<Vec<Hit>> {
        // Merging frees places: enough hits to fill them. The reranker
        // judges the joined passages.
        let depth = self.rerank.as_ref().map_or(k, |r| k.max(r.depth));
        let mut hits = if self.merge_adjacent {
            let hits = self.first_stage(query, depth, 2 * depth, mode).await?;
            merge_adjacent(hits, depth)
        } else {
            self.first_stage(query, depth, depth, mode).await?
        };
        if let Some(rerank) = &self.rerank {
            hits = rerank_hits(rerank.reranker.as_ref(), query, hits, rerank.depth).await?;
        }
        hits.truncate(k);
        Ok(hits)
    }

    /// The `keep` best hits of the indexes, fused in hybrid mode from as
    /// many candidates as `k` hits take.
    async fn first_stage(
        &self,
        query: &str,
        k: usize,
        keep: usize,
        mode: SearchMode,
    ) -> kb_core::Result<Vec<Hit>> {
        let candidates = (k * self.fusion.candidates_factor).max(k).max(20);
        let single = |hits: Vec<ScoredChunk>, vector: bool| -> Vec<Hit> {
            hits.into_iter()
                .take(keep)
                .enumerate()
                .map(|(i, scored)| {
                    let rank = Some(Rank {
                        rank: i + 1,
                        score: scored.score,
                        contribution: None,
                    });
                    Hit {
                        scored,
                        vector: if vector { rank } else { None },
                        bm25: if vector { None } else { rank },
                        rerank: None,
                    }
                })
                .collect()
        };
        let query = self.expanded(query);
        let depth = if mode == SearchMode::Hybrid {
            candidates.max(keep)
        } else {
            keep
        };
        let vector = match mode {
            SearchMode::Bm25 => None,
            _ => Some(self.vector.embedder.embed_query(&query).await?),
        };
        let (vector_hits, bm25_hits) = {
            let _view = match &self.snapshots {
                Some(snapshots) => Some(snapshots.read().await),
                None => None,
            };
            // Both indexes at once, each on a blocking thread.
            let vector_hits = async {
                match &vector {
                    Some(v) => {
                        self.vector
                            .store
                            .search(v, depth, self.vector.filter.as_ref())
                            .await
                    }
                    None => Ok(Vec::new()),
                }
            };
            let bm25_hits = async {
                match mode {
                    SearchMode::Vector => Ok(Vec::new()),
                    _ => self.bm25.search(&query, depth).await,
                }
            };
            let (vector_hits, bm25_hits) = tokio::join!(vector_hits, bm25_hits);
            (vector_hits?, bm25_hits?)
        };
        Ok(match mode {
            SearchMode::Vector => single(vector_hits, true),
            SearchMode::Bm25 => single(bm25_hits, false),
            SearchMode::Hybrid => fuse(vector_hits, bm25_hits, &self.fusion, keep),
        })
    }
}

/// Scores the first `depth` hits with `reranker` and puts them in its order
/// (ties keep the first stage's order); the hits after them keep theirs.
pub async fn rerank_hits(
    reranker: &dyn Reranker,
    query: &str,
    mut hits: Vec<Hit>,
    depth: usize,
) -> kb_core::Result<Vec<Hit>> {
    let depth = depth.min(hits.len());
    if depth == 0 {
        return Ok(hits);
    }
    let chunks: Vec<Chunk> = hits[..depth]
        .iter()
        .map(|h| h.scored.chunk.clone())
        .collect();
    let scores = reranker.score(query, &chunks).await?;
    if scores.len() != depth {
        return Err(kb_core::Error::Retrieval(format!(
            "reranker {} gave {} scores for {depth} passages",
            reranker.name(),
            scores.len()
        )));
    }
    let mut head: Vec<(Hit, f32)> = hits.drain(..depth).zip(scores).collect();
    head.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut reranked: Vec<Hit> = head
        .into_iter()
        .enumerate()
        .map(|(i, (mut hit, score))| {
            hit.rerank = Some(Rank {
                rank: i + 1,
                score,
                contribution: None,
            });
            hit
        })
        .collect();
    reranked.append(&mut hits);
    Ok(reranked)
}

/// Two rankings fused as `fusion` says (weighted RRF or normalised scores),
/// deduplicated by chunk id.
pub fn fuse(
    vector: Vec<ScoredChunk>,
    bm25: Vec<ScoredChunk>,
    fusion: &Fusion,
    k: usize,
) -> Vec<Hit> {
    let mut hits: HashMap<String, Hit> = HashMap::new();
    let mut order: Vec<String> = Vec::new();
    for (list, is_vector) in [(vector, true), (bm25, false)] {
        let weight = if is_vector {
            fusion.vector_weight
        } else {
            fusion.bm25_weight
        };
        let (low, high) = list
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), s| {
                (l.min(s.score), h.max(s.score))
            });
        for (i, scored) in list.into_iter().enumerate() {
            let contribution = match fusion.method {
                FusionMethod::Rrf => weight / (fusion.rrf_k + (i + 1) as f32),
                FusionMethod::Scores if high > low => weight * (scored.score - low) / (high - low),
                FusionMethod::Scores => weight,
            };
            let rank = Rank {
                rank: i + 1,
                score: scored.score,
                contribution: Some(contribution),
            };
            let id = scored.chunk.id.clone();
            let hit = hits.entry(id.clone()).or_insert_with(|| {
                order.push(id);
                Hit {
                    scored: ScoredChunk {
                        chunk: scored.chunk,
                        score: 0.0,
                    },
                    vector: None,
                    bm25: None,
                    rerank: None,
                }
            });
            let slot = if is_vector {
                &mut hit.vector
            } else {
                &mut hit.bm25
            };
            if slot.is_none() {
                *slot = Some(rank);
                hit.scored.score += contribution;
            }
        }
    }
    let mut fused: Vec<Hit> = order
        .into_iter()
        .filter_map(|id| hits.remove(&id))
        .collect();
    fused.sort_by(|a, b| {
        b.scored
            .score
            .total_cmp(&a.scored.score)
            .then_with(|| a.scored.chunk.id.cmp(&b.scored.chunk.id))
    });
    fused.truncate(k);
    fused
}

#[async_trait]
impl Retriever for HybridRetriever {
    async fn retrieve(&self, query: &str, k: usize) -> kb_core::Result<Vec<ScoredChunk>> {
        Ok(self
            .search(query, k, SearchMode::Hybrid)
            .await?
            .into_iter()
            .map(|h| h.scored)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kb_core::Chunk;

    fn scored(id: &str, score: f32) -> ScoredChunk {
        ScoredChunk {
            chunk: Chunk::new(id, 0, id),
            score,
        }
    }

    #[test]
    fn score_fusion_lets_a_clear_winner_pass_a_near_tie() {
        let vector = || vec![scored("a", 0.95), scored("b", 0.60), scored("c", 0.55)];
        let bm25 = || vec![scored("b", 10.0), scored("c", 9.0), scored("d", 1.0)];
        let ids = |hits: &[Hit]| -> Vec<String> {
            hits.iter().map(|h| h.scored.chunk.doc_id.clone()).collect()
        };
        // RRF sees ranks only: c, second and third, beats a, first once.
        let rrf = fuse(vector(), bm25(), &Fusion::default(), 4);
        assert_eq!(ids(&rrf), ["b", "c", "a", "d"]);
        // Normalised scores see that a leads its index by far while c trails b
        // closely in both: a 1.0, b 0.125 + 1.0, c 0 + 0.889, d 0.
        let scores = Fusion {
            method: FusionMethod::Scores,
            ..Fusion::default()
        };
        let hits = fuse(vector(), bm25(), &scores, 4);
        assert_eq!(ids(&hits), ["b", "a", "c", "d"]);
        let b = &hits[0];
        assert!((b.vector.and_then(|r| r.contribution).unwrap_or(0.0) - 0.125).abs() < 1e-5);
        assert_eq!(b.bm25.and_then(|r| r.contribution), Some(1.0));
        assert!((b.scored.score - 1.125).abs() < 1e-5);
        assert_eq!("scores".parse::<FusionMethod>(), Ok(FusionMethod::Scores));
        assert!("max".parse::<FusionMethod>().is_err());
    }

    #[test]
    fn rrf_rewards_agreement_and_explains_ranks() {
        let vector = vec![scored("a", 0.9), scored("c", 0.7)];
        let bm25 = vec![scored("c", 12.0), scored("d", 9.0)];
        let hits = fuse(vector, bm25, &Fusion::default(), 3);
        let ids: Vec<&str> = hits
            .iter()
            .map(|h| h.scored.chunk.doc_id.as_str())
            .collect();
        // c is in both lists: 1/62 + 1/61 beats a's 1/61, which beats d's 1/62.
        assert_eq!(ids, ["c", "a", "d"]);
        assert_eq!(hits[0].vector.map(|r| r.rank), Some(2));
        assert_eq!(hits[0].bm25.map(|r| r.rank), Some(1));
        assert_eq!(hits[2].vector, None);
        let parts = hits[0].vector.and_then(|r| r.contribution).unwrap_or(0.0)
            + hits[0].bm25.and_then(|r| r.contribution).unwrap_or(0.0);
        assert!(
            (parts - hits[0].scored.score).abs() < 1e-6,
            "the parts add up"
        );
        let weighted = fuse(
            vec![scored("a", 0.9)],
            vec![scored("d", 9.0)],
            &Fusion {
                bm25_weight: 2.0,
                ..Fusion::default()
            },
            2,
        );
        assert_eq!(weighted[0].scored.chunk.doc_id, "d");
    }

    /// Scores passages by their length: a stand-in for a model.
    struct Longest;

    #[async_trait]
    impl Reranker for Longest {
        fn name(&self) -> &str {
            "longest"
        }
        async fn score(&self, _: &str, chunks: &[Chunk]) -> kb_core::Result<Vec<f32>> {
            Ok(chunks.iter().map(|c| c.text.len() as f32).collect())
        }
    }

    fn hit(text: &str) -> Hit {
        Hit {
            scored: scored(text, 0.0),
            vector: None,
            bm25: None,
            rerank: None,
        }
    }

    #[tokio::test]
    async fn the_reranker_orders_the_first_hits_and_leaves_the_rest() {
        let hits = ["a", "ccc", "bb", "dddd"].map(hit).to_vec();
        let reranked = rerank_hits(&Longest, "q", hits, 3).await.expect("rerank");
        let order: Vec<&str> = reranked
            .iter()
            .map(|h| h.scored.chunk.text.as_str())
            .collect();
        // The first three by length, then "dddd" where it was, though longer.
        assert_eq!(order, ["ccc", "bb", "a", "dddd"]);
        assert_eq!(
            reranked[0].rerank.map(|r| (r.rank, r.score)),
            Some((1, 3.0))
        );
        assert_eq!(reranked[3].rerank, None);
        // Depth beyond the hits, and depth 0.
        let all = rerank_hits(&Longest, "q", ["a", "bb"].map(hit).to_vec(), 10).await;
        assert_eq!(all.expect("rerank")[0].scored.chunk.text, "bb");
        let none = rerank_hits(&Longest, "q", ["a", "bb"].map(hit).to_vec(), 0).await;
        assert_eq!(none.expect("rerank")[0].scored.chunk.text, "a");
    }

    #[tokio::test]
    async fn a_reranker_that_loses_scores_is_an_error() {
        struct Short;
        #[async_trait]
        impl Reranker for Short {
            fn name(&self) -> &str {
                "short"
            }
            async fn score(&self, _: &str, _: &[Chunk]) -> kb_core::Result<Vec<f32>> {
                Ok(vec![1.0])
            }
        }
        let err = rerank_hits(&Short, "q", ["a", "b"].map(hit).to_vec(), 2)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("gave 1 scores for 2"), "{err}");
    }
}
