//! One module per command group; each renders to the writer it is given.

pub mod agent;
pub mod ask;
pub mod config;
pub mod embed;
pub mod eval;
pub mod generate;
pub mod kb;
pub mod models;

/// The text of a positional argument, read from standard input when it is
/// `-` or missing; an error names `what` when it is blank.
pub fn argument_or_stdin(arg: Option<&str>, what: &str) -> anyhow::Result<String> {
    use anyhow::Context;
    use std::io::Read;
    let text = match arg {
        Some("-") | None => {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .with_context(|| format!("reading the {what} from standard input"))?;
            text
        }
        Some(text) => text.to_string(),
    };
    if text.trim().is_empty() {
        anyhow::bail!("the {what} is empty: give it as an argument or on standard input");
    }
    Ok(text)
}

/// `1234567` → `1.2 MB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::human_size;

    #[test]
    fn sizes_are_human() {
        assert_eq!(human_size(612), "612 B");
        assert_eq!(human_size(98_362_432), "98.4 MB");
    }
}
