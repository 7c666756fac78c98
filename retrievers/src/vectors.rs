//! [`EdgeStore`]: the embedded vector store, the Qdrant engine in process
//! (`qdrant-edge`): write-ahead log, payload indexes, HNSW.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use kb_core::{Chunk, Condition, Filter, Metadata, ScoredChunk, VectorStore};
use qdrant_edge::{
    CreateIndex, DEFAULT_VECTOR_NAME, Distance, EdgeConfigBuilder, EdgeShard,
    EdgeVectorParamsBuilder, FieldIndexOperations, JsonPath, NamedQuery, PayloadFieldSchema,
    PayloadSchemaType, PointId, PointOperations, PointStruct, QueryEnum, SearchRequest,
    UpdateOperation, Vectors, WithPayloadInterface,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The namespace of the UUIDv5 point ids derived from chunk ids.
const POINT_NAMESPACE: Uuid = Uuid::from_u128(0x6b62_2d63_6875_6e6b_2d69_6473_2d76_3031);

/// Payload keys with a keyword index: filtering on them is fast.
pub const INDEXED_KEYS: [&str; 2] = ["source", "doc_id"];

/// The point id of a chunk: the UUIDv5 of its id.
pub fn point_id(chunk_id: &str) -> Uuid {
    Uuid::new_v5(&POINT_NAMESPACE, chunk_id.as_bytes())
}

/// A vector store in a local directory, holding each chunk's vector and the
/// chunk itself as payload.
///
/// Cosine similarity; filtered searches on `source` and `doc_id` use payload
/// indexes. Call [`optimize`](Self::optimize) after a large ingest so that the
/// HNSW graph is built (searches are exact until then).
pub struct EdgeStore {
    shard: EdgeShard,
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
            shard,
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
        if chunks.len() != vectors.len() {
            return Err(Error::InvalidInput(format!(
                "{} chunks but {} vectors",
                chunks.len(),
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
        if chunks.is_empty() {
            return Ok(());
        }
        let points = chunks
            .iter()
            .zip(vectors)
            .map(|(chunk, vector)| {
                let mut payload = chunk.metadata.clone();
                payload.insert("chunk_id".into(), chunk.id.clone().into());
                payload.insert("doc_id".into(), chunk.doc_id.clone().into());
                payload.insert("ordinal".into(), chunk.ordinal.into());
                payload.insert("text".into(), chunk.text.clone().into());
                PointStruct::new(
                    PointId::Uuid(point_id(&chunk.id)),
                    Vectors::from(vector.clone()),
                    Value::Object(payload),
                )
                .into()
            })
            .collect();
        let operation = UpdateOperation::PointOperation(PointOperations::UpsertPoints(
            qdrant_edge::PointInsertOperations::PointsList(points),
        ));
        self.shard
            .update(operation)
            .map_err(|e| edge_error(&self.dir, e))
    }

    /// Removes the chunks with these ids (unknown ids are ignored).
    pub fn delete_blocking(&self, ids: &[String]) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let ids = ids.iter().map(|id| PointId::Uuid(point_id(id))).collect();
        let operation = UpdateOperation::PointOperation(PointOperations::DeletePoints { ids });
        self.shard
            .update(operation)
            .map_err(|e| edge_error(&self.dir, e))
    }

    /// The `k` nearest chunks to `query` among those `filter` accepts.
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
            limit: k,
            offset: 0,
            with_payload: Some(WithPayloadInterface::Bool(true)),
            with_vector: None,
            score_threshold: None,
        };
        let points = self
            .shard
            .search(request)
            .map_err(|e| edge_error(&self.dir, e))?;
        Ok(points
            .into_iter()
            .filter_map(|p| {
                let payload = p.payload?.0;
                Some(ScoredChunk {
                    chunk: chunk_from_payload(payload.into_iter().collect())?,
                    score: p.score,
                })
            })
            .collect())
    }

    /// Points stored.
    pub fn count_blocking(&self) -> usize {
        self.shard.info().points_count
    }

    /// Builds the HNSW index and merges segments (blocking; seconds for
    /// 100k points). Returns whether anything was done.
    pub fn optimize(&self) -> Result<bool> {
        self.shard.optimize().map_err(|e| edge_error(&self.dir, e))
    }

    /// Writes buffered changes to disk.
    pub fn flush(&self) {
        self.shard.flush();
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
pub(crate) fn chunk_from_payload(mut payload: Metadata) -> Option<Chunk> {
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
            store.flush();
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
