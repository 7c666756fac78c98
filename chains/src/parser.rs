//! Output parsers: a model's message as a typed value (JSON, with repair of
//! almost-JSON) or a list.

use std::marker::PhantomData;

use async_trait::async_trait;
use kb_core::{Error, Message, Result, Runnable};
use serde::de::DeserializeOwned;

/// Parses a model's message as JSON into `T`, repairing what small models
/// get almost right: code fences, prose around the value, trailing commas,
/// single quotes, curly quotes, unquoted keys, Python's `True`/`False`/`None`,
/// and missing closing brackets at the end.
///
/// ```
/// use kb_chains::parse_json;
/// #[derive(serde::Deserialize, Debug, PartialEq)]
/// struct Verdict { relevant: bool, reason: String }
///
/// let reply = "Sure! ```json\n{'relevant': True, 'reason': \"mentions BM25\",}\n```";
/// let verdict: Verdict = parse_json(reply)?;
/// assert_eq!(verdict, Verdict { relevant: true, reason: "mentions BM25".into() });
/// # Ok::<(), kb_core::Error>(())
/// ```
pub fn parse_json<T: DeserializeOwned>(text: &str) -> Result<T> {
    let span = json_span(text).ok_or_else(|| {
        Error::Parse(format!(
            "no JSON object or array in the model's output: {:?}",
            preview(text)
        ))
    })?;
    if let Ok(value) = serde_json::from_str(&span) {
        return Ok(value);
    }
    let repaired = repair(&span);
    serde_json::from_str(&repaired).map_err(|e| {
        Error::Parse(format!(
            "the model's output is not valid JSON even after repair ({e}): {:?}",
            preview(text)
        ))
    })
}

fn preview(text: &str) -> String {
    match text.char_indices().nth(200) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

/// The first JSON object or array in `text`, closed if the text ends inside it.
fn json_span(text: &str) -> Option<String> {
    let start = text.find(['{', '['])?;
    let mut stack = Vec::new();
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for (i, c) in text[start..].char_indices() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q || (q == '“' && c == '”') {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '“' => quote = Some(c),
            '{' => stack.push('}'),
            '[' => stack.push(']'),
            '}' | ']' => {
                stack.pop();
                if stack.is_empty() {
                    return Some(text[start..start + i + c.len_utf8()].to_string());
                }
            }
            _ => {}
        }
    }
    let mut span = text[start..].trim_end().trim_end_matches("```").to_string();
    if let Some(q) = quote {
        span.push(if q == '“' { '”' } else { q });
    }
    span.extend(stack.iter().rev());
    Some(span)
}

/// Rewrites almost-JSON into JSON, outside and inside strings as needed.
fn repair(span: &str) -> String {
    let mut out = String::with_capacity(span.len());
    let chars: Vec<char> = span.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '“' => {
                let close = match c {
                    '“' => '”',
                    other => other,
                };
                out.push('"');
                i += 1;
                while i < chars.len() && chars[i] != close {
                    match chars[i] {
                        '\\' if i + 1 < chars.len() => {
                            if chars[i + 1] == '\'' {
                                out.push('\'');
                            } else {
                                out.push('\\');
                                out.push(chars[i + 1]);
                            }
                            i += 1;
                        }
                        '"' => out.push_str("\\\""),
                        '\n' => out.push_str("\\n"),
                        other => out.push(other),
                    }
                    i += 1;
                }
                out.push('"');
            }
            ',' => {
                // A trailing comma: the next non-space character closes.
                let next = chars[i + 1..].iter().find(|c| !c.is_whitespace());
                if !matches!(next, Some('}' | ']') | None) {
                    out.push(',');
                }
            }
            c if c.is_ascii_alphabetic() => {
                let word_end = chars[i..]
                    .iter()
                    .position(|c| !c.is_ascii_alphanumeric() && *c != '_')
                    .map_or(chars.len(), |p| i + p);
                let word: String = chars[i..word_end].iter().collect();
                match word.as_str() {
                    "True" | "true" => out.push_str("true"),
                    "False" | "false" => out.push_str("false"),
                    "None" | "null" => out.push_str("null"),
                    // An unquoted key or bare word: quote it.
                    other => {
                        out.push('"');
                        out.push_str(other);
                        out.push('"');
                    }
                }
                i = word_end;
                continue;
            }
            other => out.push(other),
        }
        i += 1;
    }
    out
}

/// A pipeline step from a model's [`Message`] to `T`, by [`parse_json`].
#[derive(Debug)]
pub struct JsonOutputParser<T> {
    target: PhantomData<fn() -> T>,
}

impl<T> JsonOutputParser<T> {
    /// A parser into `T`.
    pub fn new() -> Self {
        JsonOutputParser {
            target: PhantomData,
        }
    }
}

impl<T> Default for JsonOutputParser<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for JsonOutputParser<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

#[async_trait]
impl<T: DeserializeOwned + Send + 'static> Runnable for JsonOutputParser<T> {
    type Input = Message;
    type Output = T;

    async fn invoke(&self, message: Message) -> Result<T> {
        parse_json(&message.content)
    }
}

/// Parses a list: one item per line (bullets and numbering removed), or,
/// for a one-line answer, comma-separated items.
///
/// ```
/// use kb_chains::parse_list;
/// assert_eq!(parse_list("1. BM25\n2) vectors\n- RRF"), ["BM25", "vectors", "RRF"]);
/// assert_eq!(parse_list("BM25, vectors，RRF"), ["BM25", "vectors", "RRF"]);
/// ```
pub fn parse_list(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let items: Vec<&str> = if lines.len() == 1 {
        lines[0].split([',', '，', '、', ';', '；']).collect()
    } else {
        lines
    };
    items
        .into_iter()
        .map(|item| {
            let item = item.trim();
            let item = item.trim_start_matches(['-', '*', '•', '·']).trim_start();
            let digits = item.chars().take_while(char::is_ascii_digit).count();
            let item = if digits > 0 && item[digits..].starts_with(['.', ')', '、']) {
                item[digits + 1..].trim_start()
            } else {
                item
            };
            item.trim().to_string()
        })
        .filter(|item| !item.is_empty())
        .collect()
}

/// A pipeline step from a model's [`Message`] to a list, by [`parse_list`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ListOutputParser;

#[async_trait]
impl Runnable for ListOutputParser {
    type Input = Message;
    type Output = Vec<String>;

    async fn invoke(&self, message: Message) -> Result<Vec<String>> {
        Ok(parse_list(&message.content))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn repairs_common_mistakes() {
        let cases = [
            ("{\"a\": 1}", json!({"a": 1})),
            ("Here: {\"a\": [1, 2,], }", json!({"a": [1, 2]})),
            (
                "```json\n{'a': 'it\\'s', \"b\": None}\n```",
                json!({"a": "it's", "b": null}),
            ),
            ("{“a”: “b”}", json!({"a": "b"})),
            ("{\"a\": {\"b\": [1, 2", json!({"a": {"b": [1, 2]}})),
            ("[\"x\", 'y'] and more [1]", json!(["x", "y"])),
            (
                "{tool: \"calculator\", args: {expression: '2+3'}}",
                json!({"tool": "calculator", "args": {"expression": "2+3"}}),
            ),
            (
                "{\"note\": \"True story, None left\"}",
                json!({"note": "True story, None left"}),
            ),
        ];
        for (text, expected) in cases {
            let value: Value = parse_json(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(value, expected, "{text}");
        }
    }

    #[test]
    fn hopeless_output_is_a_parse_error() {
        let err = parse_json::<Value>("I cannot do that.").expect_err("no JSON");
        assert!(matches!(err, Error::Parse(_)), "{err}");
        let err = parse_json::<Value>("{a: b c}").expect_err("not JSON");
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        let err = parse_json::<Value>("{\"a\" 1}").expect_err("not JSON");
        assert!(err.to_string().contains("not valid JSON"), "{err}");
    }
}
