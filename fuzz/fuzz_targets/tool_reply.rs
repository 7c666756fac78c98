//! The agent's reply parser (tool calls in JSON, repaired when the model
//! gets it slightly wrong) and the JSON output parser on arbitrary model
//! output: a value or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = kb_agents::parse_reply(&text);
    let _ = kb_chains::parse_json::<serde_json::Value>(&text);
    let _ = kb_chains::parse_list(&text);
});
