//! Compose's variable interpolation, as the compose specification defines it: `$VAR`, `${VAR}`,
//! `${VAR:-default}` and `${VAR-default}`, `${VAR:?error}` and `${VAR?error}`, `${VAR:+replacement}`
//! and `${VAR+replacement}`, and `$$` for a literal `$`. Defaults and replacements are interpolated
//! too (`${A:-${B}}`). Values come from the environment, then from the `.env` file beside the compose
//! file. An unset variable without a default is empty, with one warning naming it, as docker-compose
//! does; `?` forms stop the load with their message.
//!
//! The model's string types (`model::Text`, `model::Scalar`) interpolate as they are read, so a
//! malformed reference is an error at its line. The variables in force are set for the length of one
//! read (`with`).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Where variables come from, and what was warned about.
#[derive(Debug, Default)]
pub(crate) struct Variables {
    env: BTreeMap<String, String>,
    /// Variables used while unset, without a default: warned about once each.
    pub unset: BTreeSet<String>,
}

impl Variables {
    /// The process environment over the `.env` file at `dot_env` (when there is one).
    pub(crate) fn load(dot_env: &Path) -> Result<Variables, String> {
        let mut env = match std::fs::read_to_string(dot_env) {
            Ok(text) => parse_dot_env(&text).map_err(|e| format!("{}: {e}", dot_env.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(format!("cannot read {}: {e}", dot_env.display())),
        };
        env.extend(std::env::vars());
        Ok(Variables {
            env,
            unset: BTreeSet::new(),
        })
    }

    #[cfg(test)]
    pub(crate) fn of(pairs: &[(&str, &str)]) -> Variables {
        Variables {
            env: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            unset: BTreeSet::new(),
        }
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.env.get(name).map(String::as_str)
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Variables>> = const { RefCell::new(None) };
}

/// Runs `read` with `variables` in force for the strings it deserializes; returns what it returned
/// and the variables (with the unset ones it used).
pub(crate) fn with<T>(variables: Variables, read: impl FnOnce() -> T) -> (T, Variables) {
    CURRENT.with(|c| *c.borrow_mut() = Some(variables));
    let out = read();
    let variables = CURRENT.with(|c| c.borrow_mut().take()).unwrap_or_default();
    (out, variables)
}

/// Interpolates `text` with the variables in force (as it is, when none are: outside a compose read).
pub(crate) fn current(text: &str) -> Result<String, String> {
    CURRENT.with(|c| match c.borrow_mut().as_mut() {
        Some(variables) => interpolate(text, variables),
        None => Ok(text.to_string()),
    })
}

/// `text` with every reference replaced.
pub(crate) fn interpolate(text: &str, vars: &mut Variables) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('{') {
            let end = closing_brace(inner).ok_or_else(|| invalid(text))?;
            out.push_str(&braced(&inner[..end], text, vars)?);
            rest = &inner[end + 1..];
        } else {
            let len = name_len(after);
            if len == 0 {
                return Err(invalid(text));
            }
            out.push_str(&lookup(&after[..len], vars));
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// The index of the `}` closing a `${`, counting nested `${...}`.
fn closing_brace(inner: &str) -> Option<usize> {
    let mut depth = 0usize;
    let bytes = inner.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'$' if bytes.get(i + 1) == Some(&b'{') => {
                depth += 1;
                i += 1;
            }
            b'}' if depth == 0 => return Some(i),
            b'}' => depth -= 1,
            _ => {}
        }
        i += 1;
    }
    None
}

/// The length of a variable name at the start of `text`: `[A-Za-z_][A-Za-z0-9_]*`.
fn name_len(text: &str) -> usize {
    let mut chars = text.char_indices();
    match chars.next() {
        Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return 0,
    }
    chars
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || *c == '_'))
        .map_or(text.len(), |(i, _)| i)
}

/// What `${body}` stands for.
fn braced(body: &str, whole: &str, vars: &mut Variables) -> Result<String, String> {
    let len = name_len(body);
    if len == 0 {
        return Err(invalid(whole));
    }
    let (name, op) = body.split_at(len);
    let value = vars.get(name).map(str::to_string);
    let set = value.is_some();
    let non_empty = value.as_deref().is_some_and(|v| !v.is_empty());
    let word = |vars: &mut Variables, from: usize| interpolate(&op[from..], vars);
    Ok(match op.as_bytes() {
        [] => lookup(name, vars),
        [b':', b'-', ..] => match non_empty {
            true => value.unwrap_or_default(),
            false => word(vars, 2)?,
        },
        [b'-', ..] => match set {
            true => value.unwrap_or_default(),
            false => word(vars, 1)?,
        },
        [b':', b'?', ..] if !non_empty => return Err(required(name, &word(vars, 2)?)),
        [b'?', ..] if !set => return Err(required(name, &word(vars, 1)?)),
        [b':', b'?', ..] | [b'?', ..] => value.unwrap_or_default(),
        [b':', b'+', ..] => match non_empty {
            true => word(vars, 2)?,
            false => String::new(),
        },
        [b'+', ..] => match set {
            true => word(vars, 1)?,
            false => String::new(),
        },
        _ => return Err(invalid(whole)),
    })
}

fn lookup(name: &str, vars: &mut Variables) -> String {
    match vars.get(name) {
        Some(value) => value.to_string(),
        None => {
            vars.unset.insert(name.to_string());
            String::new()
        }
    }
}

fn required(name: &str, message: &str) -> String {
    if message.is_empty() {
        format!("required variable {name} is missing a value")
    } else {
        format!("required variable {name} is missing a value: {message}")
    }
}

fn invalid(text: &str) -> String {
    format!("invalid interpolation format in {text:?}; write a literal `$` as `$$`")
}

/// A `.env` file: `KEY=VALUE` lines, `#` comments and blank lines, an optional `export `, values
/// optionally in single quotes (taken as they are) or double quotes (with `\n` and `\"`).
pub(crate) fn parse_dot_env(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE", n + 1));
        };
        let key = key.trim();
        if name_len(key) != key.len() {
            return Err(format!("line {}: `{key}` is not a variable name", n + 1));
        }
        let value = value.trim();
        let value =
            if let Some(quoted) = value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
                quoted.to_string()
            } else if let Some(quoted) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                quoted.replace("\\n", "\n").replace("\\\"", "\"")
            } else {
                // An unquoted value ends at ` #`, a comment.
                value
                    .split(" #")
                    .next()
                    .unwrap_or("")
                    .trim_end()
                    .to_string()
            };
        out.insert(key.to_string(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(text: &str, vars: &[(&str, &str)]) -> Result<String, String> {
        interpolate(text, &mut Variables::of(vars))
    }

    /// The examples of the compose specification's "Interpolation" section.
    #[test]
    fn the_specifications_forms() {
        let vars = [("SET", "value"), ("EMPTY", "")];
        assert_eq!(run("$SET ${SET}", &vars).unwrap(), "value value");
        assert_eq!(
            run("${SET:-d} ${EMPTY:-d} ${UNSET:-d}", &vars).unwrap(),
            "value d d"
        );
        assert_eq!(
            run("${SET-d} ${EMPTY-d} ${UNSET-d}", &vars).unwrap(),
            "value  d"
        );
        assert_eq!(
            run("${SET:+r} ${EMPTY:+r} ${UNSET:+r}", &vars).unwrap(),
            "r  "
        );
        assert_eq!(
            run("${SET+r} ${EMPTY+r} ${UNSET+r}", &vars).unwrap(),
            "r r "
        );
        assert_eq!(run("${SET:?no} ${SET?no}", &vars).unwrap(), "value value");
        assert!(
            run("${EMPTY:?must be set}", &vars)
                .unwrap_err()
                .contains("must be set")
        );
        assert_eq!(run("${EMPTY?x}", &vars).unwrap(), "");
        assert!(run("${UNSET?gone}", &vars).unwrap_err().contains("UNSET"));
        assert_eq!(run("$$SET $${SET}", &vars).unwrap(), "$SET ${SET}");
        assert_eq!(run("${UNSET:-${SET}}", &vars).unwrap(), "value");
        assert_eq!(run("postgres:${TAG:-15}", &vars).unwrap(), "postgres:15");
        assert_eq!(run("a$SET-b", &vars).unwrap(), "avalue-b");
    }

    #[test]
    fn unset_variables_are_empty_and_named() {
        let mut vars = Variables::of(&[]);
        assert_eq!(interpolate("x${A}y$B", &mut vars).unwrap(), "xy");
        assert_eq!(vars.unset.iter().collect::<Vec<_>>(), ["A", "B"]);
    }

    #[test]
    fn malformed_references_are_errors() {
        for bad in ["${", "${}", "${1X}", "$ x", "${A:x}", "${A"] {
            assert!(run(bad, &[]).is_err(), "{bad}");
        }
    }

    #[test]
    fn dot_env_files_read_as_compose_reads_them() {
        let env = parse_dot_env(
            "# comment\n\nTAG=15\nexport USER_NAME=app\nQ='a b #c'\nD=\"x\\ny\"\nC=v # note\n",
        )
        .unwrap();
        assert_eq!(env["TAG"], "15");
        assert_eq!(env["USER_NAME"], "app");
        assert_eq!(env["Q"], "a b #c");
        assert_eq!(env["D"], "x\ny");
        assert_eq!(env["C"], "v");
        assert!(parse_dot_env("nokey\n").is_err());
    }
}
