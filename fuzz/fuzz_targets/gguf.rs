//! The GGUF reader and model loader on arbitrary files (truncated and
//! corrupt headers, lying sizes): a clear error, never a panic or an abort.
#![no_main]

use std::io::Write;

use kb_llm::{GgufFile, GgufModel, LoadOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(mut file) = tempfile::Builder::new().suffix(".gguf").tempfile() else {
        return;
    };
    if file.write_all(data).is_err() {
        return;
    }
    if let Ok(gguf) = GgufFile::open(file.path()) {
        let _ = gguf.architecture();
        let _ = GgufModel::load(file.path(), &LoadOptions::default().threads(1));
    }
});
