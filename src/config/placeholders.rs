//! Placeholders in option values, as uWSGI expands them, with one knowing difference.
//!
//! * In values read from a file, `%d` (the file's folder, with a trailing slash),
//!   `%p` (the file's absolute path), `%s` (its name), `%n` (its name without the
//!   extension), `%c` (the name of its folder) and `%%` (a `%`). uWSGI knows more
//!   letters and silently replaces an unknown one with nothing (`a%2Fb` becomes
//!   `aFb`); here **any other `%x` is an error** naming the file and line, because a
//!   silently mangled path is worse than a refusal. Command-line values are the
//!   shell's business: there these letters stay as they are.
//! * Everywhere, `$(NAME)`: the environment variable NAME; an unset one is left
//!   verbatim, as uWSGI does.
//! * Everywhere, `%(name)`: the **first** value of option `name` in the whole list
//!   (uWSGI's rule), itself expanded, or a name defined with
//!   `set-placeholder = name=value`. An unknown name is left verbatim (log formats
//!   use `%(…)` for their own purposes); arithmetic such as `%(a + 1)` and cycles
//!   are errors.
//!
//! Values are scanned once, left to right, so text produced by an expansion is
//! never expanded again (`%%(x)` is the literal `%(x)`; uWSGI, which expands in
//! passes, would expand it).
//!
//! [`pieces`] is the pure scanner; the crate-internal `resolve` applies it to a
//! whole option list.

use std::path::PathBuf;
use std::rc::Rc;

use super::options::{ConfigOption, OptionList};
use super::ConfigError;

/// The file a value was read from, for the `%d`-style placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContext {
    path: PathBuf,
}

impl FileContext {
    /// A context for the file at `absolute_path` (made absolute by the caller, as
    /// uWSGI uses the real path).
    pub fn new(absolute_path: PathBuf) -> Self {
        FileContext { path: absolute_path }
    }

    /// The value of the magic variable `%letter`, if this dialect knows it.
    pub fn magic(&self, letter: char) -> Option<String> {
        let lossy = |p: &std::path::Path| p.to_string_lossy().into_owned();
        match letter {
            'd' => {
                let mut dir = self.path.parent().map(lossy).unwrap_or_default();
                if !dir.ends_with('/') {
                    dir.push('/');
                }
                Some(dir)
            }
            'p' => Some(lossy(&self.path)),
            's' => Some(self.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
            'n' => Some(self.path.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()),
            'c' => Some(
                self.path
                    .parent()
                    .and_then(|d| d.file_name())
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            ),
            _ => None,
        }
    }
}

/// A value cut at its `%(name)` references, everything else already expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// A `%(name)` reference to another option or placeholder.
    Option(String),
}

/// What is wrong with a placeholder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaceholderError {
    /// A `%x` this dialect does not know.
    #[error(
        "unknown placeholder `%{0}` (known: %d %p %s %n %c %% %(option) $(ENV); write %% for a literal %); \
         uWSGI would silently replace it with nothing"
    )]
    UnknownMagic(char),
    /// `%(a + 1)`.
    #[error("`%({0})`: arithmetic in placeholders is not supported")]
    Arithmetic(String),
    /// `%(a)` needs `a`, which needs itself.
    #[error("`%({0})` refers back to itself through other placeholders")]
    Cycle(String),
    /// References nested deeper than [`MAX_DEPTH`].
    #[error("placeholders nested more than {MAX_DEPTH} deep")]
    TooDeep,
}

/// How deeply `%(a)` → `%(b)` → … may nest; far beyond any real configuration,
/// low enough to keep the recursion off the end of the stack.
pub const MAX_DEPTH: usize = 64;

/// Scans one value: expands `%x` magic (only when `file` is given) and `$(ENV)`, and
/// cuts out the `%(name)` references, which are resolved once the whole list is read.
pub fn pieces(
    value: &str,
    file: Option<&FileContext>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<Piece>, PlaceholderError> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut rest = value;
    while let Some(c) = rest.chars().next() {
        let after = &rest[c.len_utf8()..];
        if c == '%' {
            if let Some(inner) = after.strip_prefix('(') {
                if let Some(end) = inner.find(')') {
                    let name = &inner[..end];
                    if name.contains(char::is_whitespace) {
                        return Err(PlaceholderError::Arithmetic(name.to_owned()));
                    }
                    if !name.is_empty() {
                        if !text.is_empty() {
                            out.push(Piece::Text(std::mem::take(&mut text)));
                        }
                        out.push(Piece::Option(name.to_owned()));
                        rest = &inner[end + 1..];
                        continue;
                    }
                }
            } else if let (Some(file), Some(letter)) = (file, after.chars().next()) {
                if letter == '%' {
                    text.push('%');
                } else {
                    text.push_str(&file.magic(letter).ok_or(PlaceholderError::UnknownMagic(letter))?);
                }
                rest = &after[letter.len_utf8()..];
                continue;
            }
        } else if c == '$' {
            if let Some(inner) = after.strip_prefix('(') {
                if let Some(end) = inner.find(')') {
                    match env(&inner[..end]) {
                        Some(v) => text.push_str(&v),
                        None => text.push_str(&rest[..end + 3]),
                    }
                    rest = &inner[end + 1..];
                    continue;
                }
            }
        }
        text.push(c);
        rest = after;
    }
    if !text.is_empty() || out.is_empty() {
        out.push(Piece::Text(text));
    }
    Ok(out)
}

/// An option as a source read it, before placeholders are expanded.
#[derive(Debug, Clone)]
pub(crate) struct RawOption {
    /// The option, value still raw.
    pub(crate) option: ConfigOption,
    /// The file it came from; `None` for the command line.
    pub(crate) file: Option<Rc<FileContext>>,
}

/// Expands every placeholder of the list, giving the effective option list.
pub(crate) fn resolve(raw: Vec<RawOption>, env: &dyn Fn(&str) -> Option<String>) -> Result<OptionList, ConfigError> {
    let mut all_pieces = Vec::with_capacity(raw.len());
    for r in &raw {
        let p = pieces(&r.option.value, r.file.as_deref(), env)
            .map_err(|problem| ConfigError::Placeholder { origin: r.option.origin.clone(), problem })?;
        all_pieces.push(p);
    }
    let options: Vec<ConfigOption> = raw.into_iter().map(|r| r.option).collect();
    let mut resolver =
        Resolver { options: &options, pieces: all_pieces, state: vec![State::Todo; options.len()], depth: 0 };
    let mut values = Vec::with_capacity(options.len());
    for i in 0..options.len() {
        values.push(resolver.value(i)?);
    }
    Ok(OptionList(options.iter().zip(values).map(|(o, value)| ConfigOption { value, ..o.clone() }).collect()))
}

#[derive(Debug, Clone)]
enum State {
    Todo,
    Busy,
    Done(String),
}

/// Expands values on demand, so that `%(name)` sees the first `name` fully expanded
/// wherever it sits in the list.
struct Resolver<'a> {
    options: &'a [ConfigOption],
    pieces: Vec<Vec<Piece>>,
    state: Vec<State>,
    depth: usize,
}

impl Resolver<'_> {
    fn value(&mut self, i: usize) -> Result<String, ConfigError> {
        let fail = |problem| ConfigError::Placeholder { origin: self.options[i].origin.clone(), problem };
        match &self.state[i] {
            State::Done(v) => return Ok(v.clone()),
            State::Busy => return Err(fail(PlaceholderError::Cycle(self.options[i].key.clone()))),
            State::Todo => {}
        }
        if self.depth >= MAX_DEPTH {
            return Err(fail(PlaceholderError::TooDeep));
        }
        self.state[i] = State::Busy;
        self.depth += 1;
        let mut out = String::new();
        for piece in self.pieces[i].clone() {
            match piece {
                Piece::Text(t) => out.push_str(&t),
                Piece::Option(name) => match self.lookup(&name)? {
                    Some(v) => out.push_str(&v),
                    None => {
                        out.push_str("%(");
                        out.push_str(&name);
                        out.push(')');
                    }
                },
            }
        }
        self.depth -= 1;
        self.state[i] = State::Done(out.clone());
        Ok(out)
    }

    /// The first option called `name`, else the first `set-placeholder = name=…`.
    fn lookup(&mut self, name: &str) -> Result<Option<String>, ConfigError> {
        if let Some(j) = self.options.iter().position(|o| o.key == name) {
            return self.value(j).map(Some);
        }
        for j in 0..self.options.len() {
            if !matches!(self.options[j].key.as_str(), "set-placeholder" | "set-ph") {
                continue;
            }
            // The name is the literal text before `=`: names hold no placeholders,
            // so a definition is found without expanding the others (no false cycles).
            let defines = match self.pieces[j].first() {
                Some(Piece::Text(t)) => t.split_once('=').is_some_and(|(n, _)| n.trim() == name),
                _ => false,
            };
            if defines {
                let full = self.value(j)?;
                return Ok(full.split_once('=').map(|(_, v)| v.trim().to_owned()));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::options::Origin;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn file() -> FileContext {
        FileContext::new("/srv/galaxy/config/galaxy.yml".into())
    }

    fn text(value: &str, file: Option<&FileContext>) -> Result<String, PlaceholderError> {
        let env = |k: &str| (k == "HOME").then(|| "/home/g".to_string());
        Ok(pieces(value, file, &env)?
            .into_iter()
            .map(|p| match p {
                Piece::Text(t) => t,
                Piece::Option(n) => format!("<{n}>"),
            })
            .collect())
    }

    #[test]
    fn file_magic() {
        let f = file();
        assert_eq!(text("%dstatic", Some(&f)).unwrap(), "/srv/galaxy/config/static");
        assert_eq!(text("%p|%s|%n|%c", Some(&f)).unwrap(), "/srv/galaxy/config/galaxy.yml|galaxy.yml|galaxy|config");
        assert_eq!(text("100%% of %(processes) and %%(x)", Some(&f)).unwrap(), "100% of <processes> and %(x)");
        assert_eq!(text("trailing %", Some(&f)).unwrap(), "trailing %");
        assert_eq!(FileContext::new("/x.ini".into()).magic('d').unwrap(), "/");
    }

    #[test]
    fn unknown_magic_is_an_error_in_files_only() {
        assert_eq!(text("a%2Fb", Some(&file())), Err(PlaceholderError::UnknownMagic('2')));
        assert_eq!(text("%h", Some(&file())), Err(PlaceholderError::UnknownMagic('h')));
        assert_eq!(text("a%2Fb %d", None).unwrap(), "a%2Fb %d");
        assert!(PlaceholderError::UnknownMagic('2').to_string().contains("`%2`"));
    }

    #[test]
    fn environment_and_references() {
        assert_eq!(text("$(HOME)/x $(NOPE) $(", None).unwrap(), "/home/g/x $(NOPE) $(");
        assert_eq!(text("%(a)%(b)c %() %(", None).unwrap(), "<a><b>c %() %(");
        assert_eq!(text("%(a + 1)", None), Err(PlaceholderError::Arithmetic("a + 1".into())));
        assert_eq!(pieces("", None, &no_env).unwrap(), [Piece::Text(String::new())]);
    }

    fn raw(entries: &[(&str, &str)]) -> Vec<RawOption> {
        entries
            .iter()
            .enumerate()
            .map(|(i, (k, v))| RawOption {
                option: ConfigOption { key: k.to_string(), value: v.to_string(), origin: Origin::CommandLine(i + 1) },
                file: None,
            })
            .collect()
    }

    fn resolved(entries: &[(&str, &str)]) -> Result<Vec<String>, ConfigError> {
        Ok(resolve(raw(entries), &no_env)?.0.into_iter().map(|o| o.value).collect())
    }

    #[test]
    fn references_take_the_first_value_expanded() {
        let v = resolved(&[
            ("zerg-server", "%(base)/zerg.sock"),
            ("set-placeholder", "base=%(root)/run"),
            ("set-ph", "root = /srv"),
            ("http", ":1"),
            ("http", ":2"),
            ("static-map", "/h=%(http)"),
            ("logformat-like", "%(uri) %(status)"),
        ])
        .unwrap();
        assert_eq!(v, ["/srv/run/zerg.sock", "base=/srv/run", "root = /srv", ":1", ":2", "/h=:1", "%(uri) %(status)"]);
    }

    #[test]
    fn cycles_are_errors_with_an_origin() {
        let e = resolved(&[("http", ":1"), ("listen", "%(buffer-size)"), ("buffer-size", "%(listen)")]).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Placeholder { problem: PlaceholderError::Cycle(k), .. } if k == "listen"),
            "{e}"
        );
        assert!(e.to_string().contains("argument 2"), "{e}");
        let long: Vec<(String, String)> = (0..200).map(|i| (format!("k{i}"), format!("%(k{})", i + 1))).collect();
        let long: Vec<(&str, &str)> = long.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert!(matches!(resolved(&long), Err(ConfigError::Placeholder { problem: PlaceholderError::TooDeep, .. })));
    }
}
