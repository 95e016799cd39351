//! `todo` markers: what `cargo xtask gen --import` writes where a header cannot give the
//! meaning of something new (which structures a new request code sends and expects, which
//! fields of a new caller structure the driver writes back, what kind of constants a new
//! group holds). A marker is a `todo = "what is missing"` key on any table or inline table
//! of a spec file; the spec is refused while one is left, each named by file, line and item,
//! so nothing is generated from a guess.

use std::path::Path;

use toml_edit::{ImDocument, Item, Table, Value};

use crate::diag::{Diag, Source};

/// The key that marks an item a person must finish.
pub const KEY: &str = "todo";

/// Every `todo` key in `text`, in file order. A text that is not TOML has none (the schema
/// reports the syntax error).
pub fn find(text: &str, display_path: &Path) -> Vec<Diag> {
    let Ok(doc) = ImDocument::parse(text) else {
        return Vec::new();
    };
    let src = Source::new(display_path, text);
    let mut out = Vec::new();
    visit_table(doc.as_table(), "", &src, &mut out);
    out.sort_by_key(|d| (d.line, d.column));
    out
}

/// How an element of an array is named in messages: `consts request, value X`, `struct s,
/// field f`, `request CODE`.
fn element_name(parent: &str, key: &str, label: Option<&str>) -> String {
    let what = match key {
        "values" => "value",
        "fields" => "field",
        "args" => "arg",
        other => other,
    };
    let this = match label {
        Some(l) => format!("{what} {l}"),
        None => what.to_string(),
    };
    if parent.is_empty() {
        this
    } else {
        format!("{parent}, {this}")
    }
}

fn label_of_table(t: &Table) -> Option<String> {
    ["name", "code"]
        .iter()
        .find_map(|k| t.get(k).and_then(Item::as_str).map(str::to_string))
}

fn label_of_inline(t: &toml_edit::InlineTable) -> Option<String> {
    ["name", "code"]
        .iter()
        .find_map(|k| t.get(k).and_then(Value::as_str).map(str::to_string))
}

fn marker(
    where_: &str,
    value: Option<&str>,
    span: Option<std::ops::Range<usize>>,
    src: &Source,
) -> Diag {
    let what = value.unwrap_or("(no text)");
    let key = if where_.is_empty() {
        KEY.to_string()
    } else {
        format!("{where_}, key {KEY}")
    };
    src.diag(
        span.unwrap_or(0..0),
        key,
        format!("left for a person to fill in: {what}; then delete the `{KEY}` key"),
    )
}

fn visit_table(t: &Table, here: &str, src: &Source, out: &mut Vec<Diag>) {
    for (k, item) in t.iter() {
        if k == KEY {
            let span = t.key(k).and_then(|key| key.span());
            out.push(marker(here, item.as_str(), span, src));
            continue;
        }
        match item {
            Item::Table(inner) => {
                let name = if here.is_empty() {
                    k.to_string()
                } else {
                    format!("{here}, {k}")
                };
                visit_table(inner, &name, src, out);
            }
            Item::ArrayOfTables(arr) => {
                for el in arr.iter() {
                    let name = element_name(here, k, label_of_table(el).as_deref());
                    visit_table(el, &name, src, out);
                }
            }
            Item::Value(v) => visit_value(v, here, k, src, out),
            Item::None => {}
        }
    }
}

fn visit_value(v: &Value, here: &str, key: &str, src: &Source, out: &mut Vec<Diag>) {
    match v {
        Value::InlineTable(t) => {
            let name = element_name(here, key, label_of_inline(t).as_deref());
            visit_inline(t, &name, src, out);
        }
        Value::Array(a) => {
            for el in a.iter() {
                visit_value(el, here, key, src, out);
            }
        }
        _ => {}
    }
}

fn visit_inline(t: &toml_edit::InlineTable, here: &str, src: &Source, out: &mut Vec<Diag>) {
    for (k, v) in t.iter() {
        if k == KEY {
            let span = t.key(k).and_then(|key| key.span());
            out.push(marker(here, v.as_str(), span, src));
            continue;
        }
        visit_value(v, here, k, src, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_markers_in_tables_and_inline_tables_with_their_lines() {
        let text = "[abi]\nname = \"x\"\n\n[[consts]]\nname = \"g\"\nvalues = [\n  { name = \"A\", value = 1 },\n  { name = \"B\", value = 2, todo = \"say what B means\" },\n]\n\n[[request]]\ncode = \"A\"\ntodo = \"name the request structure\"\n";
        let found = find(text, Path::new("spec/x.toml"));
        let shown: Vec<String> = found.iter().map(|d| d.to_string()).collect();
        assert_eq!(
            shown,
            [
                "spec/x.toml:8:28: consts g, value B, key todo: left for a person to fill in: say what B means; then delete the `todo` key",
                "spec/x.toml:13:1: request A, key todo: left for a person to fill in: name the request structure; then delete the `todo` key",
            ]
        );
    }

    #[test]
    fn a_spec_without_markers_has_none_and_bad_toml_is_left_to_the_schema() {
        assert!(find("[abi]\nname = \"todo\"\n", Path::new("x.toml")).is_empty());
        assert!(find("[abi\n", Path::new("x.toml")).is_empty());
    }
}

#[cfg(test)]
mod model_refuses {
    use std::path::Path;

    /// A spec that is otherwise whole is refused while a marker is left, and the refusal
    /// names the marker's line rather than what it stands in for.
    #[test]
    fn the_model_refuses_a_spec_with_a_marker() {
        let text = r#"[abi]
name = "m"
title = "t"
version = "1"
source = "s"
default_kind = "wire"

[[struct]]
name = "m_hdr"
todo = "say which request uses it"
fields = [ { name = "code", type = "le32" } ]
"#;
        let err = crate::model::parse(text, Path::new("spec/m.toml"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "spec/m.toml:10:1: struct m_hdr, key todo: left for a person to fill in: say which request uses it; then delete the `todo` key"
        );
        let filled = text.replace("todo = \"say which request uses it\"\n", "");
        assert!(crate::model::parse(&filled, Path::new("spec/m.toml")).is_ok());
    }
}
