//! Reading a ReAct reply: `Thought: … Action: {json}` or `Final Answer: …`,
//! as small models actually write it.

use kb_chains::parse_json;
use serde_json::{Map, Value};

/// What one model reply asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// Call `tool` with `args`.
    Action {
        /// The reasoning before the action, possibly empty.
        thought: String,
        /// The tool's name as the model wrote it.
        tool: String,
        /// The arguments (an object, or a bare string for one-argument tools).
        args: Value,
    },
    /// The task is done.
    Final {
        /// The reasoning before the answer, possibly empty.
        thought: String,
        /// The answer.
        answer: String,
    },
}

const ACTION: &[&str] = &["action:", "行动：", "行动:"];
const ACTION_INPUT: &[&str] = &["action input:", "行动输入：", "行动输入:"];
const FINAL: &[&str] = &["final answer:", "最终答案：", "最终答案:"];
const TOOL_KEYS: &[&str] = &["tool", "name", "action", "function", "tool_name"];
const ARG_KEYS: &[&str] = &[
    "args",
    "arguments",
    "action_input",
    "input",
    "parameters",
    "tool_input",
];
const FINISH_TOOLS: &[&str] = &["final_answer", "finish", "final", "answer"];

/// The first occurrence of any of `markers` in `text`, ignoring ASCII case:
/// (start, end) byte offsets of the marker.
fn find_marker(text: &str, markers: &[&str]) -> Option<(usize, usize)> {
    let lower = text.to_ascii_lowercase();
    markers
        .iter()
        .filter_map(|m| lower.find(m).map(|at| (at, at + m.len())))
        .min()
}

/// The thought: what precedes `end`, without its `Thought:` label.
fn thought(text: &str, end: usize) -> String {
    let before = text[..end].trim();
    let lower = before.to_ascii_lowercase();
    let body = match lower.rfind("thought:") {
        Some(at) => &before[at + "thought:".len()..],
        None => before.strip_prefix("思考：").unwrap_or(before),
    };
    body.trim().to_string()
}

/// Reads `text`; the error says what is wrong, for the model to fix.
pub fn parse_reply(text: &str) -> Result<Reply, String> {
    let action = find_marker(text, ACTION);
    let fin = find_marker(text, FINAL);
    match (action, fin) {
        (Some(a), Some(f)) if f.0 < a.0 => final_reply(text, f),
        (Some(a), _) => action_reply(text, a),
        (None, Some(f)) => final_reply(text, f),
        (None, None) => {
            // A bare JSON tool call, as models tuned for function calling write.
            if let Some(reply) = json_call(text, String::new()) {
                return reply;
            }
            Err("the reply has neither an \"Action:\" nor a \"Final Answer:\" line".into())
        }
    }
}

fn final_reply(text: &str, (start, end): (usize, usize)) -> Result<Reply, String> {
    let answer = text[end..].trim();
    if answer.is_empty() {
        return Err("the \"Final Answer:\" is empty".into());
    }
    Ok(Reply::Final {
        thought: thought(text, start),
        answer: answer.to_string(),
    })
}

fn action_reply(text: &str, (start, end): (usize, usize)) -> Result<Reply, String> {
    let thought = thought(text, start);
    let rest = &text[end..];
    // LangChain's classic layout: `Action: name` then `Action Input: …`.
    if let Some((input_start, input_end)) = find_marker(rest, ACTION_INPUT) {
        let tool = clean_name(&rest[..input_start]);
        if tool.is_empty() {
            return Err("the \"Action:\" line names no tool".into());
        }
        let input = rest[input_end..].trim();
        let args = parse_json::<Value>(input).unwrap_or_else(|_| Value::String(unquote(input)));
        return Ok(Reply::Action {
            thought,
            tool,
            args,
        });
    }
    if let Some(reply) = json_call(rest, thought.clone()) {
        return reply;
    }
    // `Action: calculator(2 + 3)` or `Action: calculator 2 + 3`.
    let line = rest.trim().lines().next().unwrap_or("").trim();
    if let Some(open) = line.find('(')
        && line.ends_with(')')
    {
        let tool = clean_name(&line[..open]);
        if !tool.is_empty() && !tool.contains(' ') {
            let inner = &line[open + 1..line.len() - 1];
            return Ok(Reply::Action {
                thought,
                tool,
                args: Value::String(unquote(inner)),
            });
        }
    }
    Err(format!(
        "the \"Action:\" is not a JSON object like {{\"tool\": \"…\", \"args\": {{…}}}}: {:?}",
        line.chars().take(120).collect::<String>()
    ))
}

/// A JSON object naming a tool, when `text` holds one.
fn json_call(text: &str, thought: String) -> Option<Result<Reply, String>> {
    let value: Value = parse_json(text).ok()?;
    let object = value.as_object()?;
    let tool = TOOL_KEYS
        .iter()
        .find_map(|k| object.get(*k).and_then(Value::as_str))
        .map(clean_name)?;
    let mut args = ARG_KEYS
        .iter()
        .find_map(|k| object.get(*k).cloned())
        .unwrap_or_else(|| {
            // The arguments inline: {"tool": "calculator", "expression": "2+3"}.
            let rest: Map<String, Value> = object
                .iter()
                .filter(|(k, _)| !TOOL_KEYS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Value::Object(rest)
        });
    // Arguments sent as a JSON string, as OpenAI's wire format does.
    if let Value::String(s) = &args
        && let Ok(inner @ Value::Object(_)) = serde_json::from_str::<Value>(s)
    {
        args = inner;
    }
    if FINISH_TOOLS.contains(&tool.as_str()) {
        let answer = match &args {
            Value::String(s) => s.clone(),
            Value::Object(map) => map
                .values()
                .find_map(Value::as_str)
                .map(str::to_string)
                .unwrap_or_else(|| args.to_string()),
            other => other.to_string(),
        };
        return Some(Ok(Reply::Final { thought, answer }));
    }
    Some(Ok(Reply::Action {
        thought,
        tool,
        args,
    }))
}

fn clean_name(text: &str) -> String {
    text.trim()
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .trim_matches(|c: char| matches!(c, '`' | '"' | '\'' | '*' | '[' | ']' | '.' | ':'))
        .trim()
        .to_lowercase()
}

fn unquote(text: &str) -> String {
    let t = text.trim();
    for q in ['"', '\'', '`'] {
        if t.len() >= 2 && t.starts_with(q) && t.ends_with(q) {
            return t[1..t.len() - 1].to_string();
        }
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn action(text: &str) -> (String, Value) {
        match parse_reply(text) {
            Ok(Reply::Action { tool, args, .. }) => (tool, args),
            other => panic!("{text:?} → {other:?}"),
        }
    }

    #[test]
    fn actions_as_small_models_write_them() {
        let cases = [
            (
                "Thought: add\nAction: {\"tool\": \"calculator\", \"args\": {\"expression\": \"2+3\"}}",
                json!({"expression": "2+3"}),
            ),
            (
                "Action: ```json\n{'tool': 'calculator', 'args': {'expression': '2+3'},}\n```",
                json!({"expression": "2+3"}),
            ),
            (
                "Action: {tool: calculator, args: {expression: \"2+3\"}",
                json!({"expression": "2+3"}),
            ),
            (
                "Action: calculator\nAction Input: {\"expression\": \"2+3\"}",
                json!({"expression": "2+3"}),
            ),
            ("Action: calculator\nAction Input: 2+3", json!("2+3")),
            ("Action: calculator(2+3)", json!("2+3")),
            (
                "{\"name\": \"calculator\", \"arguments\": \"{\\\"expression\\\": \\\"2+3\\\"}\"}",
                json!({"expression": "2+3"}),
            ),
            (
                "Action: {\"action\": \"Calculator\", \"expression\": \"2+3\"}",
                json!({"expression": "2+3"}),
            ),
        ];
        for (text, args) in cases {
            assert_eq!(action(text), ("calculator".to_string(), args), "{text}");
        }
    }

    #[test]
    fn final_answers_and_failures() {
        assert_eq!(
            parse_reply("Thought: I know it.\nFinal Answer: 42"),
            Ok(Reply::Final {
                thought: "I know it.".into(),
                answer: "42".into()
            })
        );
        assert_eq!(
            parse_reply("思考：知道了\n最终答案：四十二"),
            Ok(Reply::Final {
                thought: "知道了".into(),
                answer: "四十二".into()
            })
        );
        assert!(matches!(
            parse_reply("{\"tool\": \"final_answer\", \"args\": {\"answer\": \"5\"}}"),
            Ok(Reply::Final { answer, .. }) if answer == "5"
        ));
        let err = parse_reply("I think it is five.").expect_err("no markers");
        assert!(err.contains("neither"), "{err}");
        let err = parse_reply("Action: please compute it for me").expect_err("no JSON");
        assert!(err.contains("JSON object"), "{err}");
        assert!(parse_reply("Final Answer:   ").is_err());
        // The earlier marker wins.
        assert!(matches!(
            parse_reply("Final Answer: 5\nAction: {\"tool\": \"x\"}"),
            Ok(Reply::Final { .. })
        ));
    }
}
