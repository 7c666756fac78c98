//! [`EdgeStore`]: the embedded vector store, the Qdrant engine in process
//! (`qdrant-edge`): write-ahead log, payload indexes, HNSW. Its calls block
//! (file I/O), so the [`VectorStore`] methods run them on tokio's blocking
//! threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use kb_core::{Chunk, Filter, ScoredChunk, StoredIds, Unit, VectorStore};
use qdrant_edge::{
    CreateIndex, DEFAULT_VECTOR_NAME, Distance, EdgeConfigBuilder, EdgeShard,
    EdgeVectorParamsBuilder, FieldIndexOperations, JsonPath, NamedQuery, PayloadFieldSchema,
    PayloadSchemaType, PointId, PointOperations, PointStruct, QueryEnum, ScrollRequest,
    SearchRequest, UpdateOperation, Vectors, WithPayloadInterface, WithVector,
};
use serde_json::{Value, json};

use super::payload::{
    INDEXED_KEYS, UNIT_FANOUT, UNIT_KEY, check_query, check_vectors, chunk_from_payload,
    first_per_chunk, payload_of, point_id, to_qdrant_filter,
};
use crate::blocking::run_blocking;
use crate::error::{Error, Result};

/// A vector store in a local directory, holding each chunk's vector and the
/// chunk itself as payload, and optionally vectors of the chunk's
/// [`Unit`]s, which lead to the same chunk.
///
/// Cosine similarity; filtered searches on `source` and `doc_id` use payload
/// indexes. Call [`optimize`](Self::optimize) after a large ingest so that the
/// HNSW graph is built (searches are exact until then).
#[derive(Clone)]
pub struct EdgeStore {
    shard: Arc<Shard>,
}

/// The open engine, shared with the blocking threads that call it.
struct Shard {
    /// Dropped by hand: it flushes as it drops and panics when it cannot.
    shard: std::mem::ManuallyDrop<EdgeShard>,
    dir: PathBuf,
    dimension: usize,
}

impl std::fmt::Debug for EdgeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeStore")
            .field("dir", &self.shard.dir)
            .field("dimension", &self.shard.dimension)
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
            shard: Arc::new(Shard {
                shard: std::mem::ManuallyDrop::new(shard),
                dir: dir.to_path_buf(),
                dimension,
            }),
        })
    }

    /// Writes points (key, chunk, unit text) with their vectors.
    async fn write(
        &self,
        keyed: Vec<(String, &Chunk, Option<&str>)>,
        vectors: &[Vec<f32>],
    ) -> kb_core::Result<()> {
        check_vectors(keyed.len(), vectors, self.shard.dimension)?;
        if keyed.is_empty() {
            return Ok(());
        }
        let points: Vec<_> = keyed
            .iter()
            .zip(vectors)
            .map(|((key, chunk, unit), vector)| point(key, chunk, *unit, vector))
            .collect();
        self.blocking(move |shard| shard.upsert_points(points))
            .await
    }

    /// Runs `work` on the shard on one of tokio's blocking threads.
    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Shard) -> Result<T> + Send + 'static,
    ) -> kb_core::Result<T> {
        let shard = Arc::clone(&self.shard);
        Ok(run_blocking("a vector store task", move || work(&shard)).await?)
    }
}

impl Shard {
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
    fn delete(&self, ids: &[String]) -> Result<()> {
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
    fn search(&self, query: &[f32], k: usize, filter: Option<&Filter>) -> Result<Vec<ScoredChunk>> {
        check_query(query, self.dimension)?;
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
        let hits = points.into_iter().filter_map(|p| {
            let payload = p.payload?.0;
            Some(ScoredChunk {
                chunk: chunk_from_payload(payload.into_iter().collect())?,
                score: p.score,
            })
        });
        Ok(first_per_chunk(hits, k))
    }

    /// Points stored (chunks and units).
    fn count(&self) -> usize {
        self.shard.info().points_count
    }

    /// Unit points stored.
    fn count_units(&self) -> Result<usize> {
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
    fn ids(&self) -> Result<StoredIds> {
        let mut ids = StoredIds::default();
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
                    ids.units.push(id);
                } else {
                    ids.chunks.push(id);
                }
            }
            match next {
                Some(next) => offset = Some(next),
                None => return Ok(ids),
            }
        }
    }

    /// Builds the HNSW index and merges segments (blocking; seconds for
    /// 100k points). Returns whether anything was done.
    fn optimize(&self) -> Result<bool> {
        self.shard.optimize().map_err(|e| edge_error(&self.dir, e))
    }

    /// Writes buffered changes to disk. The engine panics when it cannot
    /// (a full disk); that becomes an error here.
    fn flush(&self) -> Result<()> {
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

impl Drop for Shard {
    fn drop(&mut self) {
        // SAFETY: `shard` is taken once, here, and not used after.
        let shard = unsafe { std::mem::ManuallyDrop::take(&mut self.shard) };
        // Its last flush failing (a full disk) must not take the process
        // down: what was committed is in its log.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(shard)));
    }
}

/// A point: `key` names it, `chunk` is its payload, with `unit` when the
/// vector is a unit's.
fn point(
    key: &str,
    chunk: &Chunk,
    unit: Option<&str>,
    vector: &[f32],
) -> qdrant_edge::PointStructPersisted {
    PointStruct::new(
        PointId::Uuid(point_id(key)),
        Vectors::from(vector.to_vec()),
        Value::Object(payload_of(chunk, unit)),
    )
    .into()
}

#[async_trait]
impl VectorStore for EdgeStore {
    fn dimension(&self) -> usize {
        self.shard.dimension
    }

    async fn upsert(&self, chunks: &[Chunk], vectors: &[Vec<f32>]) -> kb_core::Result<()> {
        let keyed = chunks.iter().map(|c| (c.id.clone(), c, None)).collect();
        self.write(keyed, vectors).await
    }

    async fn upsert_units(&self, units: &[Unit<'_>], vectors: &[Vec<f32>]) -> kb_core::Result<()> {
        let keyed = units
            .iter()
            .map(|u| (format!("{}#{}", u.chunk.id, u.n), u.chunk, Some(u.text)))
            .collect();
        self.write(keyed, vectors).await
    }

    async fn delete(&self, ids: &[String]) -> kb_core::Result<()> {
        let ids = ids.to_vec();
        self.blocking(move |shard| shard.delete(&ids)).await
    }

    async fn search(
        &self,
        query: &[f32],
        k: usize,
        filter: Option<&Filter>,
    ) -> kb_core::Result<Vec<ScoredChunk>> {
        let (query, filter) = (query.to_vec(), filter.cloned());
        self.blocking(move |shard| shard.search(&query, k, filter.as_ref()))
            .await
    }

    async fn ids(&self) -> kb_core::Result<StoredIds> {
        self.blocking(Shard::ids).await
    }

    async fn counts(&self) -> kb_core::Result<(usize, usize)> {
        self.blocking(|shard| {
            let units = shard.count_units()?;
            Ok((shard.count().saturating_sub(units), units))
        })
        .await
    }

    async fn flush(&self) -> kb_core::Result<()> {
        self.blocking(Shard::flush).await
    }

    async fn optimize(&self) -> kb_core::Result<bool> {
        self.blocking(Shard::optimize).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.iter().map(|x| x / n).collect()
    }

    #[tokio::test]
    async fn upsert_search_filter_delete_and_reopen() {
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
            store.upsert(&chunks, &vectors).await.expect("upsert");
            store.upsert(&chunks, &vectors).await.expect("upsert again");
            assert_eq!(store.counts().await.expect("count"), (3, 0));
            store.flush().await.expect("flush");
        }
        let store = EdgeStore::open(dir.path(), 3).expect("reopen");
        assert_eq!(store.counts().await.expect("count"), (3, 0));
        let hits = store
            .search(&unit(&[1.0, 0.0, 0.0]), 2, None)
            .await
            .expect("search");
        assert_eq!(hits[0].chunk, chunks[0]);
        assert_eq!(hits[1].chunk.doc_id, "b");
        let filter: Filter = "source=c.md|b.md".parse().expect("filter");
        let hits = store
            .search(&unit(&[1.0, 0.0, 0.0]), 3, Some(&filter))
            .await
            .expect("search");
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].chunk.doc_id, "b");
        let filter: Filter = "source!=a.md".parse().expect("filter");
        let hits = store
            .search(&unit(&[1.0, 0.0, 0.0]), 3, Some(&filter))
            .await
            .expect("search");
        assert!(hits.iter().all(|h| h.chunk.doc_id != "a"));
        // A unit of "c" near the query leads to "c", once, with its text.
        let near = Unit {
            chunk: &chunks[2],
            n: 0,
            text: "gamma's first sentence",
        };
        store
            .upsert_units(&[near], &[unit(&[1.0, 0.05, 0.0])])
            .await
            .expect("units");
        assert_eq!(store.counts().await.expect("count"), (3, 1));
        assert_eq!(
            store.ids().await.expect("ids").units,
            [chunks[2].id.clone()]
        );
        let hits = store
            .search(&unit(&[1.0, 0.0, 0.0]), 3, None)
            .await
            .expect("search");
        assert_eq!(hits.len(), 3);
        assert_eq!(hits[1].chunk.id, chunks[2].id);
        assert_eq!(hits[1].chunk.metadata[UNIT_KEY], "gamma's first sentence");
        store
            .delete(&[chunks[0].id.clone(), chunks[2].id.clone()])
            .await
            .expect("delete");
        assert_eq!(store.counts().await.expect("count"), (1, 0));
        drop(store);
        let err = EdgeStore::open(dir.path(), 4).unwrap_err();
        assert!(err.to_string().contains("3-dimensional"), "{err}");
    }
}
