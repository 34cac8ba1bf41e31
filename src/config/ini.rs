//! A parser for INI files in uWSGI's dialect: entries of one `[section]` (`[uwsgi]` by
//! default).
//!
//! The dialect, as uWSGI's `core/ini.c` reads it:
//!
//! * Sections with the same name merge, in file order.
//! * `key = value` is split at the **first** `=`; key and value lose surrounding
//!   spaces, tabs and CR. A bare `key` line means the empty value (true for flags).
//! * Comments are whole lines starting with `;` or `#`; there are no inline comments
//!   (`processes = 1 ; x` keeps `1 ; x`) and no quoting (quotes stay in the value).
//! * Lines before the first section header belong to no section and are skipped.
//!
//! Knowing differences: a section header without `]` and a line `= value` without a
//! key are errors with the line number (uWSGI guesses), and a missing section is an
//! error (uWSGI only warns).
//!
//! The parser is pure: text in, entries or an error with a line number out.

use super::files::{Entry, ParseError};
use super::SyntaxProblem;

/// Reads the entries of every `[section]` of an INI text.
pub fn parse_section(text: &str, section: &str) -> Result<Vec<Entry>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut entries = Vec::new();
    let mut found: Vec<String> = Vec::new();
    let mut seen = false;
    let mut inside = false;
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.trim_matches([' ', '\t', '\r']);
        if content.is_empty() || content.starts_with([';', '#']) {
            continue;
        }
        if let Some(header) = content.strip_prefix('[') {
            let Some(name) = header.strip_suffix(']') else {
                return Err(ParseError::Syntax { line, problem: SyntaxProblem::UnclosedHeader });
            };
            let name = name.trim();
            inside = name == section;
            seen |= inside;
            if !inside && !found.iter().any(|f| f == name) {
                found.push(name.to_owned());
            }
            continue;
        }
        if !inside {
            continue;
        }
        let (key, value) = match content.split_once('=') {
            Some((k, v)) => (k.trim_matches([' ', '\t', '\r']), v.trim_matches([' ', '\t', '\r'])),
            None => (content, ""),
        };
        if key.is_empty() {
            return Err(ParseError::Syntax { line, problem: SyntaxProblem::EmptyKey });
        }
        entries.push(Entry { key: key.to_owned(), value: value.to_owned(), line });
    }
    if seen {
        Ok(entries)
    } else {
        Err(ParseError::MissingSection { found })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str, section: &str) -> Vec<String> {
        parse_section(text, section).unwrap().into_iter().map(|e| format!("{}={}@{}", e.key, e.value, e.line)).collect()
    }

    #[test]
    fn sections_merge_and_keys_repeat() {
        let text = "top = ignored\n[uwsgi]\nhttp = :1\n; comment\n  # comment\n[other]\nhttp = :9\n[uwsgi]\r\nhttp=:2\r\nmaster\nprocesses = 1 ; not a comment\nA = \"quoted\"\nenv = X=a=b\n";
        assert_eq!(
            pairs(text, "uwsgi"),
            [
                "http=:1@3",
                "http=:2@9",
                "master=@10",
                "processes=1 ; not a comment@11",
                "A=\"quoted\"@12",
                "env=X=a=b@13"
            ]
        );
        assert_eq!(pairs(text, "other"), ["http=:9@7"]);
    }

    #[test]
    fn errors_name_the_line_or_the_sections() {
        assert_eq!(
            parse_section("[uwsgi\nhttp = :1\n", "uwsgi"),
            Err(ParseError::Syntax { line: 1, problem: SyntaxProblem::UnclosedHeader })
        );
        assert_eq!(
            parse_section("[uwsgi]\n = x\n", "uwsgi"),
            Err(ParseError::Syntax { line: 2, problem: SyntaxProblem::EmptyKey })
        );
        assert_eq!(
            parse_section("[app]\na = b\n[app]\n[db]\n", "uwsgi"),
            Err(ParseError::MissingSection { found: vec!["app".into(), "db".into()] })
        );
        assert_eq!(parse_section("[uwsgi]\n", "uwsgi"), Ok(Vec::new()));
    }
}
