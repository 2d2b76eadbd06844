//! The import rule of ARCHITECTURE.md, checked: which top-level module may
//! use which. A forbidden `use crate::…` fails here, with the file and line,
//! before it can grow into a cycle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module and the modules it may import (besides itself).
/// Keep in step with the table in ARCHITECTURE.md.
const RULES: &[(&str, &[&str])] = &[
    ("api", &[]),
    ("fuzzing", &[]),
    ("node", &["api"]),
    ("client", &["api"]),
    ("workload", &["api", "client"]),
    ("cluster", &["api", "client", "node"]),
    ("faults", &["api", "cluster"]),
    ("experiment", &["api", "client", "cluster", "faults", "workload"]),
    ("report", &["api"]),
    ("matrix", &["api", "cluster", "experiment", "report"]),
    ("doctor", &[]),
    ("k8s", &["api", "cluster", "faults"]),
    (
        "cli",
        &["api", "client", "cluster", "doctor", "experiment", "faults", "k8s", "matrix", "node", "report", "workload"],
    ),
];

/// Test support any module's tests may use.
const TEST_SUPPORT: &[&str] = &["fuzzing"];

/// The store may not reach the kernel layer either.
const STORE_MAY_NOT_NAME: &[&str] = &["netns::"];

#[test]
fn every_import_between_top_level_modules_is_allowed() {
    let rules: BTreeMap<&str, BTreeSet<&str>> =
        RULES.iter().map(|(module, allowed)| (*module, allowed.iter().copied().collect())).collect();
    let mut broken = Vec::new();
    for module in top_level_modules() {
        let Some(allowed) = rules.get(module.as_str()) else {
            broken.push(format!("src/{module}: a top-level module without a rule in tests/architecture.rs"));
            continue;
        };
        for file in sources_of(&module) {
            let code = without_comments(&std::fs::read_to_string(&file).unwrap());
            for (line, used) in crate_imports(&code) {
                let known = rules.contains_key(used.as_str()) && !TEST_SUPPORT.contains(&used.as_str());
                if used != module && known && !allowed.contains(used.as_str()) {
                    broken.push(format!("{}:{line}: {module} may not use crate::{used}", file.display()));
                }
            }
            if module == "node" {
                for (line, text) in code.lines().enumerate() {
                    if STORE_MAY_NOT_NAME.iter().any(|name| text.contains(name)) {
                        broken.push(format!("{}:{}: the store names the kernel layer", file.display(), line + 1));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "imports against ARCHITECTURE.md:\n{}", broken.join("\n"));
}

#[test]
fn the_rules_have_no_cycle_and_architecture_md_names_every_module() {
    let rules: BTreeMap<&str, Vec<&str>> = RULES.iter().map(|(m, a)| (*m, a.to_vec())).collect();
    // A module's rank: one more than the highest rank it may import; a cycle never settles.
    let mut rank: BTreeMap<&str, usize> = BTreeMap::new();
    for _ in 0..=rules.len() {
        for (module, allowed) in &rules {
            let r = allowed.iter().map(|a| rank.get(a).map_or(0, |r| r + 1)).max().unwrap_or(0);
            rank.insert(module, r);
        }
    }
    assert!(rank.values().all(|&r| r < rules.len()), "the rules allow a cycle: {rank:?}");
    let doc = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md at the root");
    for module in top_level_modules() {
        assert!(doc.contains(&format!("`{module}`")), "ARCHITECTURE.md does not describe `{module}`");
    }
}

#[test]
fn the_checker_sees_grouped_and_nested_imports() {
    let code = "use crate::{api::dot::Dot, node::{ring, version}, client};\nfn f() { crate::faults::heal(); }\n// crate::report\n";
    let found: Vec<(usize, String)> = crate_imports(&without_comments(code));
    assert_eq!(found, vec![(1, "api".into()), (1, "node".into()), (1, "client".into()), (2, "faults".into())]);
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn top_level_modules() -> Vec<String> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .map(|rest| rest.trim_end_matches(';').trim().to_owned())
        .collect()
}

fn sources_of(module: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let single = root().join(format!("src/{module}.rs"));
    if single.is_file() {
        files.push(single);
    }
    collect(&root().join("src").join(module), &mut files);
    files
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The code with `//` comments blanked (doc comments name modules freely).
fn without_comments(code: &str) -> String {
    code.lines().map(|l| l.find("//").map_or(l, |at| &l[..at])).collect::<Vec<_>>().join("\n")
}

/// `(line, top-level module)` for every `crate::…` path, groups expanded.
fn crate_imports(code: &str) -> Vec<(usize, String)> {
    let mut found: Vec<(usize, String)> = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let line = code[..at].matches('\n').count() + 1;
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let (mut depth, mut item) = (0, String::new());
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth > 0 => depth -= 1,
                    ',' | '}' if depth == 0 => {
                        found.extend(head_of(&item).map(|head| (line, head)));
                        item.clear();
                        if c == '}' {
                            break;
                        }
                    }
                    _ if depth == 0 => item.push(c),
                    _ => {}
                }
            }
        } else {
            found.extend(head_of(rest).map(|head| (line, head)));
        }
    }
    found.dedup();
    found
}

fn head_of(path: &str) -> Option<String> {
    let head: String = path.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!head.is_empty()).then_some(head)
}
