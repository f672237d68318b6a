//! An `export` value of a service: text with `{host}`, `{name}`, `{port:N}` (N a container port the
//! service publishes) and, for a service that isolates, `{database}` (the database of whoever reads it). `{{` and `}}` stand for braces. Parsed when the config is loaded, so a typo is an
//! error before anything starts; rendered once the service's host and ports are known.

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    Text(String),
    Host,
    Name,
    Port(u16),
    Database,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template(pub Vec<Piece>);

impl Template {
    /// Parses `text`; `ports` are the container ports `{port:N}` may name; `{database}` is known when
    /// the service `isolates`.
    pub(crate) fn parse(text: &str, ports: &[u16], isolates: bool) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(['{', '}']) {
            literal.push_str(&rest[..at]);
            let tail = &rest[at..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                literal.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            if tail.starts_with('}') {
                return Err(format!("{text:?}: a lone `}}` (write `}}}}` for a brace)"));
            }
            let end = tail
                .find('}')
                .ok_or_else(|| format!("{text:?}: `{{` is not closed"))?;
            let piece = match &tail[1..end] {
                "host" => Piece::Host,
                "name" => Piece::Name,
                "database" if isolates => Piece::Database,
                "database" => {
                    return Err(format!(
                        "{text:?}: `{{database}}` is the database of whoever reads the export; it needs \
                         `isolate` on the service"
                    ));
                }
                other => match other.strip_prefix("port:").map(str::parse::<u16>) {
                    Some(Ok(port)) if ports.contains(&port) => Piece::Port(port),
                    Some(Ok(port)) => {
                        return Err(format!(
                            "{text:?}: `{{port:{port}}}` names a port the service does not publish; add {port} to its `ports`"
                        ));
                    }
                    _ => {
                        return Err(format!(
                            "{text:?}: unknown placeholder `{{{other}}}` (known: {{host}}, {{name}}, {{port:N}}, {{database}})"
                        ));
                    }
                },
            };
            if !literal.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut literal)));
            }
            pieces.push(piece);
            rest = &tail[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Text(literal));
        }
        Ok(Template(pieces))
    }

    /// Whether it names `{database}`: it has a value only for a reader that has a database.
    pub(crate) fn needs_database(&self) -> bool {
        self.0.contains(&Piece::Database)
    }

    /// The text, with `host`, `name`, the published host port of each container port and the reader's
    /// `database` (empty without one).
    pub(crate) fn render(
        &self,
        host: &str,
        name: &str,
        port: impl Fn(u16) -> Option<u16>,
        database: Option<&str>,
    ) -> String {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Host => out.push_str(host),
                Piece::Name => out.push_str(name),
                Piece::Database => out.push_str(database.unwrap_or_default()),
                Piece::Port(p) => match port(*p) {
                    Some(published) => out.push_str(&published.to_string()),
                    None => out.push_str(&p.to_string()),
                },
            }
        }
        out
    }
}

impl std::fmt::Display for Template {
    /// The template as written (braces escaped again).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => f.write_str(&t.replace('{', "{{").replace('}', "}}"))?,
                Piece::Host => f.write_str("{host}")?,
                Piece::Name => f.write_str("{name}")?,
                Piece::Database => f.write_str("{database}")?,
                Piece::Port(p) => write!(f, "{{port:{p}}}")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_database_is_the_readers() {
        let t = Template::parse(
            "postgres://postgres@{host}:{port:5432}/{database}",
            &[5432],
            true,
        )
        .unwrap();
        assert!(t.needs_database());
        let out = t.render("h", "db", |_| Some(5), Some("cleantest_3"));
        assert_eq!(out, "postgres://postgres@h:5/cleantest_3");
        assert_eq!(
            t.to_string(),
            "postgres://postgres@{host}:{port:5432}/{database}"
        );
    }

    #[test]
    fn placeholders_render_and_braces_escape() {
        let t = Template::parse(
            "postgres://u@{host}:{port:5432}/{name}?x={{y}}",
            &[5432],
            false,
        )
        .unwrap();
        let out = t.render("127.0.0.1", "db", |p| (p == 5432).then_some(49153), None);
        assert_eq!(out, "postgres://u@127.0.0.1:49153/db?x={y}");
        assert_eq!(
            t.to_string(),
            "postgres://u@{host}:{port:5432}/{name}?x={{y}}"
        );
    }

    #[test]
    fn a_bad_template_is_an_error_naming_the_problem() {
        for (text, says) in [
            ("{hots}", "unknown placeholder"),
            ("{port:6379}", "add 6379"),
            ("{port:x}", "unknown placeholder"),
            ("{host", "not closed"),
            ("a}b", "lone"),
            ("/{database}", "needs `isolate`"),
        ] {
            let err = Template::parse(text, &[5432], false).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }
}
