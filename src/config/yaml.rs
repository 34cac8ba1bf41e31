//! A line parser for YAML as operators write it for uWSGI: one top-level section
//! (`uwsgi:` by default) of `key: value` lines, read out of a larger document.
//!
//! # Why a line parser and not a YAML library
//!
//! uWSGI configurations repeat keys to give lists (`static-map:` twice,
//! `hook-master-start:` twice, as in Galaxy's `galaxy.yml`), and the order of the
//! repetitions matters. Standard YAML forbids duplicate keys, so `serde_yaml` (also
//! deprecated) and friends refuse or collapse them; an event-level parser would keep
//! them, but would also accept every YAML feature uWSGI never reads. The dialect is
//! small, so this module reads it line by line and rejects the rest precisely.
//!
//! # The dialect
//!
//! * Only the first top-level key equal to the requested section is read; other
//!   top-level keys (Galaxy's `galaxy:` block) and their contents are skipped. The
//!   section appearing twice is an error (uWSGI would silently read the first).
//! * Inside it, every `key: value` line sits at the same indentation. Repeated keys
//!   are kept, in order.
//! * Values are scalars: plain, `'single'` (`''` is a quote) or `"double"` quoted
//!   (common backslash escapes); quotes are removed, as libyaml-based uWSGI does.
//! * A `key:` line followed by `- item` lines (indented deeper, or at the key's own
//!   indentation as YAML allows), or `key: [a, b]`, gives one entry per item.
//!   `key:` with nothing after it is the empty value (true for flags).
//! * `#` starts a comment at the start of a line or after whitespace, outside quotes.
//!   `---`, `...` and `%` directives at column 0 are understood.
//! * Rejected with the line number: tabs or uneven indentation, nested mappings,
//!   multi-line values, block scalars (`|`, `>`), flow mappings, anchors, aliases
//!   and tags. Plain values may contain `: ` and may start with `%` or `@`, which
//!   strict YAML refuses: this dialect is a superset there.
//!
//! The parser is pure: text in, entries or an error with a line number out.

use super::files::{Entry, ParseError};
use super::SyntaxProblem;

fn syntax(line: usize, problem: SyntaxProblem) -> ParseError {
    ParseError::Syntax { line, problem }
}

/// Reads the entries of the top-level section `section` of a YAML document.
pub fn parse_section(text: &str, section: &str) -> Result<Vec<Entry>, ParseError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    let mut entries: Option<Vec<Entry>> = None;
    let mut header_line = 0;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        i += 1;
        if is_blank_or_comment(line) || line.starts_with([' ', '\t']) {
            continue;
        }
        if line == "..." || line.starts_with("... ") {
            break;
        }
        if line.starts_with("---") || line.starts_with('%') {
            continue;
        }
        let content = strip_comment(line).trim_end();
        let Some((key, rest)) = split_key(content) else {
            continue;
        };
        if key != section {
            found.push(key.to_owned());
            continue;
        }
        if entries.is_some() {
            return Err(syntax(i, SyntaxProblem::SectionTwice { section: section.to_owned(), first: header_line }));
        }
        if !rest.is_empty() {
            return Err(syntax(i, SyntaxProblem::SectionNotBlock { section: section.to_owned() }));
        }
        header_line = i;
        let (body, next) = read_body(&lines, i)?;
        entries = Some(body);
        i = next;
    }
    entries.ok_or(ParseError::MissingSection { found })
}

/// Reads the indented block that starts at index `start` (the line after the section
/// header); returns its entries and the index of the first line after it.
fn read_body(lines: &[&str], start: usize) -> Result<(Vec<Entry>, usize), ParseError> {
    let mut entries = Vec::new();
    let mut key_indent: Option<usize> = None;
    // The last `key:` line without a value: the owner of the `- item` lines below it.
    let mut owner: Option<ListOwner> = None;
    let mut i = start;
    while i < lines.len() {
        let line = lines[i];
        let number = i + 1;
        if is_blank_or_comment(line) {
            i += 1;
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            if owner.is_some() && list_item(strip_comment(line).trim_end()).is_some() {
                let expected = key_indent.unwrap_or(0);
                return Err(syntax(number, SyntaxProblem::BadIndentation { found: 0, expected }));
            }
            break;
        }
        i += 1;
        let indent = line.len() - line.trim_start_matches(' ').len();
        if line[indent..].starts_with('\t') {
            return Err(syntax(number, SyntaxProblem::TabIndentation));
        }
        let rest = strip_comment(&line[indent..]).trim_end();
        let expected = *key_indent.get_or_insert(indent);
        if let Some(item) = list_item(rest) {
            let Some(o) = owner.as_mut() else {
                return Err(if indent == expected {
                    syntax(number, SyntaxProblem::ListWithoutKey)
                } else {
                    syntax(number, SyntaxProblem::BadIndentation { found: indent, expected })
                });
            };
            let item_indent = *o.item_indent.get_or_insert(indent);
            if indent != item_indent || indent < expected {
                return Err(syntax(number, SyntaxProblem::BadIndentation { found: indent, expected: item_indent }));
            }
            if list_item(item).is_some() {
                return Err(syntax(number, SyntaxProblem::Unsupported("a list inside a list")));
            }
            let value = scalar(item, number)?;
            if item_looks_like_mapping(item) {
                return Err(syntax(number, SyntaxProblem::Unsupported("a mapping inside a list")));
            }
            o.items += 1;
            entries.push(Entry { key: o.key.clone(), value, line: number });
            continue;
        }
        if indent != expected {
            return Err(syntax(number, SyntaxProblem::BadIndentation { found: indent, expected }));
        }
        if let Some(o) = owner.take() {
            o.finish(&mut entries);
        }
        let Some((key, value)) = split_key(rest) else {
            return Err(syntax(number, SyntaxProblem::NotAKey));
        };
        if key.is_empty() {
            return Err(syntax(number, SyntaxProblem::EmptyKey));
        }
        if value.is_empty() {
            owner = Some(ListOwner { key: key.to_owned(), line: number, item_indent: None, items: 0 });
        } else if let Some(flow) = value.strip_prefix('[') {
            for item in flow_list(flow, number)? {
                entries.push(Entry { key: key.to_owned(), value: item, line: number });
            }
        } else {
            entries.push(Entry { key: key.to_owned(), value: scalar(value, number)?, line: number });
        }
    }
    if let Some(o) = owner.take() {
        o.finish(&mut entries);
    }
    Ok((entries, i))
}

/// A `key:` line waiting for its `- item` lines.
struct ListOwner {
    key: String,
    line: usize,
    item_indent: Option<usize>,
    items: usize,
}

impl ListOwner {
    /// A `key:` with no items is the empty value, as in libyaml.
    fn finish(self, entries: &mut Vec<Entry>) {
        if self.items == 0 {
            entries.push(Entry { key: self.key, value: String::new(), line: self.line });
        }
    }
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// Removes a comment: `#` at the start or after a blank, outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut skip = false;
    let mut prev_blank = true;
    for (at, c) in line.char_indices() {
        if skip {
            skip = false;
            continue;
        }
        match quote {
            Some('"') if c == '\\' => skip = true,
            Some('\'') if c == '\'' && line[at + 1..].starts_with('\'') => skip = true,
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '#' && prev_blank => return &line[..at],
            None if (c == '"' || c == '\'') && opens_quote(line, at) => quote = Some(c),
            None => {}
        }
        prev_blank = c == ' ' || c == '\t';
    }
    line
}

/// Whether a quote at byte `at` opens a quoted scalar: it must start the value, a
/// list item or a flow item.
fn opens_quote(line: &str, at: usize) -> bool {
    match line[..at].trim_end_matches([' ', '\t']).chars().last() {
        None => true,
        Some(c) => matches!(c, ':' | '-' | '[' | ','),
    }
}

/// `- item` → `Some("item")`; `-` alone → `Some("")`; anything else → `None`.
fn list_item(rest: &str) -> Option<&str> {
    if rest == "-" {
        return Some("");
    }
    rest.strip_prefix("- ").or_else(|| rest.strip_prefix("-\t")).map(str::trim_start)
}

/// A plain list item that is really a YAML mapping (`- key: value`).
fn item_looks_like_mapping(item: &str) -> bool {
    !item.starts_with(['"', '\'']) && split_key(item).is_some_and(|(_, v)| !v.is_empty())
}

/// Splits `key: value` at the first `:` followed by a blank or the end of the line.
fn split_key(content: &str) -> Option<(&str, &str)> {
    let bytes = content.as_bytes();
    let mut from = 0;
    while let Some(off) = content[from..].find(':') {
        let at = from + off;
        match bytes.get(at + 1) {
            None | Some(b' ') | Some(b'\t') => return Some((content[..at].trim_end(), content[at + 1..].trim())),
            Some(_) => from = at + 1,
        }
    }
    None
}

/// Reads one scalar value (comment already removed, start trimmed).
fn scalar(value: &str, line: usize) -> Result<String, ParseError> {
    let value = value.trim();
    match value.chars().next() {
        None => Ok(String::new()),
        Some('"') => quoted(value, '"', line),
        Some('\'') => quoted(value, '\'', line),
        Some('|' | '>') => Err(syntax(line, SyntaxProblem::Unsupported("a block scalar (| or >)"))),
        Some('{') => Err(syntax(line, SyntaxProblem::Unsupported("a flow mapping ({…})"))),
        Some('[') => Err(syntax(line, SyntaxProblem::Unsupported("a list here"))),
        Some('&' | '*' | '!') => {
            Err(syntax(line, SyntaxProblem::Unsupported("an anchor, alias or tag (quote the value if it is text)")))
        }
        Some(_) => Ok(value.to_owned()),
    }
}

/// Reads a quoted scalar that must make up the whole of `value`.
fn quoted(value: &str, q: char, line: usize) -> Result<String, ParseError> {
    let (text, used) = quoted_prefix(value, q, line)?;
    if !value[used..].trim().is_empty() {
        return Err(syntax(line, SyntaxProblem::AfterQuote));
    }
    Ok(text)
}

/// Reads the quoted scalar at the start of `value`; returns it and the bytes used.
fn quoted_prefix(value: &str, q: char, line: usize) -> Result<(String, usize), ParseError> {
    let mut out = String::new();
    let mut chars = value.char_indices().skip(1);
    while let Some((at, c)) = chars.next() {
        if c == q {
            if q == '\'' && value[at + 1..].starts_with('\'') {
                chars.next();
                out.push('\'');
                continue;
            }
            return Ok((out, at + 1));
        }
        if q == '"' && c == '\\' {
            let Some((_, e)) = chars.next() else { break };
            let decoded = match e {
                '\\' => '\\',
                '"' => '"',
                '/' => '/',
                ' ' => ' ',
                'n' => '\n',
                't' => '\t',
                'r' => '\r',
                '0' => '\0',
                'e' => '\u{1b}',
                'x' | 'u' | 'U' => {
                    let len = match e {
                        'x' => 2,
                        'u' => 4,
                        _ => 8,
                    };
                    let digits: String = chars.by_ref().take(len).map(|(_, d)| d).collect();
                    u32::from_str_radix(&digits, 16)
                        .ok()
                        .filter(|_| digits.len() == len)
                        .and_then(char::from_u32)
                        .ok_or_else(|| syntax(line, SyntaxProblem::BadEscape(format!("\\{e}{digits}"))))?
                }
                other => return Err(syntax(line, SyntaxProblem::BadEscape(format!("\\{other}")))),
            };
            out.push(decoded);
            continue;
        }
        out.push(c);
    }
    Err(syntax(line, SyntaxProblem::UnterminatedQuote))
}

/// Reads the items of `[a, "b", c]` (the text after `[`); the list must close on
/// the same line.
fn flow_list(after_bracket: &str, line: usize) -> Result<Vec<String>, ParseError> {
    let mut items = Vec::new();
    let mut rest = after_bracket.trim_start();
    loop {
        if let Some(after) = rest.strip_prefix(']') {
            if !after.trim().is_empty() {
                return Err(syntax(line, SyntaxProblem::AfterQuote));
            }
            return Ok(items);
        }
        let (item, used) = match rest.chars().next() {
            None => return Err(syntax(line, SyntaxProblem::Unsupported("a list spanning several lines"))),
            Some(q @ ('"' | '\'')) => quoted_prefix(rest, q, line)?,
            Some('[' | '{') => return Err(syntax(line, SyntaxProblem::Unsupported("a nested collection"))),
            Some(_) => {
                let end = rest.find([',', ']']).unwrap_or(rest.len());
                (scalar(&rest[..end], line)?, end)
            }
        };
        items.push(item);
        rest = rest[used..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after.trim_start();
        } else if !rest.starts_with(']') {
            if rest.is_empty() {
                return Err(syntax(line, SyntaxProblem::Unsupported("a list spanning several lines")));
            }
            return Err(syntax(line, SyntaxProblem::AfterQuote));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(text: &str, section: &str) -> Vec<(String, String, usize)> {
        parse_section(text, section).unwrap().into_iter().map(|e| (e.key, e.value, e.line)).collect()
    }

    fn problem(text: &str) -> (usize, SyntaxProblem) {
        match parse_section(text, "uwsgi") {
            Err(ParseError::Syntax { line, problem }) => (line, problem),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    const GALAXY: &str = "\
# Galaxy's configuration
galaxy:
  database_connection: postgresql:///galaxy
  admin_users: 'admin@example.org'
  uwsgi: not this one
uwsgi:

    # listening options
    http: :8080
    static-map: /static/style=static/style/blue
    static-map: /static=static   # two of them
    master: true
    hook-master-start:
      - unix_signal:2 gracefully_kill_them_all
      - \"unix_signal:15 gracefully_kill_them_all\"
    mule:
    farm: job-handlers:1
other:
  http: :9999
";

    #[test]
    fn reads_only_the_section_keeping_repeats_in_order() {
        let p = pairs(GALAXY, "uwsgi");
        let expect = [
            ("http", ":8080", 9),
            ("static-map", "/static/style=static/style/blue", 10),
            ("static-map", "/static=static", 11),
            ("master", "true", 12),
            ("hook-master-start", "unix_signal:2 gracefully_kill_them_all", 14),
            ("hook-master-start", "unix_signal:15 gracefully_kill_them_all", 15),
            ("mule", "", 16),
            ("farm", "job-handlers:1", 17),
        ];
        let expect: Vec<_> = expect.iter().map(|(k, v, l)| (k.to_string(), v.to_string(), *l)).collect();
        assert_eq!(p, expect);
        assert_eq!(pairs(GALAXY, "other"), [("http".to_string(), ":9999".to_string(), 19)]);
    }

    #[test]
    fn scalars_lose_their_quotes() {
        let p = pairs(
            "uwsgi:\n  a: \"x # y\"\n  b: 'it''s'\n  c: \"tab\\there\\u00e9\"\n  d: a#b\n  e: ''\n  f: [one, 'two, three', \"4\"]  # c\n  g: []\n",
            "uwsgi",
        );
        let values: Vec<_> = p.iter().map(|(k, v, _)| format!("{k}={v}")).collect();
        assert_eq!(values, ["a=x # y", "b=it's", "c=tab\there\u{e9}", "d=a#b", "e=", "f=one", "f=two, three", "f=4"]);
    }

    #[test]
    fn list_items_at_the_keys_indentation() {
        let p = pairs("---\nuwsgi:\n  socket:\n  - :1\n  - ':2'\n  http: :3\n...\nuwsgi:\n", "uwsgi");
        let values: Vec<_> = p.iter().map(|(k, v, l)| format!("{k}={v}@{l}")).collect();
        assert_eq!(values, ["socket=:1@4", "socket=:2@5", "http=:3@6"]);
    }

    #[test]
    fn missing_section_lists_what_is_there() {
        assert_eq!(
            parse_section("galaxy:\n  a: b\n# uwsgi:\nother: 1\n", "uwsgi"),
            Err(ParseError::MissingSection { found: vec!["galaxy".into(), "other".into()] })
        );
    }

    #[test]
    fn bad_indentation_names_the_line() {
        assert_eq!(
            problem("uwsgi:\n  http: :1\n   listen: 5\n"),
            (3, SyntaxProblem::BadIndentation { found: 3, expected: 2 })
        );
        assert_eq!(
            problem("uwsgi:\n    http: :1\n  listen: 5\n"),
            (3, SyntaxProblem::BadIndentation { found: 2, expected: 4 })
        );
        assert_eq!(problem("uwsgi:\n  a:\n    b: c\n"), (3, SyntaxProblem::BadIndentation { found: 4, expected: 2 }));
        assert_eq!(problem("uwsgi:\n  a:\n- b\n"), (3, SyntaxProblem::BadIndentation { found: 0, expected: 2 }));
        assert_eq!(problem("uwsgi:\n  a:\n    - x\n   - y\n").0, 4);
        assert_eq!(problem("uwsgi:\n\thttp: :1\n"), (2, SyntaxProblem::TabIndentation));
        assert_eq!(problem("uwsgi:\n  - x\n"), (2, SyntaxProblem::ListWithoutKey));
        assert_eq!(problem("uwsgi:\n  http: a\n    continued\n").0, 3);
    }

    #[test]
    fn unsupported_yaml_is_named() {
        for (text, line) in [
            ("uwsgi:\n  a: |\n", 2),
            ("uwsgi:\n  a: {b: c}\n", 2),
            ("uwsgi:\n  a: &x b\n", 2),
            ("uwsgi:\n  a:\n    - b: c\n", 3),
            ("uwsgi:\n  a: [b,\n", 2),
            ("uwsgi:\n  a: \"open\n", 2),
            ("uwsgi:\n  a: \"x\" y\n", 2),
            ("uwsgi:\n  a: \"\\q\"\n", 2),
            ("uwsgi:\n  just words\n", 2),
            ("uwsgi: {}\n", 1),
            ("uwsgi:\n  a: b\nuwsgi:\n  c: d\n", 3),
        ] {
            assert_eq!(problem(text).0, line, "{text:?}");
        }
    }

    #[test]
    fn cannot_panic_on_truncations() {
        for end in 0..=GALAXY.len() {
            if GALAXY.is_char_boundary(end) {
                let _ = parse_section(&GALAXY[..end], "uwsgi");
            }
        }
    }
}
