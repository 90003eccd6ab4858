//! Format detection for `Format::Auto`: by file extension, then by the first line.
//!
//! Extensions (any case): `.prom` → Prometheus; `.influx`, `.lp`, `.line` → line protocol;
//! `.jsonl`, `.ndjson`, `.json` → JSON lines (a pretty-printed multi-line `.json` document
//! is not supported: its lines are errors); `.csv` → CSV. Any other name (`.txt`,
//! collectd's extension-less `cpu-idle-2026-12-02`, …) is decided by content: the first
//! non-blank line after a BOM, skipping `#` comment lines except Prometheus's `# HELP` and
//! `# TYPE`:
//! - `# HELP …` / `# TYPE …` → Prometheus; `{` → JSON lines;
//! - `name{…} value…` or `name value [ts]` with a numeric value → Prometheus;
//! - a first space-separated token followed by a token holding `=` → line protocol;
//! - a line with `,` and no `=`/`{` whose first cell is not a number → CSV (its header);
//! - anything else → `Format::None` (files only, no samples, no errors).

use super::Format;

/// Chooses a format from the file name and the first bytes of the file.
pub fn detect(file_name: &[u8], head: &[u8]) -> Format {
    by_extension(file_name).unwrap_or_else(|| by_content(head))
}

fn by_extension(file_name: &[u8]) -> Option<Format> {
    let dot = file_name.iter().rposition(|&b| b == b'.')?;
    let ext = &file_name[dot + 1..];
    let table: [(&[u8], Format); 8] = [
        (b"prom", Format::Prom),
        (b"influx", Format::Influx),
        (b"lp", Format::Influx),
        (b"line", Format::Influx),
        (b"jsonl", Format::Jsonl),
        (b"ndjson", Format::Jsonl),
        (b"json", Format::Jsonl),
        (b"csv", Format::Csv),
    ];
    table
        .iter()
        .find(|(e, _)| ext.eq_ignore_ascii_case(e))
        .map(|(_, f)| *f)
}

fn by_content(head: &[u8]) -> Format {
    let head = head.strip_prefix(b"\xef\xbb\xbf").unwrap_or(head);
    for line in head.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() {
            continue;
        }
        if line.starts_with(b"# HELP ") || line.starts_with(b"# TYPE ") {
            return Format::Prom;
        }
        if line.starts_with(b"#") {
            continue;
        }
        return by_line(line);
    }
    Format::None
}

fn is_number(tok: &[u8]) -> bool {
    std::str::from_utf8(tok).is_ok_and(|t| t.parse::<f64>().is_ok())
}

fn by_line(line: &[u8]) -> Format {
    if line.starts_with(b"{") {
        return Format::Jsonl;
    }
    let mut toks = line
        .split(|&b| b == b' ' || b == b'\t')
        .filter(|t| !t.is_empty());
    let first = toks.next().unwrap_or_default();
    let rest: Vec<&[u8]> = toks.collect();
    let prom_name = |t: &[u8]| {
        !t.is_empty()
            && t.iter()
                .all(|&b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
    };
    if let Some(brace) = first.iter().position(|&b| b == b'{')
        && prom_name(&first[..brace])
    {
        return Format::Prom;
    }
    if prom_name(first) && (1..=2).contains(&rest.len()) && is_number(rest[0]) {
        return Format::Prom;
    }
    if rest.first().is_some_and(|t| t.contains(&b'=')) {
        return Format::Influx;
    }
    let first_cell = line
        .split(|&b| b == b',')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if line.contains(&b',') && !line.contains(&b'=') && !is_number(first_cell) {
        return Format::Csv;
    }
    Format::None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_name_then_content() {
        assert_eq!(detect(b"node.PROM", b""), Format::Prom);
        assert_eq!(detect(b"x.lp", b"{"), Format::Influx);
        assert_eq!(detect(b"x.ndjson", b""), Format::Jsonl);
        assert_eq!(detect(b"a.b.csv", b""), Format::Csv);
        let c = |s: &[u8]| detect(b"stats.txt", s);
        assert_eq!(c(b"\xef\xbb\xbf\n# HELP x y\n"), Format::Prom);
        assert_eq!(c(b"# just a comment\nup 1\n"), Format::Prom);
        assert_eq!(c(b"up{job=\"x\"} 1 2\n"), Format::Prom);
        assert_eq!(c(b"  {\"ts\":1}\n"), Format::Jsonl);
        assert_eq!(c(b"cpu,host=a usage=1 123\n"), Format::Influx);
        assert_eq!(c(b"mem used=1i\n"), Format::Influx);
        assert_eq!(
            detect(b"cpu-idle-2026-12-02", b"epoch,value\n1,2\n"),
            Format::Csv
        );
        assert_eq!(c(b"1,2,3\n"), Format::None);
        assert_eq!(c(b"hello world\n"), Format::None);
        assert_eq!(c(b""), Format::None);
        assert_eq!(c(b"\xff\xfe"), Format::None);
    }
}
