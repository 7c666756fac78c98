//! The calculator tool on arbitrary expressions (deep nesting, huge numbers,
//! division by zero): a number or an error, never a panic or a stack
//! overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(value) = kb_agents::tools::evaluate(&text) {
        let _ = kb_agents::tools::format_number(value);
    }
});
