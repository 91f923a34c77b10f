//! Reading model configurations from files: JSON or TOML of a config struct, DeepSDF `specs.json`
//! ([`crate::deepsdf::DeepSdfConfig::from_specs`]) and RenderNet's original config JSON
//! ([`crate::rendernet::RenderNetConfig::from_original`]).

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Config files are small; anything larger is not a config and is refused before reading.
const MAX_CONFIG_BYTES: u64 = 16 << 20;

/// Why a configuration could not be read or used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than any configuration.
    #[error("config {path} is {size} bytes, more than the {MAX_CONFIG_BYTES} a config may have")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The text is not valid JSON for the expected structure.
    #[error("config {what} is not valid: {source}")]
    Json {
        /// The file or document.
        what: String,
        /// The parse error (with line and column).
        source: serde_json::Error,
    },
    /// The text is not valid TOML for the expected structure.
    #[error("config {what} is not valid: {source}")]
    Toml {
        /// The file or document.
        what: String,
        /// The parse error (with line and column).
        source: toml::de::Error,
    },
    /// A field is missing or has the wrong type.
    #[error("config {what}: field `{field}` {problem}")]
    Field {
        /// The file or document.
        what: String,
        /// The field.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The values are inconsistent (e.g. sizes the architecture cannot take).
    #[error("{0}")]
    Invalid(String),
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] with this message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid(message.into())
    }

    pub(crate) fn field(what: &str, field: &str, problem: impl Into<String>) -> Self {
        Self::Field {
            what: what.to_string(),
            field: field.to_string(),
            problem: problem.into(),
        }
    }
}

/// Reads a whole config file as text, refusing files over 16 MiB.
pub fn read_text(path: &Path) -> Result<String, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
            size,
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

/// Parses JSON text into `T`; `what` names the document in errors.
pub fn parse_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, ConfigError> {
    serde_json::from_str(text).map_err(|source| ConfigError::Json {
        what: what.to_string(),
        source,
    })
}

/// Whether `path` names a TOML file (by its extension); everything else is read as JSON.
pub fn is_toml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
}

/// Reads a config struct from a TOML (`.toml`) or JSON (any other extension) file, with serde's
/// field names.
pub fn read_struct<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = read_text(path)?;
    let what = path.display().to_string();
    if is_toml(path) {
        toml::from_str(&text).map_err(|source| ConfigError::Toml { what, source })
    } else {
        parse_json(&text, &what)
    }
}
