use super::*;

fn lines(problems: &[ListProblem]) -> Vec<usize> {
    problems.iter().map(|p| p.line).collect()
}

#[test]
fn toml_list_reads_every_client_with_its_line() {
    let text = r#"
[[client]]
name = "web-1"
ssh = "stats@web-1"
path = "/var/stats"

[[client]]
name = "web-2"
ssh = "stats@web-2:2222"
path = "/var/stats"
format = "jsonl"
label_fields = ["host", "dc"]
"#;
    let listed = parse(text, ListFormat::Toml).expect("valid list");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].line, 2);
    assert_eq!(listed[1].line, 7);
    assert_eq!(listed[0].spec.ingest.format, "auto");
    assert_eq!(listed[0].spec.ingest.precision, "ns");
    assert_eq!(listed[1].spec.ingest.label_fields, vec!["host", "dc"]);
}

#[test]
fn toml_problems_come_all_at_once() {
    let text = r#"[[client]]
name = "a"
ssh = "u@h"
path = "/p"

[[client]]
name = "b"
path = "/p"
colour = "red"

[[client]]
name = "a"
ssh = "u@-oProxyCommand=x"
path = "relative"
"#;
    let problems = parse(text, ListFormat::Toml).expect_err("two bad entries");
    assert_eq!(lines(&problems), vec![6, 11, 11, 11], "{problems:?}");
    assert!(problems[0].message.contains("colour"), "{problems:?}");
    let on_11: Vec<&str> = problems[1..].iter().map(|p| p.message.as_str()).collect();
    assert!(
        on_11.iter().any(|m| m.contains("also on line 1")),
        "{on_11:?}"
    );
    assert!(
        on_11.iter().any(|m| m.contains("host starting with '-'")),
        "{on_11:?}"
    );
    assert!(on_11.iter().any(|m| m.contains("absolute")), "{on_11:?}");
}

#[test]
fn toml_syntax_error_names_its_line() {
    let problems = parse("[[client]]\nname = \"a\nssh = 1\n", ListFormat::Toml).unwrap_err();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, 2, "{problems:?}");
}

#[test]
fn csv_with_quoted_label_fields() {
    let text = "name,ssh,path,format,label_fields\n\
                web-1,stats@web-1,/var/stats,csv,\"host,dc\"\n\
                web-2,stats@web-2,/var/stats,,\n";
    let listed = parse(text, ListFormat::Csv).expect("valid csv");
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0].line, 2);
    assert_eq!(listed[0].spec.ingest.label_fields, vec!["host", "dc"]);
    assert_eq!(listed[1].spec.ingest.format, "auto");
    assert!(listed[1].spec.ingest.label_fields.is_empty());
}

#[test]
fn csv_unknown_column_and_short_rows_are_named() {
    let problems = parse("name,ssh,path,colour\na,u@h,/p,red\n", ListFormat::Csv).unwrap_err();
    assert_eq!(lines(&problems), vec![1]);
    assert!(problems[0].message.contains("colour"));
    let problems = parse(
        "name,ssh,path\na,u@h,/p\nb,u@h\nc,u@h,/p\nd,u@h\n",
        ListFormat::Csv,
    )
    .unwrap_err();
    assert_eq!(lines(&problems), vec![3, 5], "{problems:?}");
}

#[test]
fn jsonl_skips_blank_lines_and_names_bad_ones() {
    let text = "{\"name\":\"a\",\"ssh\":\"u@h\",\"path\":\"/p\"}\n\n\
                {\"name\":\"b\",\"ssh\":\"u@h\",\"path\":\"/p\",\"label_fields\":\"x,y\"}\n";
    let listed = parse(text, ListFormat::Jsonl).expect("valid");
    assert_eq!(
        listed.iter().map(|l| l.line).collect::<Vec<_>>(),
        vec![1, 3]
    );
    assert_eq!(listed[1].spec.ingest.label_fields, vec!["x", "y"]);
    let problems = parse("{\"name\":\"a\"}\nnot json\n", ListFormat::Jsonl).unwrap_err();
    assert_eq!(lines(&problems), vec![1, 2]);
}

#[test]
fn an_empty_list_is_a_problem() {
    for format in [ListFormat::Toml, ListFormat::Csv, ListFormat::Jsonl] {
        let problems = parse("", format).unwrap_err();
        assert_eq!(problems.len(), 1, "{format:?}");
    }
}

#[test]
fn format_from_extension() {
    assert_eq!(ListFormat::of_path("a/b.TOML"), Some(ListFormat::Toml));
    assert_eq!(ListFormat::of_path("x.ndjson"), Some(ListFormat::Jsonl));
    assert_eq!(ListFormat::of_path("x.txt"), None);
    assert_eq!(ListFormat::of_path("noext"), None);
}
