//! The document routes: `POST /v1/kb/documents` (multipart upload, then
//! ingestion), `GET /v1/kb/documents` and `DELETE /v1/kb/documents/{id}`.
//!
//! Uploaded files are kept in the knowledge base's `uploads/` folder under
//! a sanitised name; a name that tries to leave it is refused. A file is
//! read before it replaces anything, so an unreadable upload changes
//! nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Json;
use axum::extract::multipart::{Field, MultipartError, MultipartRejection};
use axum::extract::{Multipart, Path as UrlPath, State};
use axum::http::StatusCode;
use kb_retrievers::{DirectoryLoader, FileRecord, IngestOptions, KnowledgeBase};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::AppState;
use super::error::ApiError;

/// Longest file name kept, in bytes.
const MAX_NAME: usize = 120;
/// Most files in one upload.
const MAX_FILES: usize = 32;

/// A document's id in the API: a short hash of its source name, which can
/// hold slashes.
fn document_id(source: &str) -> String {
    let digest = Sha256::digest(source.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The name an uploaded file is kept under, or why it is refused.
///
/// Path separators, `..`, leading dots and control characters are refused
/// outright (browsers send bare names, so these are attacks or mistakes);
/// other characters outside letters, digits, `-`, `_`, `.` and space become
/// `_`.
pub fn sanitize_file_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("the file has no name".into());
    }
    if name.contains(['/', '\\']) || name.contains("..") {
        return Err(format!(
            "{name:?} is a path; upload a file by its bare name"
        ));
    }
    if name.starts_with('.') {
        return Err(format!("{name:?}: hidden file names are not accepted"));
    }
    if name.chars().any(char::is_control) {
        return Err("the file name holds control characters".into());
    }
    let mut clean: String = name
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | ' ') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.len() > MAX_NAME {
        let extension = Path::new(&clean)
            .extension()
            .map(|e| format!(".{}", e.to_string_lossy()))
            .unwrap_or_default();
        let mut end = MAX_NAME.saturating_sub(extension.len());
        while !clean.is_char_boundary(end) {
            end -= 1;
        }
        clean = format!("{}{extension}", &clean[..end]);
    }
    Ok(clean)
}

fn forbidden_when_read_only(state: &AppState) -> Result<(), ApiError> {
    if state.writable {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "permission_error",
            "this server was started with --read-only; documents cannot be changed",
        ))
    }
}

fn upload_error(e: MultipartError) -> ApiError {
    let status = e.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "the upload is larger than the server's limit (--max-upload)".to_string()
    } else {
        format!("malformed upload: {}", e.body_text())
    };
    ApiError::new(status, "invalid_request_error", message)
}

/// A document as the API shows it.
fn describe(record: &FileRecord, uploads: &str) -> Value {
    json!({
        "id": document_id(&record.source),
        "object": "kb.document",
        "source": record.source,
        "title": record.title,
        "bytes": record.size,
        "documents": record.documents,
        "chunks": record.chunk_ids.len(),
        "ingested_at": record.ingested_at,
        "uploaded": record.source.starts_with(uploads),
    })
}

/// The source-name prefix of uploaded files.
fn uploads_prefix(kb: &KnowledgeBase, dir: &Path) -> String {
    let mut prefix = kb.source_name(dir);
    if !prefix.ends_with('/') {
        prefix.push('/');
    }
    prefix
}

pub async fn list(State(state): State<Arc<AppState>>) -> Result<Json<Value>, ApiError> {
    let Some(kb) = state.kb() else {
        return Ok(Json(json!({"object": "list", "data": []})));
    };
    let uploads = uploads_prefix(&kb, &state.uploads_dir());
    let data: Vec<Value> = kb
        .files()
        .await
        .map_err(internal)?
        .iter()
        .map(|record| describe(record, &uploads))
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}

fn internal(e: kb_retrievers::Error) -> ApiError {
    match e {
        kb_retrievers::Error::InvalidInput(message) => ApiError::invalid(None, message),
        other => {
            tracing::error!(error = %other, "knowledge base");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                other.to_string(),
            )
        }
    }
}

/// One received file: its kept name and where its bytes wait.
struct Received {
    name: String,
    staged: PathBuf,
}

async fn receive(field: &mut Field<'_>, staged: &Path) -> Result<(), ApiError> {
    use tokio::io::AsyncWriteExt;
    let mut file = tokio::fs::File::create(staged)
        .await
        .map_err(|e| io_error("staging the upload", e))?;
    while let Some(bytes) = field.chunk().await.map_err(upload_error)? {
        file.write_all(&bytes)
            .await
            .map_err(|e| io_error("staging the upload", e))?;
    }
    file.flush()
        .await
        .map_err(|e| io_error("staging the upload", e))?;
    Ok(())
}

fn io_error(action: &str, e: std::io::Error) -> ApiError {
    tracing::error!(error = %e, action, "upload");
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        format!("{action}: {e}"),
    )
}

/// Removes staged files that were not kept.
struct Staging(Vec<PathBuf>);

impl Drop for Staging {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

pub async fn upload(
    State(state): State<Arc<AppState>>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    forbidden_when_read_only(&state)?;
    let mut multipart = multipart.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            "invalid_request_error",
            format!(
                "send the files as multipart/form-data, each in a `file` field ({})",
                rejection.body_text()
            ),
        )
    })?;
    let uploads = state.uploads_dir();
    std::fs::create_dir_all(&uploads).map_err(|e| io_error("creating the uploads folder", e))?;
    let upload_id = state
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut staging = Staging(Vec::new());
    let mut received: Vec<Received> = Vec::new();
    while let Some(mut field) = multipart.next_field().await.map_err(upload_error)? {
        let Some(given) = field.file_name().map(str::to_string) else {
            continue; // a plain form field
        };
        let name = sanitize_file_name(&given).map_err(|m| ApiError::invalid(Some("file"), m))?;
        if !DirectoryLoader::reads(&name) {
            return Err(ApiError {
                code: Some("unsupported_file_type"),
                ..ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "invalid_request_error",
                    format!(
                        "{name:?}: kb reads {} files",
                        DirectoryLoader::extensions().join(", ")
                    ),
                )
            });
        }
        if received.len() == MAX_FILES {
            return Err(ApiError::invalid(
                Some("file"),
                format!("at most {MAX_FILES} files per upload"),
            ));
        }
        let staged = uploads.join(format!(".upload-{upload_id}-{}-{name}", received.len()));
        staging.0.push(staged.clone());
        receive(&mut field, &staged).await?;
        received.push(Received { name, staged });
    }
    if received.is_empty() {
        return Err(ApiError::invalid(
            Some("file"),
            "no file in the upload: send multipart/form-data with a `file` field",
        ));
    }
    // Read each file before it replaces anything.
    let loader = DirectoryLoader::new();
    for file in &received {
        let report = loader.load(&file.staged).map_err(internal)?;
        if report.documents.is_empty() {
            let reason = report
                .skipped
                .first()
                .map_or("it holds no text".to_string(), |s| s.reason.clone());
            return Err(ApiError {
                code: Some("unreadable_file"),
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request_error",
                    format!("{}: {reason}", file.name),
                )
            });
        }
    }

    let _permit = state.admit()?;
    let _writer = state.writer.lock().await;
    let kb = state.kb_for_writing().map_err(internal)?;
    let mut kept = Vec::new();
    for file in &received {
        let path = uploads.join(&file.name);
        std::fs::rename(&file.staged, &path).map_err(|e| io_error("keeping the upload", e))?;
        kept.push(path);
    }
    let paths = kept.clone();
    let writer_kb = kb.clone();
    let report = tokio::task::spawn_blocking(move || {
        tokio::runtime::Handle::current().block_on(writer_kb.ingest(
            &paths,
            &IngestOptions::default(),
            &mut |_| {},
        ))
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "server_error",
            format!("ingestion stopped: {e}"),
        )
    })?
    .map_err(internal)?;

    let prefix = uploads_prefix(&kb, &uploads);
    let records = kb.files().await.map_err(internal)?;
    let documents: Vec<Value> = kept
        .iter()
        .filter_map(|path| {
            let source = kb.source_name(path);
            records
                .iter()
                .find(|r| r.source == source)
                .map(|r| describe(r, &prefix))
        })
        .collect();
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "object": "list",
            "data": documents,
            "report": report,
        })),
    ))
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, ApiError> {
    forbidden_when_read_only(&state)?;
    let missing = || ApiError {
        code: Some("document_not_found"),
        ..ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("no document has the id {id:?}; GET /v1/kb/documents lists them"),
        )
    };
    let kb = state.kb().ok_or_else(missing)?;
    let _writer = state.writer.lock().await;
    let record = kb
        .files()
        .await
        .map_err(internal)?
        .into_iter()
        .find(|r| document_id(&r.source) == id)
        .ok_or_else(missing)?;
    let (_, chunks) = kb
        .delete(std::slice::from_ref(&record.source))
        .await
        .map_err(internal)?;
    // An uploaded file is ours: it goes too. Files ingested from the
    // user's folders stay where they are.
    let uploads = state.uploads_dir();
    if record.source.starts_with(&uploads_prefix(&kb, &uploads))
        && let Some(name) = record.source.rsplit('/').next()
    {
        let _ = std::fs::remove_file(uploads.join(name));
    }
    Ok(Json(json!({
        "id": id,
        "object": "kb.document",
        "source": record.source,
        "deleted": true,
        "chunks": chunks,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_bare_and_tame() {
        assert_eq!(sanitize_file_name("notes.md").as_deref(), Ok("notes.md"));
        assert_eq!(
            sanitize_file_name("my notes (v2).md").as_deref(),
            Ok("my notes _v2_.md")
        );
        assert_eq!(sanitize_file_name("笔记.txt").as_deref(), Ok("笔记.txt"));
        for hostile in [
            "../../etc/passwd.md",
            "..\\boot.ini.txt",
            "/etc/passwd.txt",
            "a/b.md",
            ".hidden.md",
            "..",
            "",
            "   ",
            "bell\u{7}.md",
        ] {
            assert!(sanitize_file_name(hostile).is_err(), "{hostile:?}");
        }
        let long = format!("{}.md", "é".repeat(200));
        let kept = sanitize_file_name(&long).expect("long names are shortened");
        assert!(kept.len() <= MAX_NAME && kept.ends_with(".md"), "{kept}");
    }

    #[test]
    fn ids_are_stable_and_url_safe() {
        let id = document_id("docs/guide.md");
        assert_eq!(id, document_id("docs/guide.md"));
        assert_ne!(id, document_id("docs/guide2.md"));
        assert_eq!(id.len(), 16);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
