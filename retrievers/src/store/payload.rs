//! What every backend stores with a point, the same on each: the point id
//! of a chunk or unit, the payload that carries the chunk, the payload keys
//! that are indexed, and kb's filters in Qdrant's JSON.

use kb_core::{Chunk, Condition, Filter, Metadata, ScoredChunk};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The namespace of the UUIDv5 point ids derived from chunk ids.
const POINT_NAMESPACE: Uuid = Uuid::from_u128(0x6b62_2d63_6875_6e6b_2d69_6473_2d76_3031);

/// Payload keys with a keyword index: filtering on them is fast.
pub const INDEXED_KEYS: [&str; 3] = ["source", "doc_id", "chunk_id"];

/// The payload key of a unit's text. A chunk found through a unit carries
/// it in its metadata: the sentence that matched. (Underscored, so that no
/// document's own metadata collides with it.)
pub const UNIT_KEY: &str = "_unit";

/// Points fetched per chunk asked for, so that a chunk matched by several
/// of its units still leaves room for others.
pub(crate) const UNIT_FANOUT: usize = 4;

/// The point id of a chunk: the UUIDv5 of its id.
pub fn point_id(chunk_id: &str) -> Uuid {
    Uuid::new_v5(&POINT_NAMESPACE, chunk_id.as_bytes())
}

/// Qdrant's JSON filter for a kb filter (the same JSON the server takes).
pub fn to_qdrant_filter(filter: &Filter) -> Value {
    let condition = |c: &Condition| match c {
        Condition::Equals { key, value } => json!({"key": key, "match": {"value": value}}),
        Condition::AnyOf { key, values } => json!({"key": key, "match": {"any": values}}),
    };
    json!({
        "must": filter.must.iter().map(condition).collect::<Vec<_>>(),
        "must_not": filter.must_not.iter().map(condition).collect::<Vec<_>>(),
    })
}

/// The payload of a point: the chunk's metadata, its id, document,
/// ordinal and text, and with `unit` the text of the unit whose vector the
/// point holds.
pub(crate) fn payload_of(chunk: &Chunk, unit: Option<&str>) -> Metadata {
    let mut payload = chunk.metadata.clone();
    payload.insert("chunk_id".into(), chunk.id.clone().into());
    payload.insert("doc_id".into(), chunk.doc_id.clone().into());
    payload.insert("ordinal".into(), chunk.ordinal.into());
    payload.insert("text".into(), chunk.text.clone().into());
    if let Some(unit) = unit {
        payload.insert(UNIT_KEY.into(), unit.into());
    }
    payload
}

/// Rebuilds a chunk from its point's payload ([`payload_of`]).
pub(crate) fn chunk_from_payload(mut payload: Metadata) -> Option<Chunk> {
    // A unit's text stays in the metadata (UNIT_KEY): the sentence that matched.
    let id = payload.remove("chunk_id")?.as_str()?.to_string();
    let doc_id = payload.get("doc_id")?.as_str()?.to_string();
    payload.remove("doc_id");
    let ordinal = payload.remove("ordinal")?.as_u64()? as u32;
    let text = payload.remove("text")?.as_str()?.to_string();
    Some(Chunk {
        id,
        doc_id,
        ordinal,
        text,
        metadata: payload,
    })
}

/// That `vectors` are one per item and of the store's `dimension`.
pub(crate) fn check_vectors(n: usize, vectors: &[Vec<f32>], dimension: usize) -> Result<()> {
    if n != vectors.len() {
        return Err(Error::InvalidInput(format!(
            "{n} items but {} vectors",
            vectors.len()
        )));
    }
    match vectors.iter().find(|v| v.len() != dimension) {
        Some(bad) => Err(mismatch("vector", bad.len(), dimension)),
        None => Ok(()),
    }
}

/// That a query vector is of the store's `dimension`.
pub(crate) fn check_query(query: &[f32], dimension: usize) -> Result<()> {
    if query.len() == dimension {
        Ok(())
    } else {
        Err(mismatch("query", query.len(), dimension))
    }
}

fn mismatch(what: &str, len: usize, dimension: usize) -> Error {
    Error::InvalidInput(format!(
        "a {len}-dimensional {what} for a {dimension}-dimensional store"
    ))
}

/// The `k` best chunks from points that come nearest first, several of
/// which may lead to one chunk (its own and its units'): each chunk once,
/// at its nearest point.
pub(crate) fn first_per_chunk(
    hits: impl IntoIterator<Item = ScoredChunk>,
    k: usize,
) -> Vec<ScoredChunk> {
    let mut seen = std::collections::HashSet::new();
    hits.into_iter()
        .filter(|hit| seen.insert(hit.chunk.id.clone()))
        .take(k)
        .collect()
}
