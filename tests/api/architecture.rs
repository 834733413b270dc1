//! The dependency picture inside `src/`, checked from the source: no import cycle between
//! the crate's top-level modules; sockets, the CLI and the services never import HTTP; the
//! server does not depend on the reconstruction crate. Edges that still point the wrong way
//! are listed below as known exceptions: each is a debt with an owner, and the test fails
//! when one is paid (so the list only shrinks). `docs/architecture.md` § Services and errors.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Imports between top-level modules that still point up (into `state`, `http`, `ws`, or
/// from a store into a consumer). Each closes a cycle today; remove the entry with the edge.
const KNOWN_BACK_EDGES: &[(&str, &str, &str)] = &[];

/// `crate::http` paths that sockets, the CLI or services still use (file, path prefix).
const KNOWN_HTTP_IMPORTS: &[(&str, &str)] = &[];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments and string literals, so a path named in a doc comment or a
/// message is not an import.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'"' && !(i > 0 && b[i - 1] == b'\'') {
            // Raw strings (`r"…"`, `r#"…"#`) and plain ones.
            let hashes = {
                let mut j = i;
                let mut n = 0;
                while j > 0 && b[j - 1] == b'#' {
                    j -= 1;
                    n += 1;
                }
                if j > 0 && b[j - 1] == b'r' {
                    Some(n)
                } else {
                    None
                }
            };
            i += 1;
            match hashes {
                Some(n) => {
                    let close = format!("\"{}", "#".repeat(n));
                    while i < b.len() && !b[i..].starts_with(close.as_bytes()) {
                        i += 1;
                    }
                    i += close.len();
                }
                None => {
                    while i < b.len() && b[i] != b'"' {
                        i += if b[i] == b'\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
            }
            out.push_str("\"\"");
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
    &s[..end]
}

/// Every `crate::…` path in `code`, with `use crate::{a, b::c}` groups expanded to their
/// first segments.
fn crate_paths(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && code[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            continue;
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let body = &group[..group.find('}').unwrap_or(group.len())];
            for part in body.split(',') {
                let part = part.trim();
                if !part.is_empty() {
                    out.push(format!("crate::{}", part.split_whitespace().collect::<String>()));
                }
            }
        } else {
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')).unwrap_or(rest.len());
            out.push(format!("crate::{}", &rest[..end]));
        }
    }
    out
}

fn top_level_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).expect("src/lib.rs");
    code_only(&lib)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod ").or_else(|| l.trim().strip_prefix("mod ")))
        .map(|m| m.trim_end_matches(';').trim().to_string())
        .collect()
}

/// The top-level module a file of `src/` belongs to.
fn module_of(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root().join("src")).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    Some(first.trim_end_matches(".rs").to_string())
}

/// Module → module imports, with the files behind each.
fn edges() -> BTreeMap<(String, String), BTreeSet<String>> {
    let mods = top_level_modules();
    let mut files = Vec::new();
    rust_files(&root().join("src"), &mut files);
    let mut out: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let Some(from) = module_of(&f).filter(|m| mods.contains(m)) else { continue };
        let code = code_only(&std::fs::read_to_string(&f).expect("readable source"));
        for path in crate_paths(&code) {
            let to = ident_at(&path["crate::".len()..]).to_string();
            if to != from && mods.contains(&to) {
                let rel = f.strip_prefix(root()).unwrap_or(&f).display().to_string();
                out.entry((from.clone(), to)).or_default().insert(rel);
            }
        }
    }
    out
}

/// A cycle in the graph, as the modules along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_string(), 1);
        stack.push(n.to_string());
        for m in graph.get(n).into_iter().flatten() {
            match state.get(m.as_str()) {
                Some(1) => {
                    let at = stack.iter().position(|s| s == m).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(m.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(m, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(n.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for n in graph.keys() {
        if !state.contains_key(n) {
            if let Some(c) = visit(n, graph, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_import_cycle_between_the_top_level_modules_of_src() {
    let edges = edges();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (from, to) in edges.keys() {
        let known = KNOWN_BACK_EDGES.iter().any(|(a, b, _)| a == from && b == to);
        if !known {
            graph.entry(from.clone()).or_default().insert(to.clone());
        }
    }
    if let Some(cycle) = find_cycle(&graph) {
        let detail: Vec<String> = cycle
            .windows(2)
            .map(|w| format!("  {} -> {} ({:?})", w[0], w[1], edges[&(w[0].clone(), w[1].clone())]))
            .collect();
        panic!("import cycle between top-level modules of src:\n{}", detail.join("\n"));
    }
    for (a, b, why) in KNOWN_BACK_EDGES {
        assert!(
            edges.contains_key(&(a.to_string(), b.to_string())),
            "{a} no longer imports {b} ({why}): remove it from KNOWN_BACK_EDGES"
        );
    }
}

#[test]
fn sockets_the_cli_and_services_do_not_import_http() {
    let mut files = Vec::new();
    rust_files(&root().join("src/ws"), &mut files);
    rust_files(&root().join("src/services"), &mut files);
    files.push(root().join("src/cli.rs"));
    let mut found = BTreeSet::new();
    for f in files {
        let rel = f.strip_prefix(root()).unwrap_or(&f).display().to_string();
        let code = code_only(&std::fs::read_to_string(&f).expect("readable source"));
        for path in crate_paths(&code) {
            if path == "crate::http" || path.starts_with("crate::http::") {
                let known = KNOWN_HTTP_IMPORTS.iter().any(|(file, prefix)| *file == rel && path.starts_with(prefix));
                assert!(known, "{rel} imports {path}: call a service instead");
                found.insert((rel.clone(), path));
            }
        }
    }
    for (file, prefix) in KNOWN_HTTP_IMPORTS {
        assert!(
            found.iter().any(|(f, p)| f == file && p.starts_with(prefix)),
            "{file} no longer uses {prefix}: remove it from KNOWN_HTTP_IMPORTS"
        );
    }
}

#[test]
fn the_server_does_not_depend_on_the_reconstruction_crate() {
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).expect("Cargo.toml");
    let mut section = String::new();
    let mut depends = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
        } else if matches!(section.as_str(), "[dependencies]" | "[build-dependencies]")
            && (line.starts_with("coherency-recon") || line.starts_with("coherency_recon"))
        {
            depends = true;
        }
    }
    assert!(!depends, "the server depends on coherency-recon; reach it through the actors");
}

#[test]
fn the_import_scanner_sees_grouped_and_plain_paths_but_not_comments() {
    let code = code_only("use crate::{a::X, b};\n// crate::c\nlet s = \"crate::d\";\ncrate::e::f();\n");
    let firsts: Vec<String> = crate_paths(&code).iter().map(|p| ident_at(&p[7..]).to_string()).collect();
    assert_eq!(firsts, ["a", "b", "e"]);
}
