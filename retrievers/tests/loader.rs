//! `DirectoryLoader` on a folder of real files: every format, GBK text, bad
//! records and bad files skipped with reasons while the rest loads.

use std::fs;
use std::path::Path;

use kb_retrievers::{CsvMode, DirectoryLoader};

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(path, bytes).expect("write");
}

fn corpus() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(
        root,
        "guide.md",
        "\u{feff}# 使用指南\n\n先安装，再提问。".as_bytes(),
    );
    let (gbk, _, _) =
        encoding_rs::GBK.encode("旧系统导出的笔记：注意力机制把每个词和其他词联系起来。");
    write(root, "notes/legacy.txt", &gbk);
    write(
        root,
        "data/faq.jsonl",
        b"{\"text\": \"What is RRF?\", \"lang\": \"en\"}\n{not json}\n\n{\"question\": \"no text field\"}\n{\"text\": \"BM25 ranks by terms.\"}\n",
    );
    write(
        root,
        "data/items.json",
        br#"[{"text": "first"}, {"text": "second", "tag": "x"}]"#,
    );
    write(
        root,
        "data/table.csv",
        "name,role\nAda,engineer\nLin,\n".as_bytes(),
    );
    write(root, "bin/blob.md", b"\x00\x01\x02binary");
    write(root, "big.txt", &vec![b'a'; 2048]);
    write(root, ".git/config.md", b"# hidden");
    write(root, "image.png", b"\x89PNG");
    write(root, "broken.json", b"{\"text\": ");
    write(
        root,
        "site/page.html",
        "<html><head><title>KV 缓存</title><style>p{color:red}</style><script>var x=1;</script></head>\
         <body><h1>概述</h1><p>缓存历史的 <b>K</b> 和 V。</p><ul><li>避免重复计算</li></ul></body></html>"
            .as_bytes(),
    );
    dir
}

#[test]
fn loads_every_format_and_skips_the_rest_with_reasons() {
    let dir = corpus();
    let report = DirectoryLoader::new()
        .max_file_size(1024)
        .load(dir.path())
        .expect("load");
    let ids: Vec<&str> = report.documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "data/faq.jsonl#1",
            "data/faq.jsonl#5",
            "data/items.json#1",
            "data/items.json#2",
            "data/table.csv#1",
            "data/table.csv#2",
            "guide.md",
            "notes/legacy.txt",
            "site/page.html",
        ]
    );
    let page = &report.documents[8];
    assert_eq!(page.metadata["title"], "KV 缓存");
    assert!(page.text.contains("# 概述"), "{}", page.text);
    assert!(
        page.text.contains("缓存历史的 K 和 V。") && page.text.contains("避免重复计算"),
        "{}",
        page.text
    );
    assert!(
        !page.text.contains("color") && !page.text.contains("var x"),
        "{}",
        page.text
    );
    let guide = &report.documents[6];
    assert_eq!(guide.text, "# 使用指南\n\n先安装，再提问。", "BOM removed");
    assert_eq!(guide.metadata["title"], "使用指南");
    assert_eq!(guide.metadata["source"], "guide.md");
    assert_eq!(
        guide.metadata["content_hash"].as_str().map(str::len),
        Some(64)
    );
    let legacy = &report.documents[7];
    assert!(
        legacy.text.starts_with("旧系统导出的笔记"),
        "{}",
        legacy.text
    );
    assert_ne!(legacy.metadata["encoding"], "UTF-8");
    assert_eq!(report.documents[0].metadata["lang"], "en");
    assert_eq!(report.documents[3].metadata["tag"], "x");
    assert_eq!(report.documents[4].text, "name: Ada\nrole: engineer");
    assert_eq!(report.documents[5].text, "name: Lin");

    let skipped: Vec<(&str, &str)> = report
        .skipped
        .iter()
        .map(|s| (s.path.as_str(), s.reason.as_str()))
        .collect();
    let reason = |path: &str| {
        skipped
            .iter()
            .find(|(p, _)| *p == path)
            .map(|(_, r)| *r)
            .unwrap_or_else(|| panic!("{path} not skipped: {skipped:?}"))
    };
    assert!(reason("big.txt").contains("limit"));
    assert!(reason("bin/blob.md").contains("binary"));
    assert!(reason("broken.json").contains("not valid JSON"));
    assert!(reason("data/faq.jsonl:2").contains("not valid JSON"));
    assert!(reason("data/faq.jsonl#4").contains("\"text\""));
    assert!(
        skipped.iter().all(|(p, _)| !p.contains(".git")),
        "hidden folders are not walked"
    );
    assert!(
        skipped.iter().all(|(p, _)| *p != "image.png"),
        "unsupported files are ignored without globs"
    );
}

#[test]
fn globs_text_field_and_csv_table_mode() {
    let dir = corpus();
    let report = DirectoryLoader::new()
        .include("data/**")
        .expect("glob")
        .exclude("**/*.json")
        .expect("glob")
        .json_text_field("question")
        .csv_mode(CsvMode::Table)
        .load(dir.path())
        .expect("load");
    let ids: Vec<&str> = report.documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["data/faq.jsonl#4", "data/table.csv"]);
    assert_eq!(report.documents[1].text, "name,role\nAda,engineer\nLin,\n");
    assert!(DirectoryLoader::new().include("[").is_err());
}

#[test]
fn a_single_file_and_a_missing_path() {
    let dir = corpus();
    let report = DirectoryLoader::new()
        .load(dir.path().join("guide.md"))
        .expect("load");
    assert_eq!(report.documents.len(), 1);
    assert_eq!(report.documents[0].id, "guide.md");
    let err = DirectoryLoader::new()
        .load(dir.path().join("absent"))
        .unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
}

#[test]
fn loads_the_repository_docs() {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    let report = DirectoryLoader::new().load(&docs).expect("load");
    assert!(report.documents.len() >= 4, "{:?}", report.skipped);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
}

#[test]
fn reads_the_text_of_pdf_and_docx_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    write(root, "report.pdf", include_bytes!("fixtures/report.pdf"));
    write(
        root,
        "minutes.docx",
        include_bytes!("fixtures/minutes.docx"),
    );
    write(root, "broken.pdf", b"%PDF-1.7\n1 0 obj << /Type /Catalog");
    write(root, "fake.docx", b"this is not a zip archive");
    let report = DirectoryLoader::new().load(root).expect("load");
    let ids: Vec<&str> = report.documents.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["minutes.docx", "report.pdf"]);

    let minutes = &report.documents[0];
    assert_eq!(minutes.metadata["title"], "会议纪要");
    assert_eq!(minutes.metadata["format"], "docx");
    assert!(
        minutes.text.starts_with(
            "# 会议纪要\n\n讨论了混合检索 (hybrid search) & 重排序。\n## Action items"
        ),
        "{}",
        minutes.text
    );
    let pdf = &report.documents[1];
    assert!(
        pdf.text.contains("retrieval quality improved") && pdf.text.contains("cross-lingual"),
        "{}",
        pdf.text
    );
    assert_eq!(pdf.metadata["title"], "report");

    let reasons: Vec<(&str, &str)> = report
        .skipped
        .iter()
        .map(|s| (s.path.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|(p, r)| *p == "broken.pdf" && r.contains("PDF")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(p, r)| *p == "fake.docx" && r.contains("not a .docx")),
        "{reasons:?}"
    );
}
