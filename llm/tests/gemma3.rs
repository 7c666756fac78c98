//! Gemma 3 270M (`kb models fetch gemma3-270m`: Q4_K, Q6_K, Q5_0 and Q8_0
//! tensors, sliding-window layers, a 262 144-token SentencePiece vocabulary)
//! against llama.cpp's recorded tokenization and greedy runs
//! (`fixtures/gemma3_270m_reference.json`: llama-server on the same file,
//! 32 greedy tokens per prompt with the top-2 log-probabilities per step).

use std::path::PathBuf;
use std::sync::OnceLock;

use kb_core::GenerateOptions;
use kb_core::models::{GEMMA3_270M, ModelCache};
use kb_llm::{GgufModel, LoadOptions};
use reference::{
    Margins, Step, log_softmax, same_bits_on_every_family, same_until_noise, teacher_forced,
};
use serde::Deserialize;

mod reference;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
    tokenizer_cases: Vec<TokenizerCase>,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    prompt_ids: Vec<u32>,
    greedy_ids: Vec<u32>,
    greedy_text: String,
    /// The log-probabilities of llama.cpp's two most likely tokens per step.
    top2_logprobs: Vec<(f32, f32)>,
}

impl Case {
    fn steps(&self) -> Vec<Step> {
        self.greedy_ids
            .iter()
            .zip(&self.top2_logprobs)
            .map(|(&top, (a, b))| Step { top, margin: a - b })
            .collect()
    }
}

#[derive(Deserialize)]
struct TokenizerCase {
    text: String,
    ids: Vec<u32>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        serde_json::from_str(include_str!("fixtures/gemma3_270m_reference.json"))
            .expect("fixture parses")
    })
}

fn model_path() -> PathBuf {
    ModelCache::from_env()
        .expect("model cache")
        .resolve(GEMMA3_270M)
        .expect("Gemma 3 270M is installed (run `kb models fetch gemma3-270m`)")
}

fn model() -> &'static GgufModel {
    static MODEL: OnceLock<GgufModel> = OnceLock::new();
    MODEL.get_or_init(|| {
        GgufModel::load(&model_path(), &LoadOptions::default().threads(2)).expect("load Gemma 3")
    })
}

#[test]
fn tokenizer_gives_llamacpp_ids() {
    let tokenizer = model().tokenizer();
    for case in &fixture().tokenizer_cases {
        let ids = tokenizer.encode(&case.text).expect("encode");
        assert_eq!(ids, case.ids, "{:?}", case.text);
        assert_eq!(tokenizer.decode(&ids, false), case.text, "{:?}", case.text);
    }
    for case in &fixture().cases {
        let ids = tokenizer.encode_prompt(&case.prompt).expect("encode");
        assert_eq!(ids, case.prompt_ids, "{:?}", case.prompt);
    }
}

#[test]
fn greedy_generation_follows_llamacpp() {
    let model = model();
    let mut problems = Vec::new();
    for case in &fixture().cases {
        let generation = model
            .generate(
                &mut model.session(),
                &case.prompt_ids,
                &GenerateOptions::default().max_tokens(case.greedy_ids.len()),
                |_| true,
            )
            .expect("generate");
        problems.extend(same_until_noise(
            &generation.ids,
            &case.greedy_ids,
            &case.steps(),
            case.prompt.as_str(),
        ));
        if generation.ids == case.greedy_ids {
            assert_eq!(generation.text, case.greedy_text);
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// With llama.cpp's tokens forced, kb's margins stay close to llama.cpp's and
/// its top token is llama.cpp's wherever llama.cpp is confident.
#[test]
fn teacher_forced_margins_track_llamacpp() {
    let model = model();
    let mut margins = Margins::default();
    for case in &fixture().cases {
        let (m, _) = teacher_forced(
            model,
            &case.prompt_ids,
            &case.greedy_ids,
            &case.steps(),
            &[],
        );
        margins.add(m);
    }
    margins.check("Gemma 3 270M", 160);
}

/// Q4_K, Q6_K, Q5_0 and Q8_0 on every kernel family: the same logits, bit for
/// bit, for a prompt and a decoded token; weights in memory about the
/// file's size.
#[test]
fn every_kernel_family_gives_the_same_numbers() {
    let case = &fixture().cases[1];
    let file = std::fs::metadata(model_path()).expect("file").len() as f64;
    same_bits_on_every_family(
        |isa| {
            let model = GgufModel::load(
                &model_path(),
                &LoadOptions::default().threads(2).kernels(isa),
            )
            .expect("load Gemma 3");
            let ratio = model.weights_size() as f64 / file;
            assert!(
                (0.9..1.1).contains(&ratio),
                "weights take {ratio:.2}× the file"
            );
            model
        },
        &case.prompt_ids,
        &case.greedy_ids[..1],
    );
}

/// Past the 512-token window of the local layers, a prompt still runs and a
/// cached prefix gives the numbers of a cold run.
#[test]
fn long_prompts_slide_the_window_and_reuse_the_cache() {
    let model = model();
    let text = fixture().cases[0].prompt.repeat(120);
    let ids = model.tokenizer().encode_prompt(&text).expect("encode");
    assert!(ids.len() > 600, "{} tokens", ids.len());
    let cold = model.logits(&mut model.session(), &ids).expect("cold");
    let mut session = model.session();
    model.logits(&mut session, &ids[..550]).expect("prefix");
    let warm = model.logits(&mut session, &ids[550..]).expect("rest");
    assert_eq!(cold, warm);
    assert!(cold.iter().all(|v| v.is_finite()));
}

/// The file has no chat template: Gemma's turns are used, and their markers
/// are single tokens.
#[test]
fn conversations_use_gemmas_turns() {
    use kb_core::Message;
    let model = model();
    assert!(!model.has_template());
    let messages = [Message::system("Be brief."), Message::user("Hi ")];
    let prompt = model.template().render(&messages, true).expect("render");
    assert_eq!(
        prompt,
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    );
    let ids = model.chat_prompt(&messages).expect("ids");
    let start = model
        .tokenizer()
        .token_id("<start_of_turn>")
        .expect("marker");
    assert_eq!(ids.iter().filter(|&&t| t == start).count(), 2);
    let end = model.tokenizer().token_id("<end_of_turn>").expect("marker");
    assert!(model.tokenizer().is_end_of_generation(end));
}

/// The candle path (what runs on a GPU with the `cuda` feature), here on
/// candle's CPU device with the weights as stored: with llama.cpp's tokens
/// forced its margins track llama.cpp's as the CPU engine's do, and past the
/// local layers' 512-token window its next-token scores are the CPU
/// engine's (a window applied wrongly moves them far).
#[test]
fn the_candle_device_path_follows_llamacpp() {
    let model = GgufModel::load(
        &model_path(),
        &LoadOptions::default().backend(kb_llm::Backend::CandleCpu),
    )
    .expect("load Gemma 3 on candle's CPU device");
    let mut margins = Margins::default();
    for case in &fixture().cases {
        let (m, _) = teacher_forced(
            &model,
            &case.prompt_ids,
            &case.greedy_ids,
            &case.steps(),
            &[],
        );
        margins.add(m);
    }
    margins.check("Gemma 3 270M on candle", 160);

    let text = fixture().cases[0].prompt.repeat(120);
    let ids = model.tokenizer().encode_prompt(&text).expect("encode");
    assert!(ids.len() > 600, "{} tokens", ids.len());
    let ours = model.logits(&mut model.session(), &ids).expect("candle");
    let cpu = self::model()
        .logits(&mut self::model().session(), &ids)
        .expect("cpu");
    let (ours, cpu) = (log_softmax(&ours), log_softmax(&cpu));
    let top = kb_llm::argmax(&cpu);
    assert_eq!(kb_llm::argmax(&ours), top);
    let worst = ours
        .iter()
        .zip(&cpu)
        .filter(|(_, c)| **c > -10.0)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst < 1.0,
        "log-probabilities differ by up to {worst} past the window"
    );
}
