//! [`EdgeStore`]: the embedded vector store, the Qdrant engine in process
//! (`qdrant-edge`): write-ahead log, payload indexes, HNSW.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use kb_core::{Chunk, Condition, Filter, Metadata, ScoredChunk, VectorStore};
use qdrant_edge::{
    CreateIndex, DEFAULT_VECTOR_NAME, Distance, EdgeConfigBuilder, EdgeShard,
    EdgeVectorParamsBuilder, FieldIndexOperations, JsonPath, NamedQuery, PayloadFieldSchema,
    PayloadSchemaType, PointId, PointOperations, PointStruct, QueryEnum, ScrollRequest,
    SearchRequest, UpdateOperation, Vectors, WithPayloadInterface, WithVector,
};
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
const UNIT_FANOUT: usize = 4;

/// A piece of a chunk (a sentence or two) with a vector of its own: a
/// search that matches it finds the whole chunk. Small units match a
/// question about one sentence of a chunk that is about other things too.
#[derive(Debug, Clone, Copy)]
pub struct Unit<'a> {
    /// The chunk the unit belongs to.
    pub chunk: &'a Chunk,
    /// Its position among the chunk's units.
    pub n: usize,
    /// Its text.
    pub text: &'a str,
}

/// The point id of a chunk: the UUIDv5 of its id.
pub fn point_id(chunk_id: &str) -> Uuid {
    Uuid::new_v5(&POINT_NAMESPACE, chunk_id.as_bytes())
}

/// A vector store in a local directory, holding each chunk's vector and the
/// chunk itself as payload, and optionally vectors of the chunk's
/// [`Unit`]s, which lead to the same chunk.
///
/// Cosine similarity; filtered searches on `source` and `doc_id` use payload
/// indexes. Call [`optimize`](Self::optimize) after a large ingest so that the
/// HNSW graph is built (searches are exact until then).
pub struct EdgeStore {
    /// Dropped by hand: it flushes as it drops and panics when it cannot.
    shard: std::mem::ManuallyDrop<EdgeShard>,
    dir: PathBuf,
    dimension: usize,
}

impl std::fmt::Debug for EdgeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeStore")
            .field("dir", &self.dir)
            .field("dimension", &self.dimension)
            .finish_non_exhaustive()
    }
}

fn edge_error(dir: &Path, e: impl std::fmt::Display) -> Error {
    Error::Index(format!("vector store {}: {e}", dir.display()))
}

impl EdgeStore {
    /// Opens the store in `dir`, creating it for `dimension`-sized vectors if
    /// it does not exist. An existing store of another dimension is an error.
    pub fn open(dir: &Path, dimension: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            action: "creating",
            path: dir.into(),
            source,
        })?;
        let exists = dir.join("edge_config.json").exists();
        let shard = if exists {
            EdgeShard::load(dir, None).map_err(|e| edge_error(dir, e))?
        } else {
            let config = EdgeConfigBuilder::new()
                .on_disk_payload(false)
                .vector(
                    DEFAULT_VECTOR_NAME,
                    EdgeVectorParamsBuilder::new(dimension, Distance::Cosine).build(),
                )
                .build();
            let shard = EdgeShard::new(dir, config).map_err(|e| edge_error(dir, e))?;
            for key in INDEXED_KEYS {
                let field_name: JsonPath = key
                    .parse()
                    .map_err(|_| edge_error(dir, format!("bad payload key {key:?}")))?;
                let operation = UpdateOperation::FieldIndexOperation(
                    FieldIndexOperations::CreateIndex(CreateIndex {
                        field_name,
                        field_schema: Some(PayloadFieldSchema::FieldType(
                            PayloadSchemaType::Keyword,
                        )),
                    }),
                );
                shard.update(operation).map_err(|e| edge_error(dir, e))?;
            }
            shard
        };
        let stored = shard
            .config()
            .vectors
            .get(DEFAULT_VECTOR_NAME)
            .map(|v| v.size)
            .ok_or_else(|| edge_error(dir, "the store has no dense vector"))?;
        if stored != dimension {
            return Err(edge_error(
                dir,
                format!("it holds {stored}-dimensional vectors, not {dimension}"),
            ));
        }
        Ok(EdgeStore {
            shard: std::mem::ManuallyDrop::new(shard),
            dir: dir.to_path_buf(),
            dimension,
        })
    }

    /// The vectors' dimension.
    pub fn dimension(&self) -> usize {
        self.dimension
    }

    /// Adds or replaces chunks with their vectors.
    pub fn upsert_blocking(&self, chunks: &[Chunk], vectors: &[Vec<f32>]) -> Result<()> {
        self.check_vectors(chunks.len(), vectors)?;
        if chunks.is_empty() {
            return Ok(());
        }
        let points = chunks
            .iter()
            .zip(vectors)
            .map(|(chunk, vector)| point(&chunk.id, chunk, None, vector))
            .collect();
        self.upsert_points(points)
    }

    /// Adds or replaces units of chunks with their vectors.
    pub fn upsert_units_blocking(&self, units: &[Unit<'_>], vectors: &[Vec<f32>]) -> Result<()> {
        self.check_vectors(units.len(), vectors)?;
        if units.is_empty() {
            return Ok(());
        }
        let points = units
            .iter()
            .zip(vectors)
            .map(|(unit, vector)| {
                let key = format!("{}#{}", unit.chunk.id, unit.n);
                point(&key, unit.chunk, Some(unit.text), vector)
            })
            .collect();
        self.upsert_points(points)
    }

    fn check_vectors(&self, n: usize, vectors: &[Vec<f32>]) -> Result<()> {
        if n != vectors.len() {
            return Err(Error::InvalidInput(format!(
                "{n} items but {} vectors",
                vectors.len()
            )));
        }
        if let Some(bad) = vectors.iter().find(|v| v.len() != self.dimension) {
            return Err(Error::InvalidInput(format!(
                "a {}-dimensional vector for a {}-dimensional store",
                bad.len(),
                self.dimension
            )));
        }
        Ok(())
    }

    fn upsert_points(&self, points: Vec<qdrant_edge::PointStructPersisted>) -> Result<()> {
        let operation = UpdateOperation::PointOperation(PointOperations::UpsertPoints(
            qdrant_edge::PointInsertOperations::PointsList(points),
        ));
        self.shard
            .update(operation)
            .map_err(|e| edge_error(&self.dir, e))
    }

    /// Removes the chunks with these ids, and their units (unknown ids are
    /// ignored).
    pub fn delete_blocking(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let filter = serde_json::from_value(json!({
            "must": [{"key": "chunk_id", "match": {"any": ids}}]
        }))
        .map_err(|e| edge_error(&self.dir, e))?;
        let operation =
            UpdateOperation::PointOperation(PointOperations::DeletePointsByFilter(filter));
        self.shard
            .update(operation)
            .map_err(|e| edge_error(&self.dir, e))
    }

    /// The `k` nearest chunks to `query` among those `filter` accepts; a
    /// chunk is as near as its nearest vector (its own or a unit's).
    pub fn search_blocking(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
    ) -> Result<Vec<ScoredChunk>> {
        if query.len() != self.dimension {
            return Err(Error::InvalidInput(format!(
                "a {}-dimensional query for a {}-dimensional store",
                query.len(),
                self.dimension
            )));
        }
        let filter = filter
            .filter(|f| !f.is_empty())
            .map(|f| {
                serde_json::from_value(to_qdrant_filter(f))
                    .map_err(|e| Error::InvalidInput(format!("filter: {e}")))
            })
            .transpose()?;
        let request = SearchRequest {
            query: QueryEnum::Nearest(NamedQuery::default_dense(query.to_vec())),
            filter,
            params: None,
            limit: k * UNIT_FANOUT,
            offset: 0,
            with_payload: Some(WithPayloadInterface::Bool(true)),
            with_vector: None,
            score_threshold: None,
        };
        let points = self
            .shard
            .search(request)
            .map_err(|e| edge_error(&self.dir, e))?;
        // Points come nearest first: keep each chunk's first.
        let mut seen = std::collections::HashSet::new();
        Ok(points
            .into_iter()
            .filter_map(|p| {
                let payload = p.payload?.0;
                Some(ScoredChunk {
                    chunk: chunk_from_payload(payload.into_iter().collect())?,
                    score: p.score,
                })
            })
            .filter(|hit| seen.insert(hit.chunk.id.clone()))
            .take(k)
            .collect())
    }

    /// Points stored (chunks and units).
    pub fn count_blocking(&self) -> usize {
        self.shard.info().points_count
    }

    /// Unit points stored.
    pub fn count_units_blocking(&self) -> Result<usize> {
        let filter = serde_json::from_value(json!({
            "must_not": [{"is_empty": {"key": UNIT_KEY}}]
        }))
        .map_err(|e| edge_error(&self.dir, e))?;
        self.shard
            .count(qdrant_edge::CountRequest {
                filter: Some(filter),
                exact: true,
            })
            .map_err(|e| edge_error(&self.dir, e))
    }

    /// Every stored point's chunk id: (the chunks' own points, the units'
    /// chunks), one entry per point.
    pub fn ids_blocking(&self) -> Result<(Vec<String>, Vec<String>)> {
        let (mut chunks, mut units) = (Vec::new(), Vec::new());
        let fields = ["chunk_id", UNIT_KEY]
            .iter()
            .map(|key| {
                key.parse::<JsonPath>()
                    .map_err(|_| edge_error(&self.dir, format!("bad payload key {key:?}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let mut offset = None;
        loop {
            let request = ScrollRequest {
                offset,
                limit: Some(1024),
                filter: None,
                with_payload: Some(WithPayloadInterface::Fields(fields.clone())),
                with_vector: WithVector::Bool(false),
                order_by: None,
            };
            let (records, next) = self
                .shard
                .scroll(request)
                .map_err(|e| edge_error(&self.dir, e))?;
            for record in records {
                let payload = record.payload.map(|p| p.0).unwrap_or_default();
                let id = payload
                    .get("chunk_id")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                if payload.contains_key(UNIT_KEY) {
                    units.push(id);
                } else {
                    chunks.push(id);
                }
            }
            match next {
                Some(next) => offset = Some(next),
                None => return Ok((chunks, units)),
            }
        }
    }

    /// Builds the HNSW index and merges segments (blocking; seconds for
    /// 100k points). Returns whether anything was done.
    pub fn optimize(&self) -> Result<bool> {
        self.shard.optimize().map_err(|e| edge_error(&self.dir, e))
    }

    /// Writes buffered changes to disk. The engine panics when it cannot
    /// (a full disk); that becomes an error here.
    pub fn flush(&self) -> Result<()> {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.shard.flush())).map_err(
            |_| {
                edge_error(
                    &self.dir,
                    "its files could not be written (is the disk full?)",
                )
            },
        )
    }
}

impl Drop for EdgeStore {
    fn drop(&mut self) {
        // SAFETY: `shard` is taken once, here, and not used after.
        let shard = unsafe { std::mem::ManuallyDrop::take(&mut self.shard) };
        // Its last flush failing (a full disk) must not take the process
        // down: what was committed is in its log.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(shard)));
    }
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

/// Rebuilds a chunk from the payload [`EdgeStore::upsert_blocking`] stored.
/// A point: `key` names it, `chunk` is its payload, with `unit` when the
/// vector is a unit's.
fn point(
    key: &str,
    chunk: &Chunk,
    unit: Option<&str>,
    vector: &[f32],
) -> qdrant_edge::PointStructPersisted {
    let mut payload = chunk.metadata.clone();
    payload.insert("chunk_id".into(), chunk.id.clone().into());
    payload.insert("doc_id".into(), chunk.doc_id.clone().into());
    payload.insert("ordinal".into(), chunk.ordinal.into());
    payload.insert("text".into(), chunk.text.clone().into());
    if let Some(unit) = unit {
        payload.insert(UNIT_KEY.into(), unit.into());
    }
    PointStruct::new(
        PointId::Uuid(point_id(key)),
        Vectors::from(vector.to_vec()),
        Value::Object(payload),
    )
    .into()
}

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

#[async_trait]
impl VectorStore for EdgeStore {
    async fn upsert(&self, chunks: &[Chunk], vectors: &[Vec<f32>]) -> kb_core::Result<()> {
        Ok(self.upsert_blocking(chunks, vectors)?)
    }

    async fn delete(&self, ids: &[String]) -> kb_core::Result<()> {
        Ok(self.delete_blocking(ids)?)
    }

    async fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
    ) -> kb_core::Result<Vec<ScoredChunk>> {
        Ok(self.search_blocking(query, k, filter)?)
    }

    async fn count(&self) -> kb_core::Result<usize> {
        Ok(self.count_blocking())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[test]
    fn upsert_search_filter_delete_and_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let chunks = vec![
            Chunk::new("a", 0, "alpha").with_metadata("source", "a.md"),
            Chunk::new("b", 0, "beta").with_metadata("source", "b.md"),
            Chunk::new("c", 0, "gamma").with_metadata("source", "c.md"),
        ];
        let vectors = vec![
            unit(&[1.0, 0.0, 0.0]),
            unit(&[0.9, 0.1, 0.0]),
            unit(&[0.0, 0.0, 1.0]),
        ];
        {
            let store = EdgeStore::open(dir.path(), 3).expect("create");
            store.upsert_blocking(&chunks, &vectors).expect("upsert");
            store
                .upsert_blocking(&chunks, &vectors)
                .expect("upsert again");
            assert_eq!(store.count_blocking(), 3);
            store.flush().expect("flush");
        }
        let store = EdgeStore::open(dir.path(), 3).expect("reopen");
        assert_eq!(store.count_blocking(), 3);
        let hits = store
            .search_blocking(&unit(&[1.0, 0.0, 0.0]), 2, None)
            .expect("search");
        assert_eq!(hits[0].chunk, chunks[0]);
        assert_eq!(hits[1].chunk.doc_id, "b");
        let filter: Filter = "source=c.md|b.md".parse().expect("filter");
        let hits = store
            .search_blocking(&unit(&[1.0, 0.0, 0.0]), 3, Some(&filter))
            .expect("search");
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].chunk.doc_id, "b");
        let filter: Filter = "source!=a.md".parse().expect("filter");
        let hits = store
            .search_blocking(&unit(&[1.0, 0.0, 0.0]), 3, Some(&filter))
            .expect("search");
        assert!(hits.iter().all(|h| h.chunk.doc_id != "a"));
        store
            .delete_blocking(&[chunks[0].id.clone()])
            .expect("delete");
        assert_eq!(store.count_blocking(), 2);
        drop(store);
        let err = EdgeStore::open(dir.path(), 4).unwrap_err();
        assert!(err.to_string().contains("3-dimensional"), "{err}");
    }
}
