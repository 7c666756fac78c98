//! Every loader on arbitrary bytes (the first byte picks the file type): a
//! document or a skip with a reason, never a panic.
#![no_main]

use std::io::Write;

use kb_retrievers::DirectoryLoader;
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 10] = [
    "md", "txt", "html", "json", "jsonl", "csv", "pdf", "docx", "markdown", "htm",
];

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    let extension = TYPES[usize::from(kind) % TYPES.len()];
    let Ok(mut file) = tempfile::Builder::new()
        .suffix(&format!(".{extension}"))
        .tempfile()
    else {
        return;
    };
    if file.write_all(bytes).is_err() {
        return;
    }
    let report = DirectoryLoader::new()
        .load(file.path())
        .expect("a file loads or is skipped");
    for skipped in &report.skipped {
        assert!(!skipped.reason.is_empty());
    }
});
