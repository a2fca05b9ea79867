//! Code habits a machine can check: no function in `src/` over 80 lines (docs comments
//! above it excluded; its signature, body and closing brace counted), so each reads on
//! one screen. rustfmt's layout makes the count stable: a function ends at the first line
//! that closes a block at its own indentation.

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 80;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `(name, lines)` of every function with a body in `source`.
fn functions(source: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let rest = ["pub(crate) ", "pub(super) ", "pub "]
            .iter()
            .find_map(|p| trimmed.strip_prefix(p))
            .unwrap_or(trimmed);
        let rest = rest.strip_prefix("async ").unwrap_or(rest);
        let Some(signature) = rest.strip_prefix("fn ") else { continue };
        let name: String = signature.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        // A declaration without a body (a trait's) ends with `;` before any `{`.
        let Some(open) = (i..lines.len()).find(|&j| lines[j].trim_end().ends_with('{') || lines[j].trim_end().ends_with(';')) else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        let close = (open + 1..lines.len())
            .find(|&j| lines[j].starts_with(&format!("{}}}", " ".repeat(indent))) && !lines[j][indent..].starts_with(' '))
            .unwrap_or(lines.len() - 1);
        found.push((name, close - i + 1));
    }
    found
}

#[test]
fn no_function_in_src_is_over_80_lines() {
    let mut files = Vec::new();
    rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut files);
    let mut long = Vec::new();
    for file in files {
        for (name, lines) in functions(&std::fs::read_to_string(&file).unwrap()) {
            if lines > MAX_LINES {
                long.push(format!("{}: {name} ({lines} lines)", file.display()));
            }
        }
    }
    assert!(long.is_empty(), "over {MAX_LINES} lines:\n{}", long.join("\n"));
}

#[test]
fn the_count_finds_a_long_function_and_skips_declarations() {
    let body = "    x();\n".repeat(MAX_LINES);
    let source = format!("trait T {{\n    fn declared(&self);\n}}\n\npub async fn long() {{\n{body}}}\n\nfn short() {{\n    y();\n}}\n");
    assert_eq!(functions(&source), [("long".to_owned(), MAX_LINES + 2), ("short".to_owned(), 3)]);
}
