//! kb's tokenizer against llama.cpp's own tokenizer tests, on the vocabularies
//! of real models: Llama 2 and Phi-3 (SentencePiece), Llama 3, Qwen 2, GPT-2
//! and StarCoder (byte-level BPE). Each vocabulary-only GGUF comes with
//! llama.cpp's test inputs and the ids llama.cpp gives for them.
//!
//! The files are fetched by `scripts/fetch-vocab-fixtures.sh` (the test script
//! runs it). Without them these tests print why and pass, unless
//! `KB_REQUIRE_VOCAB` is set, as it is in CI.

use std::path::PathBuf;

use kb_llm::{GgufFile, Tokenizer};

fn vocab_dir() -> Option<PathBuf> {
    let dir = match std::env::var_os("KB_VOCAB_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            cache.join("kb/fixtures/llama.cpp-vocab-0.3.36")
        }
    };
    if dir.join(".complete").exists() {
        return Some(dir);
    }
    assert!(
        std::env::var_os("KB_REQUIRE_VOCAB").is_none(),
        "KB_REQUIRE_VOCAB is set but {} has no vocabularies: run scripts/fetch-vocab-fixtures.sh",
        dir.display()
    );
    eprintln!(
        "skipped: no tokenizer test vocabularies in {} (run scripts/fetch-vocab-fixtures.sh)",
        dir.display()
    );
    None
}

/// llama.cpp's test cases: an input and the ids llama.cpp gives it.
type Cases = Vec<(String, Vec<u32>)>;

/// The tokenizer of `ggml-vocab-NAME.gguf` and llama.cpp's cases for it.
fn load(name: &str) -> Option<(Tokenizer, Cases)> {
    let dir = vocab_dir()?;
    let path = dir.join(format!("ggml-vocab-{name}.gguf"));
    let gguf = GgufFile::open(&path).expect("open the vocabulary");
    let tokenizer = Tokenizer::from_gguf(&gguf).expect("build the tokenizer");
    let input = std::fs::read_to_string(path.with_extension("gguf.inp")).expect("inputs");
    let output = std::fs::read_to_string(path.with_extension("gguf.out")).expect("outputs");
    // As llama.cpp's test-tokenizer-0 reads them.
    let mut inputs: Vec<&str> = input.split("\n__ggml_vocab_test__\n").collect();
    if input.ends_with("\n__ggml_vocab_test__\n") {
        inputs.pop();
    }
    let outputs: Vec<Vec<u32>> = output
        .lines()
        .map(|line| {
            line.split_whitespace()
                .map(|id| id.parse().expect("an id"))
                .collect()
        })
        .collect();
    assert_eq!(inputs.len(), outputs.len(), "{name}: inputs and outputs");
    let cases = inputs.into_iter().map(String::from).zip(outputs).collect();
    Some((tokenizer, cases))
}

/// Every case gives llama.cpp's ids and decodes back to its input.
fn check(name: &str) {
    let Some((tokenizer, cases)) = load(name) else {
        return;
    };
    let mut problems = Vec::new();
    for (text, expected) in &cases {
        let ids = tokenizer.encode(text).expect("encode");
        if &ids != expected {
            problems.push(format!(
                "{text:?}\n  kb:        {ids:?}\n  llama.cpp: {expected:?}"
            ));
            continue;
        }
        let back = tokenizer.decode(&ids, false);
        if back != *text {
            problems.push(format!("{text:?} decodes back as {back:?}"));
        }
    }
    assert!(
        problems.is_empty(),
        "{name}: {} of {} cases differ:\n{}",
        problems.len(),
        cases.len(),
        problems.join("\n")
    );
}

#[test]
fn llama2_sentencepiece_matches_llama_cpp() {
    check("llama-spm");
}

#[test]
fn phi3_sentencepiece_matches_llama_cpp() {
    check("phi-3");
}

#[test]
fn llama3_bpe_matches_llama_cpp() {
    check("llama-bpe");
}

#[test]
fn qwen2_bpe_matches_llama_cpp() {
    check("qwen2");
}

#[test]
fn gpt2_bpe_matches_llama_cpp() {
    check("gpt-2");
}

#[test]
fn starcoder_bpe_matches_llama_cpp() {
    check("starcoder");
}

/// llama.cpp's test-tokenizer-1-spm: every piece of the vocabulary, decoded,
/// encodes to ids that decode to the same text.
#[test]
fn every_sentencepiece_token_round_trips() {
    let Some((tokenizer, _)) = load("llama-spm") else {
        return;
    };
    let mut checked = 0;
    for id in 0..tokenizer.vocab_size() as u32 {
        if tokenizer.is_control(id) {
            continue;
        }
        let text = tokenizer.decode(&[id], false);
        if text.is_empty() || text.contains('\u{fffd}') {
            continue;
        }
        let ids = tokenizer.encode(&text).expect("encode");
        assert_eq!(tokenizer.decode(&ids, false), text, "token {id}");
        checked += 1;
    }
    assert!(checked > 31_000, "only {checked} tokens checked");
}

/// Special tokens written in the text become their ids, and the text after
/// them gets SentencePiece's space prefix, as in llama.cpp.
#[test]
fn sentencepiece_special_tokens_and_bos() {
    let Some((tokenizer, _)) = load("llama-spm") else {
        return;
    };
    assert_eq!(tokenizer.bos(), Some(1));
    assert_eq!(tokenizer.eos(), Some(2));
    assert!(tokenizer.adds_space_prefix());
    let hello = tokenizer.encode("Hello").expect("encode");
    assert_eq!(hello, vec![15043]);
    assert_eq!(
        tokenizer.encode_prompt("Hello").expect("encode"),
        vec![1, 15043],
        "SentencePiece models ask for BOS"
    );
    assert_eq!(
        tokenizer.encode("<s>Hello</s>").expect("encode"),
        vec![1, 15043, 2]
    );
    assert!(tokenizer.is_end_of_generation(2));
}

/// The chat templates stored in the Phi-3 and Qwen 2 vocabularies render
/// their documented formats, and the prompts tokenize with their markers as
/// single tokens, as llama.cpp reads them (for Phi-3, the newline after a
/// marker is dropped, llama.cpp's `rstrip` for that model).
#[test]
fn stored_chat_templates_render_and_tokenize_as_llama_cpp_does() {
    let Some(dir) = vocab_dir() else {
        return;
    };
    let conversation = [
        kb_core::Message::system("Be brief."),
        kb_core::Message::user("Hello"),
    ];
    let mut rendered = Vec::new();
    for name in ["phi-3", "qwen2"] {
        let gguf = GgufFile::open(&dir.join(format!("ggml-vocab-{name}.gguf"))).expect("open");
        let tokenizer = Tokenizer::from_gguf(&gguf).expect("tokenizer");
        let text = |id: Option<u32>| {
            id.map(|id| tokenizer.decode(&[id], false))
                .unwrap_or_default()
        };
        let template = kb_llm::ChatTemplate::new(
            gguf.string("tokenizer.chat_template").expect("template"),
            &text(tokenizer.bos()),
            &text(tokenizer.eos()),
        )
        .expect("template compiles");
        let prompt = template.render(&conversation, true).expect("render");
        let ids = tokenizer.encode(&prompt).expect("encode");
        rendered.push((prompt, ids, tokenizer));
    }
    let (phi3, phi3_ids, _) = &rendered[0];
    // Phi-3's template has no system turn.
    assert_eq!(phi3, "<s><|user|>\nHello<|end|>\n<|assistant|>\n");
    // <s> <|user|> ▁Hello <|end|> <|assistant|>
    assert_eq!(phi3_ids, &vec![1, 32010, 15043, 32007, 32001]);
    let (qwen, qwen_ids, qwen_tokenizer) = &rendered[1];
    assert_eq!(
        qwen,
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    );
    let im_start = qwen_tokenizer.token_id("<|im_start|>").expect("marker");
    let im_end = qwen_tokenizer.token_id("<|im_end|>").expect("marker");
    assert_eq!(qwen_ids.iter().filter(|&&t| t == im_start).count(), 3);
    assert_eq!(qwen_ids.iter().filter(|&&t| t == im_end).count(), 2);
    assert!(qwen_tokenizer.is_end_of_generation(im_end));
    assert_eq!(qwen_tokenizer.decode(qwen_ids, false), *qwen);
}
