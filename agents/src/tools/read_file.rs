//! [`ReadFile`]: reads text files, confined to one directory.

use std::io::Read;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use kb_core::{Error, Result, Tool};
use serde_json::{Value, json};

/// Most bytes returned from one file by default.
pub const DEFAULT_MAX_BYTES: usize = 16 * 1024;

/// Reads a text file (or lists a directory) under an allowed root.
///
/// Paths are relative to the root. Absolute paths, `..` that leaves the root
/// and symbolic links that point outside it are refused: the path is resolved
/// on disk and must still lie under the root. Long files are cut at
/// [`max_bytes`](ReadFile::max_bytes) with a note saying so; binary files are
/// refused.
///
/// ```
/// use kb_agents::tools::ReadFile;
/// use kb_core::Tool;
/// # let dir = tempfile::tempdir()?;
/// std::fs::write(dir.path().join("notes.txt"), "RRF fuses rankings.")?;
/// let tool = ReadFile::new(dir.path())?;
/// # futures::executor::block_on(async {
/// let text = tool.call(serde_json::json!({"path": "notes.txt"})).await?;
/// assert_eq!(text, "RRF fuses rankings.");
/// let refused = tool.call(serde_json::json!({"path": "../../etc/passwd"})).await;
/// assert!(refused.unwrap_err().to_string().contains("outside"));
/// # Ok::<(), kb_core::Error>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ReadFile {
    root: PathBuf,
    max_bytes: usize,
}

impl ReadFile {
    /// A tool reading under `root`, which must be an existing directory.
    pub fn new(root: impl AsRef<Path>) -> Result<Self> {
        let root = root.as_ref();
        let canonical = root.canonicalize().map_err(|e| {
            Error::InvalidInput(format!("the root {} cannot be opened: {e}", root.display()))
        })?;
        if !canonical.is_dir() {
            return Err(Error::InvalidInput(format!(
                "the root {} is not a directory",
                root.display()
            )));
        }
        Ok(ReadFile {
            root: canonical,
            max_bytes: DEFAULT_MAX_BYTES,
        })
    }

    /// Most bytes returned from one file (default [`DEFAULT_MAX_BYTES`]).
    pub fn max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// The directory files are read under.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file `relative` names, resolved on disk, if it lies under the root.
    fn resolve(&self, relative: &str) -> Result<PathBuf> {
        let relative = relative.trim();
        let path = Path::new(relative);
        if path.is_absolute() || path.components().any(|c| matches!(c, Component::Prefix(_))) {
            return Err(refused(format!(
                "{relative:?} is an absolute path, which is outside the allowed root; give a path relative to it"
            )));
        }
        let joined = self.root.join(path);
        let resolved = joined.canonicalize().map_err(|_| {
            if escapes(path) {
                refused(format!("{relative:?} is outside the allowed root"))
            } else {
                refused(format!("{relative:?} does not exist"))
            }
        })?;
        if !resolved.starts_with(&self.root) {
            return Err(refused(format!("{relative:?} is outside the allowed root")));
        }
        Ok(resolved)
    }
}

/// Whether `path` climbs above its starting point with `..`.
fn escapes(path: &Path) -> bool {
    let mut depth = 0i32;
    for component in path.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return true;
        }
    }
    false
}

fn refused(message: String) -> Error {
    Error::Tool {
        tool: "read_file".into(),
        message,
    }
}

#[async_trait]
impl Tool for ReadFile {
    fn name(&self) -> &str {
        "read_file"
    }

    fn description(&self) -> &str {
        "Reads a text file by its path relative to the working folder; a folder's path lists its entries (\".\" is the folder itself)."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "A path relative to the folder, e.g. \"docs/intro.md\""}
            },
            "required": ["path"],
        })
    }

    async fn call(&self, args: Value) -> Result<String> {
        let relative = match &args {
            Value::String(s) => s.clone(),
            _ => args
                .get("path")
                .or_else(|| args.get("file"))
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| refused("give the file as {\"path\": \"…\"}".into()))?,
        };
        let path = self.resolve(&relative)?;
        if path.is_dir() {
            let mut names: Vec<String> = std::fs::read_dir(&path)
                .map_err(|e| refused(format!("{relative:?} cannot be listed: {e}")))?
                .filter_map(|entry| entry.ok())
                .map(|entry| {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if entry.path().is_dir() {
                        format!("{name}/")
                    } else {
                        name
                    }
                })
                .collect();
            names.sort();
            return Ok(if names.is_empty() {
                "(empty folder)".into()
            } else {
                names.join("\n")
            });
        }
        let file = std::fs::File::open(&path)
            .map_err(|e| refused(format!("{relative:?} cannot be read: {e}")))?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut bytes = Vec::new();
        file.take(self.max_bytes as u64)
            .read_to_end(&mut bytes)
            .map_err(|e| refused(format!("{relative:?} cannot be read: {e}")))?;
        if bytes.contains(&0) {
            return Err(refused(format!("{relative:?} is a binary file, not text")));
        }
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        // A cut in the middle of a character leaves a replacement mark: drop it.
        if size as usize > bytes.len() {
            text = text.trim_end_matches('\u{FFFD}').to_string();
            text.push_str(&format!(
                "\n… (cut: showing {} of {size} bytes)",
                bytes.len()
            ));
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn traversal_and_links_out_of_the_root_are_refused() {
        let outer = tempfile::tempdir().expect("tempdir");
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("sub")).expect("mkdir");
        std::fs::write(outer.path().join("secret.txt"), "secret").expect("write");
        std::fs::write(root.join("sub/ok.txt"), "fine").expect("write");
        let tool = ReadFile::new(&root).expect("tool");
        let call = |path: &str| tool.call(json!({ "path": path }));

        assert_eq!(call("sub/ok.txt").await.expect("inside"), "fine");
        assert_eq!(call("sub/../sub/ok.txt").await.expect("inside"), "fine");
        for bad in [
            "../secret.txt",
            "sub/../../secret.txt",
            "/etc/passwd",
            &outer.path().join("secret.txt").display().to_string(),
        ] {
            let err = call(bad).await.expect_err(bad).to_string();
            assert!(err.contains("outside"), "{bad}: {err}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(outer.path().join("secret.txt"), root.join("link.txt"))
                .expect("symlink");
            let err = call("link.txt").await.expect_err("link").to_string();
            assert!(err.contains("outside"), "{err}");
        }
        let err = call("missing.txt").await.expect_err("missing").to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert_eq!(
            call(".").await.expect("list"),
            if cfg!(unix) { "link.txt\nsub/" } else { "sub/" }
        );
    }

    #[tokio::test]
    async fn long_and_binary_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("long.txt"), "好".repeat(100)).expect("write");
        std::fs::write(dir.path().join("bin.dat"), [1u8, 0, 2]).expect("write");
        let tool = ReadFile::new(dir.path()).expect("tool").max_bytes(10);
        let text = tool.call(json!({"path": "long.txt"})).await.expect("long");
        assert!(
            text.starts_with("好好好\n… (cut: showing 10 of 300 bytes)"),
            "{text}"
        );
        let err = tool
            .call(json!({"path": "bin.dat"}))
            .await
            .expect_err("binary");
        assert!(err.to_string().contains("binary"), "{err}");
        assert!(ReadFile::new(dir.path().join("nope")).is_err());
    }
}
