//! The small TOML subset the shim's option files use: top-level
//! `key = value` lines with strings (basic and literal), integers and
//! booleans, `#` comments and blank lines. A table header is accepted only
//! when nothing follows it that the shim reads, so a file that puts the
//! options under `[options]` (as CRI's runtime config does) also works: the
//! keys of every table are merged.
//!
//! Hand-written rather than a dependency: the files hold a dozen flat keys,
//! and the shim stays small (its resident size is per container).

use std::collections::BTreeMap;

/// A parsed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// A parse error with its 1-based line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("line {line}: {msg}")]
pub struct ParseError {
    pub line: usize,
    pub msg: String,
}

/// Parse `text` into its keys (table names dropped).
pub fn parse(text: &str) -> Result<BTreeMap<String, Value>, ParseError> {
    let mut out = BTreeMap::new();
    for (i, raw) in text.lines().enumerate() {
        let err = |msg: String| ParseError { line: i + 1, msg };
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with('[') {
            let body = strip_comment(line);
            if !body.ends_with(']') {
                return Err(err(format!("bad table header {line:?}")));
            }
            continue;
        }
        let (key, rest) = line
            .split_once('=')
            .ok_or_else(|| err(format!("expected `key = value`, got {line:?}")))?;
        let key = key.trim().trim_matches('"').to_owned();
        if key.is_empty() {
            return Err(err("empty key".into()));
        }
        let value = parse_value(rest.trim()).map_err(err)?;
        out.insert(key, value);
    }
    Ok(out)
}

/// `s` without a trailing `# comment` (outside quotes).
fn strip_comment(s: &str) -> &str {
    let mut quote = None;
    for (i, c) in s.char_indices() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (c, Some(q)) if c == q => quote = None,
            ('#', None) => return s[..i].trim_end(),
            _ => {}
        }
    }
    s.trim_end()
}

fn parse_value(s: &str) -> Result<Value, String> {
    if let Some(body) = s.strip_prefix('\'') {
        let end = body
            .find('\'')
            .ok_or_else(|| format!("unterminated string {s:?}"))?;
        trailing(&body[end + 1..])?;
        return Ok(Value::Str(body[..end].to_owned()));
    }
    if let Some(body) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    trailing(&body[i + 1..])?;
                    return Ok(Value::Str(out));
                }
                '\\' => {
                    let (_, e) = chars
                        .next()
                        .ok_or_else(|| format!("unterminated string {s:?}"))?;
                    out.push(match e {
                        'n' => '\n',
                        't' => '\t',
                        'r' => '\r',
                        '"' => '"',
                        '\\' => '\\',
                        other => return Err(format!("unsupported escape \\{other} in {s:?}")),
                    });
                }
                c => out.push(c),
            }
        }
        return Err(format!("unterminated string {s:?}"));
    }
    let v = strip_comment(s);
    match v {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        _ => {}
    }
    v.replace('_', "")
        .parse::<i64>()
        .map(Value::Int)
        .map_err(|_| format!("unsupported value {v:?} (strings, integers and booleans only)"))
}

fn trailing(rest: &str) -> Result<(), String> {
    let rest = strip_comment(rest.trim());
    if rest.is_empty() {
        Ok(())
    } else {
        Err(format!("unexpected {rest:?} after value"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_comments_tables() {
        let m = parse(
            "# runtime options\nBinaryName = \"/usr/bin/runc\" # trailing\n\
             Root='/run/x#y'\n[options]\nSystemdCgroup = true\nIoUid = 1_000\n\"quoted\" = \"a\\\"b\\n\"\n",
        )
        .unwrap();
        assert_eq!(m["BinaryName"], Value::Str("/usr/bin/runc".into()));
        assert_eq!(m["Root"], Value::Str("/run/x#y".into()));
        assert_eq!(m["SystemdCgroup"], Value::Bool(true));
        assert_eq!(m["IoUid"], Value::Int(1000));
        assert_eq!(m["quoted"], Value::Str("a\"b\n".into()));
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(parse("a = 1\nnot a pair\n").unwrap_err().line, 2);
        assert!(parse("a = \"open").is_err());
        assert!(parse("a = [1, 2]").is_err());
        assert!(parse("a = \"x\" y").is_err());
        assert!(parse("[broken").is_err());
        assert!(parse(" = 1").is_err());
    }
}
