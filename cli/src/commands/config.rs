//! `kb config show`.

use std::io::Write;

use anyhow::Result;

use crate::config::Config;

pub fn show(config: &Config, json: bool, out: &mut impl Write) -> Result<()> {
    if json {
        serde_json::to_writer_pretty(&mut *out, config)?;
        writeln!(out)?;
        return Ok(());
    }
    let rows = config.rows();
    let width = rows
        .iter()
        .map(|(_, value, _)| value.len())
        .max()
        .unwrap_or(0);
    for (key, value, source) in rows {
        writeln!(out, "{key:<9} {value:<width$}  ({source})")?;
    }
    match &config.file {
        Some(file) => writeln!(out, "\nconfig file: {}", file.display())?,
        None => writeln!(
            out,
            "\nconfig file: none ({} does not exist)",
            config.kb_dir.value.join("kb.toml").display()
        )?,
    }
    Ok(())
}
