//! [`ServerManifest`]: the manifest on the Qdrant server, in a collection
//! of payload-only points beside the vectors' collection, so that any
//! machine can search the knowledge base or ingest into it incrementally.
//!
//! Points (ids are UUIDv5s of their keys): `file:SOURCE` (a
//! [`FileRecord`] with its chunk ids and term pairs),
//! `pending:CHUNK_ID` (one per chunk id a change touched), and `lease` (the
//! writer that holds the knowledge base, until when).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use qdrant_client::qdrant::{
    self, CountPointsBuilder, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder,
    DeleteCollectionBuilder, DeletePointsBuilder, FieldType, GetPointsBuilder, PointStruct,
    ScrollPointsBuilder, SetPayloadPointsBuilder, UpsertPointsBuilder, WriteOrdering,
    WriteOrderingType,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

use super::record::FileRecord;
use super::store::ManifestStore;
use crate::error::{Error, Result};
use crate::glossary::TermPair;
use crate::store::payload::point_id;
use crate::store::qdrant::{QdrantOptions, Setup, already_exists, server_error, to_json};

/// Points per write request.
const BATCH: usize = 256;

/// The manifest in a collection of its own on the server.
#[derive(Clone)]
pub(crate) struct ServerManifest {
    client: Qdrant,
    collection: String,
    location: String,
    setup: Setup,
    lease: Duration,
    /// Copies of its shard, and how many acknowledge a write (a cluster's
    /// settings for the data, so the manifest survives what the data does).
    replicas: Option<u32>,
    write_consistency: Option<u32>,
    ready: std::sync::Arc<OnceCell<()>>,
}

impl std::fmt::Debug for ServerManifest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerManifest")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

fn millis_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn kind(kind: &str) -> qdrant::Filter {
    qdrant::Filter::must([qdrant::Condition::matches("kind", kind.to_string())])
}

fn text(payload: &serde_json::Map<String, Value>, key: &str) -> String {
    payload
        .get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn number(payload: &serde_json::Map<String, Value>, key: &str) -> u64 {
    payload.get(key).and_then(Value::as_u64).unwrap_or(0)
}

fn strings(payload: &serde_json::Map<String, Value>, key: &str) -> Vec<String> {
    payload
        .get(key)
        .and_then(Value::as_array)
        .map(|values| {
            values
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn pairs(payload: &serde_json::Map<String, Value>) -> Vec<TermPair> {
    payload
        .get("terms")
        .and_then(Value::as_array)
        .map(|values| {
            values
                .iter()
                .filter_map(|pair| {
                    let pair = pair.as_array()?;
                    Some(TermPair {
                        latin: pair.first()?.as_str()?.to_string(),
                        cjk: pair.get(1)?.as_str()?.to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn record(payload: &serde_json::Map<String, Value>, with_ids: bool) -> FileRecord {
    FileRecord {
        source: text(payload, "source"),
        hash: text(payload, "hash"),
        size: number(payload, "size"),
        mtime_ns: number(payload, "mtime_ns"),
        title: text(payload, "title"),
        documents: number(payload, "documents") as usize,
        chunk_ids: if with_ids {
            strings(payload, "chunk_ids")
        } else {
            vec![String::new(); number(payload, "chunks") as usize]
        },
        ingested_at: number(payload, "ingested_at"),
    }
}

fn point(key: &str, payload: Value) -> Result<PointStruct> {
    let payload = Payload::try_from(payload)
        .map_err(|e| Error::Index(format!("a manifest entry for {key:?}: {e}")))?;
    Ok(PointStruct::new(
        point_id(key).to_string(),
        HashMap::<String, qdrant::Vector>::new(),
        payload,
    ))
}

fn file_point(file: &FileRecord, terms: &[TermPair]) -> Result<PointStruct> {
    let terms: Vec<[&str; 2]> = terms
        .iter()
        .map(|t| [t.latin.as_str(), t.cjk.as_str()])
        .collect();
    point(
        &format!("file:{}", file.source),
        json!({
            "kind": "file",
            "source": file.source,
            "hash": file.hash,
            "size": file.size,
            "mtime_ns": file.mtime_ns,
            "title": file.title,
            "documents": file.documents,
            "ingested_at": file.ingested_at,
            "chunk_ids": file.chunk_ids,
            "chunks": file.chunk_ids.len(),
            "terms": terms,
        }),
    )
}

/// Who this process is, for the message another writer gets.
fn whoami() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unnamed host".into());
    format!("kb on {host} (pid {})", std::process::id())
}

impl ServerManifest {
    /// The manifest of the knowledge base in `options`' collection, in the
    /// collection `NAME-manifest`; `location` names the knowledge base in
    /// messages.
    pub(crate) fn new(
        client: Qdrant,
        options: &QdrantOptions,
        location: String,
        setup: Setup,
    ) -> Self {
        ServerManifest {
            client,
            collection: format!("{}-manifest", options.collection),
            location,
            setup,
            lease: options.lease,
            replicas: options.replicas,
            write_consistency: options.write_consistency,
            ready: Default::default(),
        }
    }

    fn server(&self, what: &'static str) -> impl FnOnce(QdrantError) -> Error {
        server_error(self.location.clone(), what)
    }

    /// How long a writer's lease lasts unless renewed.
    pub(crate) fn lease_time(&self) -> Duration {
        self.lease
    }

    /// Sets the collection up once, as the vectors' collection is.
    async fn ready(&self) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                let exists = self
                    .client
                    .collection_exists(&self.collection)
                    .await
                    .map_err(self.server("checking the manifest"))?;
                match (exists, self.setup) {
                    (true, Setup::Recreate) => {
                        self.client
                            .delete_collection(DeleteCollectionBuilder::new(&self.collection))
                            .await
                            .map_err(self.server("dropping the manifest"))?;
                        self.create().await
                    }
                    (true, _) => Ok(()),
                    (false, Setup::Existing) => Err(Error::Index(format!(
                        "{} has no manifest: nothing was ingested into it yet; create it \
                         with `kb ingest PATH...`",
                        self.location
                    ))),
                    (false, _) => self.create().await,
                }
            })
            .await
            .map(|_| ())
    }

    async fn create(&self) -> Result<()> {
        let mut request = CreateCollectionBuilder::new(&self.collection);
        if let Some(replicas) = self.replicas {
            request = request.replication_factor(replicas);
        }
        if let Some(factor) = self.write_consistency {
            request = request.write_consistency_factor(factor);
        }
        match self.client.create_collection(request).await {
            Ok(_) => {}
            Err(e) if already_exists(&e) => return Ok(()),
            Err(e) => return Err(self.server("creating the manifest")(e)),
        }
        self.client
            .create_field_index(
                CreateFieldIndexCollectionBuilder::new(
                    &self.collection,
                    "kind",
                    FieldType::Keyword,
                )
                .wait(true),
            )
            .await
            .map_err(self.server("indexing the manifest"))?;
        Ok(())
    }

    /// Writes points, each batch acknowledged, through a leader (so that
    /// changes apply in the order they were sent, and a claim is decided in
    /// one place).
    async fn write(&self, points: Vec<PointStruct>) -> Result<()> {
        for batch in points.chunks(BATCH) {
            self.client
                .upsert_points(
                    UpsertPointsBuilder::new(&self.collection, batch.to_vec())
                        .wait(true)
                        .ordering(ordered()),
                )
                .await
                .map_err(self.server("writing the manifest"))?;
        }
        Ok(())
    }

    async fn delete(
        &self,
        selector: impl Into<qdrant::points_selector::PointsSelectorOneOf>,
    ) -> Result<()> {
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(selector)
                    .wait(true)
                    .ordering(ordered()),
            )
            .await
            .map_err(self.server("writing the manifest"))?;
        Ok(())
    }

    /// The payload of the point `key`, if there is one.
    async fn get(&self, key: &str) -> Result<Option<serde_json::Map<String, Value>>> {
        self.ready().await?;
        let found = self
            .client
            .get_points(
                GetPointsBuilder::new(&self.collection, vec![point_id(key).to_string().into()])
                    .with_payload(true),
            )
            .await
            .map_err(self.server("reading the manifest"))?;
        Ok(found.result.into_iter().next().map(|p| to_json(p.payload)))
    }

    /// The payloads (only `fields`) of every point of `of` kind.
    async fn scroll(
        &self,
        of: &str,
        fields: &[&str],
    ) -> Result<Vec<serde_json::Map<String, Value>>> {
        self.ready().await?;
        let mut payloads = Vec::new();
        let mut offset: Option<qdrant::PointId> = None;
        loop {
            let mut request = ScrollPointsBuilder::new(&self.collection)
                .filter(kind(of))
                .limit(1024)
                .with_payload(qdrant::PayloadIncludeSelector::new(
                    fields
                        .iter()
                        .map(|f| f.to_string())
                        .collect::<Vec<String>>(),
                ))
                .with_vectors(false);
            if let Some(offset) = offset.take() {
                request = request.offset(offset);
            }
            let page = self
                .client
                .scroll(request)
                .await
                .map_err(self.server("reading the manifest"))?;
            payloads.extend(page.result.into_iter().map(|p| to_json(p.payload)));
            match page.next_page_offset {
                Some(next) => offset = Some(next),
                None => return Ok(payloads),
            }
        }
    }

    /// Claims the knowledge base for `holder` until the lease runs out
    /// (renewing it when `holder` has it already). Another live holder's
    /// claim is refused, saying who holds it.
    pub(crate) async fn claim(&self, holder: &str) -> Result<()> {
        self.ready().await?;
        let now = millis_now();
        let until = now + self.lease.as_millis() as i64;
        let lease = point(
            "lease",
            json!({"kind": "lease", "holder": holder, "who": whoami(), "until": until}),
        )?;
        // Written only where the lease is free (absent, run out) or ours:
        // the server applies writes to a point one at a time, so of two
        // writers claiming at once exactly one gets it.
        let free_or_ours = qdrant::Filter::should([
            qdrant::Condition::range(
                "until",
                qdrant::Range {
                    lt: Some(now as f64),
                    ..Default::default()
                },
            ),
            qdrant::Condition::matches("holder", holder.to_string()),
        ]);
        self.client
            .upsert_points(
                UpsertPointsBuilder::new(&self.collection, vec![lease])
                    .update_filter(free_or_ours)
                    .wait(true)
                    .ordering(ordered()),
            )
            .await
            .map_err(self.server("claiming the knowledge base"))?;
        let current = self.get("lease").await?.unwrap_or_default();
        if text(&current, "holder") == holder {
            return Ok(());
        }
        let left = (current.get("until").and_then(Value::as_i64).unwrap_or(now) - now).max(0);
        Err(Error::Busy(format!(
            "{} is being changed by {}; try again when it finishes (if that writer died, \
             its claim runs out within {} s)",
            self.location,
            text(&current, "who"),
            (left + 999) / 1000
        )))
    }

    /// Gives up `holder`'s claim, if it still has it.
    pub(crate) async fn release(&self, holder: &str) -> Result<()> {
        self.delete(qdrant::Filter::must([
            qdrant::Condition::matches("kind", "lease".to_string()),
            qdrant::Condition::matches("holder", holder.to_string()),
        ]))
        .await
    }
}

/// Writes through a leader: Qdrant's `medium` ordering, which stays
/// available when a node dies (a new leader is chosen) where `strong`
/// waits for the old one.
fn ordered() -> WriteOrdering {
    WriteOrdering {
        r#type: WriteOrderingType::Medium as i32,
    }
}

#[async_trait]
impl ManifestStore for ServerManifest {
    async fn file(&self, source: &str) -> Result<Option<FileRecord>> {
        Ok(self
            .get(&format!("file:{source}"))
            .await?
            .map(|p| record(&p, true)))
    }

    async fn files(&self) -> Result<Vec<FileRecord>> {
        let fields = [
            "source",
            "hash",
            "size",
            "mtime_ns",
            "title",
            "documents",
            "ingested_at",
            "chunks",
        ];
        let mut files: Vec<FileRecord> = self
            .scroll("file", &fields)
            .await?
            .iter()
            .map(|p| record(p, false))
            .collect();
        files.sort_by(|a, b| a.source.cmp(&b.source));
        Ok(files)
    }

    async fn chunk_ids_by_source(&self) -> Result<BTreeMap<String, Vec<String>>> {
        Ok(self
            .scroll("file", &["source", "chunk_ids"])
            .await?
            .iter()
            .map(|p| {
                let mut ids = strings(p, "chunk_ids");
                ids.sort();
                (text(p, "source"), ids)
            })
            .collect())
    }

    async fn all_chunk_ids(&self) -> Result<Vec<String>> {
        Ok(self
            .scroll("file", &["chunk_ids"])
            .await?
            .iter()
            .flat_map(|p| strings(p, "chunk_ids"))
            .collect())
    }

    async fn chunk_count(&self) -> Result<usize> {
        Ok(self
            .scroll("file", &["chunks"])
            .await?
            .iter()
            .map(|p| number(p, "chunks") as usize)
            .sum())
    }

    async fn touch(&self, source: &str, size: u64, mtime_ns: u64) -> Result<()> {
        self.ready().await?;
        let payload = Payload::try_from(json!({"size": size, "mtime_ns": mtime_ns}))
            .map_err(|e| Error::Index(format!("a manifest entry for {source:?}: {e}")))?;
        self.client
            .set_payload(
                SetPayloadPointsBuilder::new(&self.collection, payload)
                    .points_selector(vec![qdrant::PointId::from(
                        point_id(&format!("file:{source}")).to_string(),
                    )])
                    .wait(true)
                    .ordering(ordered()),
            )
            .await
            .map_err(self.server("writing the manifest"))?;
        Ok(())
    }

    async fn begin_change(&self, sources: &[String], touched: &[String]) -> Result<()> {
        self.ready().await?;
        let pending = touched
            .iter()
            .map(|id| {
                point(
                    &format!("pending:{id}"),
                    json!({"kind": "pending", "id": id}),
                )
            })
            .collect::<Result<Vec<_>>>()?;
        // Pending ids first: a crash after them leaves the files recorded
        // and nothing to undo; a crash after the files' removal, files to
        // ingest again.
        self.write(pending).await?;
        for batch in sources.chunks(BATCH) {
            let ids: Vec<qdrant::PointId> = batch
                .iter()
                .map(|s| point_id(&format!("file:{s}")).to_string().into())
                .collect();
            self.delete(ids).await?;
        }
        Ok(())
    }

    async fn commit_change(
        &self,
        files: &[FileRecord],
        terms: &[(String, TermPair)],
    ) -> Result<()> {
        self.ready().await?;
        let mut by_source: HashMap<&str, Vec<TermPair>> = HashMap::new();
        for (source, pair) in terms {
            by_source.entry(source).or_default().push(pair.clone());
        }
        let points = files
            .iter()
            .map(|f| {
                let mut pairs = by_source.remove(f.source.as_str()).unwrap_or_default();
                pairs.sort();
                pairs.dedup();
                file_point(f, &pairs)
            })
            .collect::<Result<Vec<_>>>()?;
        self.write(points).await?;
        self.clear_pending().await
    }

    async fn orphans(&self) -> Result<Vec<String>> {
        let committed: HashSet<String> = self.all_chunk_ids().await?.into_iter().collect();
        let mut orphans: Vec<String> = self
            .scroll("pending", &["id"])
            .await?
            .iter()
            .map(|p| text(p, "id"))
            .filter(|id| !committed.contains(id))
            .collect();
        orphans.sort();
        Ok(orphans)
    }

    async fn terms(&self) -> Result<Vec<TermPair>> {
        let all: BTreeSet<TermPair> = self
            .scroll("file", &["terms"])
            .await?
            .iter()
            .flat_map(pairs)
            .collect();
        Ok(all.into_iter().collect())
    }

    async fn has_pending(&self) -> Result<bool> {
        self.ready().await?;
        let counted = self
            .client
            .count(
                CountPointsBuilder::new(&self.collection)
                    .filter(kind("pending"))
                    .exact(true),
            )
            .await
            .map_err(self.server("reading the manifest"))?;
        Ok(counted.result.is_some_and(|r| r.count > 0))
    }

    async fn clear_pending(&self) -> Result<()> {
        self.ready().await?;
        self.delete(kind("pending")).await
    }
}
