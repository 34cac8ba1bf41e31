//! Configuration files as option sources: naming them (`--yaml FILE[:SECTION]`,
//! `--ini FILE[:SECTION]`, or a bare `FILE.yml`/`.yaml`/`.ini`), reading them, and
//! turning the entries of the chosen section into options that carry their file and
//! line.
//!
//! This is the I/O half; the dialects themselves are the pure parsers in
//! [`yaml`] and [`ini`], which share [`Entry`] and
//! [`ParseError`]. Includes inside files (uWSGI's `ini = other.ini`) are not
//! supported: every file is named on the command line, so the order of sources is
//! visible in one place.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use super::options::{ConfigOption, Origin};
use super::placeholders::{FileContext, RawOption};
use super::{ini, yaml, ConfigError, SyntaxProblem};

/// The section read when none is named, as in uWSGI.
pub const DEFAULT_SECTION: &str = "uwsgi";

/// One `key: value` pair of the chosen section, or one item of a YAML list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The option name.
    pub key: String,
    /// The value as written (unquoted for YAML), placeholders not yet expanded.
    pub value: String,
    /// The 1-based line it was read from.
    pub line: usize,
}

/// Why a file's text gave no entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// A line breaks the dialect.
    Syntax {
        /// The 1-based line.
        line: usize,
        /// What is wrong with it.
        problem: SyntaxProblem,
    },
    /// The section is not in the file.
    MissingSection {
        /// The sections (top-level keys) the file has instead.
        found: Vec<String>,
    },
}

/// A configuration file's dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// uWSGI's YAML ([`yaml`]).
    Yaml,
    /// uWSGI's INI ([`ini`]).
    Ini,
}

/// A file to read options from, and which section of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSource {
    /// Its dialect.
    pub format: Format,
    /// The file, as named.
    pub path: PathBuf,
    /// The section to read.
    pub section: String,
}

impl FileSource {
    /// The argument of `--yaml` or `--ini`: `FILE` or `FILE:SECTION`. A name that is
    /// an existing file is taken whole, even with a colon in it.
    pub fn from_flag(format: Format, arg: &str) -> FileSource {
        let whole = || FileSource { format, path: PathBuf::from(arg), section: DEFAULT_SECTION.to_owned() };
        if Path::new(arg).is_file() {
            return whole();
        }
        match arg.rsplit_once(':') {
            Some((path, section)) if !path.is_empty() && !section.is_empty() && !section.contains('/') => {
                FileSource { format, path: PathBuf::from(path), section: section.to_owned() }
            }
            _ => whole(),
        }
    }

    /// A bare command-line argument naming a file by its extension (`.yml`, `.yaml`,
    /// `.ini`); its default section is read.
    pub fn from_extension(arg: &str) -> Option<FileSource> {
        let ext = Path::new(arg).extension()?.to_str()?;
        let format = match ext {
            "yml" | "yaml" => Format::Yaml,
            "ini" => Format::Ini,
            _ => return None,
        };
        Some(FileSource { format, path: PathBuf::from(arg), section: DEFAULT_SECTION.to_owned() })
    }

    /// Reads the file and returns the options of its section, in order, each with its
    /// file and line. `given_at` is where the command line named the file.
    pub(crate) fn load(&self, given_at: &Origin) -> Result<Vec<RawOption>, ConfigError> {
        let text = std::fs::read_to_string(&self.path).map_err(|source| ConfigError::ReadFile {
            path: self.path.clone(),
            origin: given_at.clone(),
            source,
        })?;
        let entries = self.parse(&text)?;
        // uWSGI's %d and %p use the real path; the file was just read, so it exists.
        let absolute = std::fs::canonicalize(&self.path)
            .or_else(|_| std::path::absolute(&self.path))
            .unwrap_or_else(|_| self.path.clone());
        let context = Rc::new(FileContext::new(absolute));
        Ok(entries
            .into_iter()
            .map(|e| RawOption {
                option: ConfigOption {
                    key: e.key,
                    value: e.value,
                    origin: Origin::File { path: self.path.clone(), line: e.line },
                },
                file: Some(Rc::clone(&context)),
            })
            .collect())
    }

    /// Parses the text of this file; errors name the file (and line).
    pub fn parse(&self, text: &str) -> Result<Vec<Entry>, ConfigError> {
        let parsed = match self.format {
            Format::Yaml => yaml::parse_section(text, &self.section),
            Format::Ini => ini::parse_section(text, &self.section),
        };
        parsed.map_err(|e| match e {
            ParseError::Syntax { line, problem } => {
                ConfigError::Syntax { origin: Origin::File { path: self.path.clone(), line }, problem }
            }
            ParseError::MissingSection { found } => ConfigError::MissingSection {
                path: self.path.clone(),
                section: self.section.clone(),
                format: self.format,
                found,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn naming_files() {
        let s = FileSource::from_flag(Format::Yaml, "config/galaxy.yml:other");
        assert_eq!((s.path.to_str(), s.section.as_str()), (Some("config/galaxy.yml"), "other"));
        let s = FileSource::from_flag(Format::Ini, "/etc/app.ini");
        assert_eq!((s.path.to_str(), s.section.as_str()), (Some("/etc/app.ini"), "uwsgi"));
        let s = FileSource::from_flag(Format::Ini, "C:/odd/name.ini");
        assert_eq!(s.section, "uwsgi");
        assert_eq!(FileSource::from_extension("a/b.yaml").map(|s| s.format), Some(Format::Yaml));
        assert_eq!(FileSource::from_extension("b.ini").map(|s| s.format), Some(Format::Ini));
        assert_eq!(FileSource::from_extension("b.yml:section"), None);
        assert_eq!(FileSource::from_extension("b.toml"), None);
    }

    #[test]
    fn errors_name_the_file() {
        let s = FileSource::from_flag(Format::Yaml, "x.yml");
        let e = s.parse("uwsgi:\n  a: b\n   c: d\n").unwrap_err().to_string();
        assert!(e.starts_with("x.yml:3: bad indentation"), "{e}");
        let e = s.parse("galaxy:\n  a: b\n").unwrap_err().to_string();
        assert!(e.contains("x.yml") && e.contains("uwsgi:") && e.contains("galaxy"), "{e}");
        let e = FileSource::from_flag(Format::Ini, "x.ini").load(&Origin::CommandLine(2)).unwrap_err().to_string();
        assert!(e.contains("x.ini") && e.contains("argument 2"), "{e}");
    }
}
