//! A binary's TOML configuration file: read from `--config` or the default path (missing there
//! is fine: everything has a default), errors naming the line and column.

use std::path::Path;

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// `at` is `path:line:column` (or the path alone when the parser gave no position).
    #[error("invalid config file {at}: {reason}")]
    Invalid { at: String, reason: String },
}

/// Reads the file `explicit` names (missing: an error), or `default` if it exists.
pub fn load<T: DeserializeOwned + Default>(
    explicit: Option<&Path>,
    default: &Path,
) -> Result<T, ConfigError> {
    let path = explicit.unwrap_or(default);
    match std::fs::read_to_string(path) {
        Ok(text) => parse(path, &text),
        Err(e) if explicit.is_none() && e.kind() == std::io::ErrorKind::NotFound => {
            Ok(T::default())
        }
        Err(source) => Err(ConfigError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Parses `text`, the contents of `path` (named in errors with the line and column).
pub fn parse<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Invalid {
        at: position(path, text, e.span()),
        reason: e.message().trim().replace('\n', "; "),
    })
}

/// `path:line:column` of the start of `span` in `text` (1-based, column in characters).
pub fn position(path: &Path, text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return path.display().to_string();
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{}:{line}:{column}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        name: Option<String>,
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let e = parse::<Sample>(Path::new("s.toml"), "\n  nmae = \"x\"\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("invalid config file s.toml:2:3: "),
            "{e}"
        );
        let ok: Sample = parse(Path::new("s.toml"), "name = \"x\"").unwrap();
        assert_eq!(ok.name.as_deref(), Some("x"));
    }

    #[test]
    fn a_missing_default_is_the_default_and_a_missing_explicit_file_an_error() {
        let missing = Path::new("/nonexistent/x.toml");
        assert_eq!(load::<Sample>(None, missing).unwrap(), Sample::default());
        let e = load::<Sample>(Some(missing), missing).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.toml"), "{e}");
    }
}
