//! Kubernetes objects as YAML, written from `serde_json` values: block
//! style for maps and lists, every string double-quoted (a JSON string is a
//! valid YAML double-quoted scalar, so no value — "on", "0700", "1e3" — can
//! be read back as anything but the string it is). The crate has no YAML
//! dependency, and writing is all it needs.

use serde_json::Value;

/// One YAML stream of `objects`, each its own document.
pub fn documents(objects: &[Value]) -> String {
    objects.iter().map(|object| format!("---\n{}", block(object, 0))).collect()
}

/// `value` as block YAML at `indent` spaces, ending with a newline.
fn block(value: &Value, indent: usize) -> String {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            map.iter().map(|(key, value)| format!("{pad}{}:{}", key_text(key), nested(value, indent))).collect()
        }
        Value::Array(items) if !items.is_empty() => {
            items.iter().map(|item| format!("{pad}-{}", nested(item, indent))).collect()
        }
        other => format!("{pad}{}\n", scalar(other)),
    }
}

/// What follows `key:` or `-`: a scalar on the same line, a collection on
/// the lines below.
fn nested(value: &Value, indent: usize) -> String {
    match value {
        Value::Object(map) if !map.is_empty() => format!("\n{}", block(value, indent + 2)),
        Value::Array(items) if !items.is_empty() => format!("\n{}", block(value, indent + 2)),
        Value::String(text) if literal_fits(text) => literal(text, indent + 2),
        other => format!(" {}\n", scalar(other)),
    }
}

/// Whether a multi-line string reads back unchanged as a literal block:
/// one final newline or none, no carriage returns, and a first line that
/// does not start with a space (which would set the block's indentation).
fn literal_fits(text: &str) -> bool {
    text.contains('\n') && !text.contains('\r') && !text.starts_with(' ') && !text.ends_with("\n\n")
}

/// A script as it reads: `|` (or `|-` without a final newline), then its
/// lines indented.
fn literal(text: &str, indent: usize) -> String {
    let pad = " ".repeat(indent);
    let chomp = if text.ends_with('\n') { "" } else { "-" };
    let lines: String =
        text.lines().map(|line| if line.is_empty() { "\n".to_owned() } else { format!("{pad}{line}\n") }).collect();
    format!(" |{chomp}\n{lines}")
}

/// A key as written: plain when it can only be read as that string
/// (`metadata`, `app.kubernetes.io/name`), quoted otherwise.
fn key_text(key: &str) -> String {
    const READ_AS_OTHER: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    let plain = key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || "._/-_".contains(c))
        && !READ_AS_OTHER.contains(&key.to_ascii_lowercase().as_str());
    if plain {
        key.to_owned()
    } else {
        scalar(&Value::from(key))
    }
}

/// Scalars and empty collections in flow form, which JSON's is.
fn scalar(value: &Value) -> String {
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_maps_and_lists_become_block_yaml_with_quoted_strings() {
        let object = serde_json::json!({
            "kind": "Pod",
            "spec": {"args": ["on", "0700"], "ports": [{"port": 1, "name": "a"}], "empty": {}, "none": []},
            "script": "set -eu\n\n  exec x \"$A\"\n",
            "tail": "a\nb",
            "on": true,
            "cluster_procs.json": 1,
        });
        let expected = "---\nkind: \"Pod\"\nspec:\n  args:\n    - \"on\"\n    - \"0700\"\n  ports:\n    -\n      port: 1\n      name: \"a\"\n  empty: {}\n  none: []\nscript: |\n  set -eu\n\n    exec x \"$A\"\ntail: |-\n  a\n  b\n\"on\": true\ncluster_procs.json: 1\n";
        assert_eq!(documents(&[object]), expected);
    }
}
