//! [`merge_adjacent`]: neighbouring chunks found by one search become one
//! passage.
//!
//! A chunk boundary can fall between a question's trigger sentence and its
//! answer; then the two chunks often both rank, one just below the other.
//! Returned apart, the answer's half loses a place to it and a reader (or a
//! model) gets the passage in two pieces, the overlap twice. Merged, the
//! passage takes the best rank of its pieces and frees the other places for
//! more of the document collection.

use kb_core::Chunk;

use crate::hybrid::Hit;

/// The most chunks one passage joins.
pub(crate) const MAX_PIECES: usize = 3;

/// Joins hits on consecutive chunks of one document (ordinals `n` and
/// `n + 1`) into one hit, at the rank of the best of them, with the text of
/// the whole span (where the splitter dropped blank space between two
/// chunks, a line break stands for it); keeps the first `k` passages. A
/// passage joins at most three chunks and is named by the first of them (id,
/// ordinal, metadata). Chunks without a span (`start`/`end` metadata) stay
/// as they are.
///
/// ```
/// use kb_core::{Chunk, ScoredChunk};
/// use kb_retrievers::{Hit, merge_adjacent};
///
/// let doc = "Step one: mix. Step two: bake for an hour.";
/// let chunk = |n: u32, start: usize, end: usize| {
///     let mut c = Chunk::new("recipe.md", n, &doc[start..end]);
///     c.metadata.insert("start".into(), start.into());
///     c.metadata.insert("end".into(), end.into());
///     Hit { scored: ScoredChunk { chunk: c, score: 1.0 }, vector: None, bm25: None, rerank: None }
/// };
/// let hits = vec![chunk(0, 0, 24), chunk(1, 15, 42)];
/// let merged = merge_adjacent(hits, 10);
/// assert_eq!(merged.len(), 1);
/// assert_eq!(merged[0].scored.chunk.text, doc);
/// ```
pub fn merge_adjacent(hits: Vec<Hit>, k: usize) -> Vec<Hit> {
    let mut passages: Vec<Passage> = Vec::new();
    'hits: for hit in hits {
        if let Some(span) = span(&hit.scored.chunk) {
            for passage in passages.iter_mut() {
                if passage.try_join(&hit.scored.chunk, span) {
                    continue 'hits;
                }
            }
            passages.push(Passage::new(hit, Some(span)));
        } else {
            passages.push(Passage::new(hit, None));
        }
    }
    passages
        .into_iter()
        .take(k)
        .map(Passage::into_hit)
        .collect()
}

/// A chunk's byte span in its document.
fn span(chunk: &Chunk) -> Option<(usize, usize)> {
    let get = |key: &str| {
        chunk
            .metadata
            .get(key)
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| usize::try_from(v).ok())
    };
    let (start, end) = (get("start")?, get("end")?);
    (start <= end && end - start == chunk.text.len()).then_some((start, end))
}

/// Hits on consecutive chunks, kept in document order.
struct Passage {
    /// The best-ranked hit: its score and ranks stand for the passage.
    hit: Hit,
    /// The first chunk in document order: its id, ordinal and metadata name
    /// the passage (so the same pieces make the same passage whichever of
    /// them ranked first).
    first: Chunk,
    /// The pieces' (ordinal, span, text), in document order.
    pieces: Vec<(u32, (usize, usize), String)>,
}

impl Passage {
    fn new(hit: Hit, span: Option<(usize, usize)>) -> Self {
        let chunk = &hit.scored.chunk;
        let pieces = span
            .map(|s| vec![(chunk.ordinal, s, chunk.text.clone())])
            .unwrap_or_default();
        Passage {
            first: chunk.clone(),
            hit,
            pieces,
        }
    }

    /// Adds `chunk` if it continues the passage at either end.
    fn try_join(&mut self, chunk: &Chunk, span: (usize, usize)) -> bool {
        if self.pieces.is_empty()
            || self.pieces.len() >= MAX_PIECES
            || chunk.doc_id != self.hit.scored.chunk.doc_id
        {
            return false;
        }
        let (first, last) = (&self.pieces[0], &self.pieces[self.pieces.len() - 1]);
        let piece = (chunk.ordinal, span, chunk.text.clone());
        if last.0.checked_add(1) == Some(chunk.ordinal) && span.0 > last.1.0 && span.1 > last.1.1 {
            self.pieces.push(piece);
            true
        } else if chunk.ordinal.checked_add(1) == Some(first.0)
            && span.0 < first.1.0
            && span.1 < first.1.1
        {
            self.pieces.insert(0, piece);
            self.first = chunk.clone();
            true
        } else {
            false
        }
    }

    fn into_hit(self) -> Hit {
        let Passage {
            mut hit,
            first,
            pieces,
        } = self;
        if pieces.len() < 2 {
            return hit;
        }
        // Each piece adds what lies past the end so far.
        let mut text = String::new();
        let mut end = pieces[0].1.0;
        for (_, (start, stop), piece) in &pieces {
            if *start > end {
                text.push('\n');
            }
            let skip = end.saturating_sub(*start);
            if let Some(rest) = piece.get(skip..) {
                text.push_str(rest);
            }
            end = end.max(*stop);
        }
        hit.scored.chunk = first;
        let chunk = &mut hit.scored.chunk;
        chunk.text = text;
        chunk.metadata.insert("start".into(), pieces[0].1.0.into());
        chunk.metadata.insert("end".into(), end.into());
        chunk.metadata.insert(
            "chunks".into(),
            pieces.iter().map(|(n, _, _)| *n).collect::<Vec<_>>().into(),
        );
        hit
    }
}

#[cfg(test)]
mod tests {
    use kb_core::ScoredChunk;

    use super::*;

    const DOC: &str = "第一段落的开头。第二句在这里。第三句是答案。第四句收尾。";

    fn hit(doc: &str, n: u32, start: usize, end: usize, score: f32) -> Hit {
        let mut c = Chunk::new(doc, n, &DOC[start..end]);
        c.metadata.insert("start".into(), start.into());
        c.metadata.insert("end".into(), end.into());
        Hit {
            scored: ScoredChunk { chunk: c, score },
            vector: None,
            bm25: None,
            rerank: None,
        }
    }

    /// Byte offsets of the sentence ends in DOC.
    fn cuts() -> Vec<usize> {
        DOC.match_indices('。').map(|(i, m)| i + m.len()).collect()
    }

    #[test]
    fn neighbours_join_at_the_best_rank_and_free_a_place() {
        let c = cuts();
        let hits = vec![
            hit("a", 2, c[1], c[3], 0.9),
            hit("b", 0, 0, c[0], 0.8),
            // Overlaps chunk 2 by one sentence.
            hit("a", 1, c[0], c[2], 0.7),
            hit("b", 5, c[0], c[1], 0.6),
        ];
        let merged = merge_adjacent(hits, 3);
        assert_eq!(merged.len(), 3);
        assert_eq!(merged[0].scored.chunk.text, &DOC[c[0]..c[3]]);
        assert_eq!(merged[0].scored.score, 0.9);
        // Named by its first chunk, whichever ranked first.
        assert_eq!(merged[0].scored.chunk.ordinal, 1);
        assert_eq!(
            merged[0].scored.chunk.metadata["chunks"],
            serde_json::json!([1, 2])
        );
        assert_eq!(merged[1].scored.chunk.doc_id, "b");
        assert_eq!(merged[2].scored.chunk.ordinal, 5, "not adjacent to b's 0");
    }

    #[test]
    fn chains_stop_at_the_limit_and_other_documents_stay_apart() {
        let c = cuts();
        let hits = vec![
            hit("a", 0, 0, c[0], 1.0),
            hit("a", 1, c[0], c[1], 0.9),
            hit("a", 2, c[1], c[2], 0.8),
            hit("a", 3, c[2], c[3], 0.7),
            hit("x", 1, c[0], c[1], 0.6),
        ];
        let merged = merge_adjacent(hits, 10);
        let texts: Vec<&str> = merged
            .iter()
            .map(|h| h.scored.chunk.text.as_str())
            .collect();
        assert_eq!(texts, [&DOC[..c[2]], &DOC[c[2]..c[3]], &DOC[c[0]..c[1]]]);
    }

    #[test]
    fn blank_space_the_splitter_dropped_becomes_a_line_break() {
        let c = cuts();
        // Chunk 1 starts a character after chunk 0 ends.
        let hits = vec![hit("a", 1, c[0] + 3, c[1], 1.0), hit("a", 0, 0, c[0], 0.5)];
        let merged = merge_adjacent(hits, 10);
        assert_eq!(merged.len(), 1);
        let expected = format!("{}\n{}", &DOC[..c[0]], &DOC[c[0] + 3..c[1]]);
        assert_eq!(merged[0].scored.chunk.text, expected);
        assert_eq!(merged[0].scored.chunk.metadata["start"], 0);
        assert_eq!(merged[0].scored.chunk.metadata["end"], c[1]);
    }

    #[test]
    fn chunks_without_a_span_are_left_alone() {
        let mut bare = hit("a", 1, 0, cuts()[0], 0.5);
        bare.scored.chunk.metadata.clear();
        let hits = vec![hit("a", 0, 0, cuts()[0], 1.0), bare.clone()];
        let merged = merge_adjacent(hits, 10);
        assert_eq!(merged.len(), 2);
        assert_eq!(merged[1], bare);
    }
}
