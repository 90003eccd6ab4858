//! The client list of `sqdctl add-clients --from FILE`: TOML (`[[client]]` tables), CSV (a
//! header naming the columns) or JSON lines (one object per line), read into client specs
//! with every problem at once, each with its line number. Pure: text in, specs out.

use std::collections::HashMap;

use serde::Deserialize;

use crate::spec::{ClientSpec, IngestSpec};

/// The syntaxes a client list may be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ListFormat {
    Toml,
    Csv,
    Jsonl,
}

impl ListFormat {
    /// The format a file name's extension says, if it says one.
    pub fn of_path(path: &str) -> Option<Self> {
        let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "toml" => Some(ListFormat::Toml),
            "csv" => Some(ListFormat::Csv),
            "jsonl" | "ndjson" | "json" => Some(ListFormat::Jsonl),
            _ => None,
        }
    }
}

/// One client of the list and the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub line: usize,
    pub spec: ClientSpec,
}

/// What is wrong at a line (0: the list as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListProblem {
    pub line: usize,
    pub message: String,
}

/// The columns / keys of one client. Unknown ones are refused: a typo must not silently
/// give a client the defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Row {
    name: String,
    ssh: String,
    path: String,
    #[serde(default, alias = "key_file")]
    key: String,
    #[serde(default)]
    known_hosts: String,
    #[serde(default)]
    pattern: String,
    #[serde(default)]
    format: String,
    #[serde(default)]
    time_field: String,
    #[serde(default)]
    label_fields: Fields,
    #[serde(default)]
    precision: String,
}

/// Label fields as a list (`["host", "dc"]`) or one comma-separated text (`"host,dc"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Fields {
    List(Vec<String>),
    Text(String),
}

impl Default for Fields {
    fn default() -> Self {
        Fields::List(Vec::new())
    }
}

const COLUMNS: [&str; 11] = [
    "name",
    "ssh",
    "path",
    "key",
    "key_file",
    "known_hosts",
    "pattern",
    "format",
    "time_field",
    "label_fields",
    "precision",
];

impl Row {
    fn into_spec(self) -> ClientSpec {
        let label_fields = match self.label_fields {
            Fields::List(list) => list,
            Fields::Text(text) => text
                .split(',')
                .map(|f| f.trim().to_owned())
                .filter(|f| !f.is_empty())
                .collect(),
        };
        ClientSpec {
            name: self.name,
            ssh: self.ssh,
            path: self.path,
            key_file: self.key,
            known_hosts: self.known_hosts,
            pattern: self.pattern,
            ingest: Box::new(IngestSpec {
                format: or(self.format, "auto"),
                time_field: self.time_field,
                label_fields,
                precision: or(self.precision, "ns"),
            }),
        }
    }
}

fn or(value: String, default: &str) -> String {
    if value.is_empty() {
        default.to_owned()
    } else {
        value
    }
}

/// Reads every client of `text`, or every problem of it (syntax, unknown keys, bad specs,
/// a name twice), each with its line.
pub fn parse(text: &str, format: ListFormat) -> Result<Vec<Listed>, Vec<ListProblem>> {
    let (rows, mut problems) = match format {
        ListFormat::Toml => toml_rows(text),
        ListFormat::Csv => csv_rows(text),
        ListFormat::Jsonl => jsonl_rows(text),
    };
    let mut listed = Vec::with_capacity(rows.len());
    let mut first_line: HashMap<String, usize> = HashMap::with_capacity(rows.len());
    for (line, row) in rows {
        let spec = row.into_spec();
        problems.extend(spec.problems().into_iter().map(|message| ListProblem {
            line,
            message: format!("client {}: {message}", crate::text::clip(&spec.name)),
        }));
        if let Some(first) = first_line.get(&spec.name) {
            problems.push(ListProblem {
                line,
                message: format!(
                    "client {} is also on line {first}",
                    crate::text::clip(&spec.name)
                ),
            });
        } else {
            first_line.insert(spec.name.clone(), line);
        }
        listed.push(Listed { line, spec });
    }
    if listed.is_empty() && problems.is_empty() {
        problems.push(ListProblem {
            line: 0,
            message: "the list holds no client".to_owned(),
        });
    }
    if problems.is_empty() {
        Ok(listed)
    } else {
        problems.sort_by_key(|p| p.line);
        Err(problems)
    }
}

type Rows = (Vec<(usize, Row)>, Vec<ListProblem>);

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlList {
    #[serde(default)]
    client: Vec<toml::Spanned<toml::Table>>,
}

fn toml_rows(text: &str) -> Rows {
    let list: TomlList = match toml::from_str(text) {
        Ok(list) => list,
        Err(e) => {
            let line = e.span().map_or(0, |s| line_of(text, s.start));
            let message = format!(
                "not a TOML client list ([[client]] tables): {}",
                e.message()
            );
            return (Vec::new(), vec![ListProblem { line, message }]);
        }
    };
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for table in list.client {
        let line = line_of(text, table.span().start);
        match toml::Value::Table(table.into_inner()).try_into::<Row>() {
            Ok(row) => rows.push((line, row)),
            Err(e) => problems.push(ListProblem {
                line,
                message: e.message().to_owned(),
            }),
        }
    }
    (rows, problems)
}

fn jsonl_rows(text: &str) -> Rows {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        if raw.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Row>(raw) {
            Ok(row) => rows.push((i + 1, row)),
            Err(e) => problems.push(ListProblem {
                line: i + 1,
                message: e.to_string(),
            }),
        }
    }
    (rows, problems)
}

fn csv_rows(text: &str) -> Rows {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(text.as_bytes());
    let headers = match reader.headers() {
        Ok(h) => h.clone(),
        Err(e) => return (Vec::new(), vec![csv_problem(&e)]),
    };
    let mut problems: Vec<ListProblem> = headers
        .iter()
        .filter(|h| !COLUMNS.contains(h))
        .map(|h| ListProblem {
            line: 1,
            message: format!(
                "unknown column {:?}; the columns are {}",
                crate::text::clip(h),
                COLUMNS.join(", ")
            ),
        })
        .collect();
    if !problems.is_empty() {
        return (Vec::new(), problems);
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problems.push(csv_problem(&e));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line() as usize);
        match record.deserialize::<Row>(Some(&headers)) {
            Ok(row) => rows.push((line, row)),
            Err(e) => problems.push(ListProblem {
                line,
                message: e.to_string(),
            }),
        }
    }
    (rows, problems)
}

fn csv_problem(e: &csv::Error) -> ListProblem {
    ListProblem {
        line: e.position().map_or(0, |p| p.line() as usize),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests;
