//! Annotation templates: text with `{{ $value }}`, `{{ $threshold }}`, `{{ $rule }}` and
//! `{{ $labels.NAME }}` placeholders (spaces inside the braces optional). Nothing else: no
//! escapes, no functions — `{{` always opens a placeholder, so an unknown one or an unclosed
//! `{{` is a load error rather than text that silently stays in every alert.

use std::collections::BTreeMap;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Value,
    Threshold,
    Rule,
    Label(String),
}

/// A parsed annotation template.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("\"{{{{\" at byte {0} is not closed by \"}}}}\"")]
    Unclosed(usize),
    #[error(
        "unknown placeholder \"{{{{ {0} }}}}\" (use $value, $threshold, $rule or $labels.NAME)"
    )]
    Unknown(String),
}

/// What a template is rendered with.
pub struct Context<'a> {
    pub rule: &'a str,
    pub value: Option<f64>,
    pub threshold: f64,
    pub labels: &'a BTreeMap<String, String>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = text;
        let mut offset = 0;
        while let Some(open) = rest.find("{{") {
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let inner_start = open + 2;
            let close = rest[inner_start..]
                .find("}}")
                .ok_or(TemplateError::Unclosed(offset + open))?;
            let inner = rest[inner_start..inner_start + close].trim();
            parts.push(placeholder(inner)?);
            let consumed = inner_start + close + 2;
            offset += consumed;
            rest = &rest[consumed..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    /// The label names the template reads, so the loader can check they exist.
    pub fn label_names(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Label(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Renders the template; an absent value reads "absent", a missing label "".
    pub fn render(&self, cx: &Context<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.push_str(t),
                Part::Value => match cx.value {
                    Some(v) => out.push_str(&v.to_string()),
                    None => out.push_str("absent"),
                },
                Part::Threshold => out.push_str(&cx.threshold.to_string()),
                Part::Rule => out.push_str(cx.rule),
                Part::Label(name) => {
                    out.push_str(cx.labels.get(name).map_or("", String::as_str));
                }
            }
        }
        out
    }
}

fn placeholder(inner: &str) -> Result<Part, TemplateError> {
    let unknown = || TemplateError::Unknown(inner.chars().take(40).collect());
    match inner {
        "$value" => Ok(Part::Value),
        "$threshold" => Ok(Part::Threshold),
        "$rule" => Ok(Part::Rule),
        _ => {
            let name = inner.strip_prefix("$labels.").ok_or_else(unknown)?;
            if is_label_name(name) {
                Ok(Part::Label(name.to_owned()))
            } else {
                Err(unknown())
            }
        }
    }
}

/// Prometheus's label-name rule: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_render() {
        let labels = BTreeMap::from([("host".to_owned(), "web-1".to_owned())]);
        let t = Template::parse("{{ $labels.host }} cpu at {{$value}} > {{ $threshold }} ({{ $rule }}){{ $labels.zone }}")
            .unwrap_or_default();
        let cx = Context {
            rule: "cpu-high",
            value: Some(91.5),
            threshold: 90.0,
            labels: &labels,
        };
        assert_eq!(t.render(&cx), "web-1 cpu at 91.5 > 90 (cpu-high)");
        assert_eq!(t.label_names().collect::<Vec<_>>(), ["host", "zone"]);
        let absent = Context { value: None, ..cx };
        assert!(t.render(&absent).contains("cpu at absent"));
    }

    #[test]
    fn unknown_and_unclosed_placeholders_are_errors() {
        assert_eq!(
            Template::parse("x {{ $value"),
            Err(TemplateError::Unclosed(2))
        );
        for bad in [
            "{{ $labels }}",
            "{{ value }}",
            "{{ $labels.a-b }}",
            "{{}}",
            "{{ .Value }}",
        ] {
            assert!(
                matches!(Template::parse(bad), Err(TemplateError::Unknown(_))),
                "{bad}"
            );
        }
        assert_eq!(
            Template::parse("plain } { text").map(|t| t.parts.len()),
            Ok(1)
        );
    }
}
