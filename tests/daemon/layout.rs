//! The code's shape, from its own imports: folders by stage of the pipeline with no cycle
//! between them, no source file over 500 lines, a narrow library surface, and config reaching
//! only the composition root. (What `cargo` cannot check, checked here so it cannot drift.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every source file under src/, as (path relative to src/, text without its unit tests).
fn files() -> Vec<(String, String, usize)> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut paths = Vec::new();
    sources(&src, &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("a source file");
            let lines = text.lines().count();
            let code = text
                .split("#[cfg(test)]")
                .next()
                .unwrap_or_default()
                .to_owned();
            let rel = path
                .strip_prefix(&src)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            (rel, code, lines)
        })
        .collect()
}

/// The top-level module a file belongs to: `twilio/rest.rs` → `twilio`, `main.rs` → `main`.
fn top(rel: &str) -> String {
    rel.split('/')
        .next()
        .unwrap()
        .trim_end_matches(".rs")
        .to_owned()
}

/// The top-level modules each one names through `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, code, _) in files() {
        let own = top(&rel);
        let entry = deps.entry(own.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let name: String = code[i + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() && name != own {
                entry.insert(name);
            }
        }
    }
    deps
}

#[test]
fn no_cycle_between_top_level_modules() {
    let deps = imports();
    // Depth-first from every module; a module met again on the current path is a cycle.
    fn visit(
        module: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if let Some(at) = path.iter().position(|m| m == module) {
            panic!("import cycle: {} → {module}", path[at..].join(" → "));
        }
        if !done.insert(module.to_owned()) {
            return;
        }
        path.push(module.to_owned());
        for next in deps.get(module).into_iter().flatten() {
            visit(next, deps, path, done);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in deps.keys() {
        visit(module, &deps, &mut Vec::new(), &mut done);
    }
}

#[test]
fn no_source_file_is_over_500_lines() {
    let long: Vec<String> = files()
        .into_iter()
        .filter(|(_, _, lines)| *lines > 500)
        .map(|(rel, _, lines)| format!("{rel}: {lines}"))
        .collect();
    assert!(long.is_empty(), "split these: {long:?}");
}

#[test]
fn the_library_surface_is_narrow() {
    let lib = files()
        .into_iter()
        .find(|(rel, _, _)| rel == "lib.rs")
        .expect("src/lib.rs")
        .1;
    let public = lib.lines().filter(|l| l.starts_with("pub mod ")).count();
    assert!(public <= 8, "{public} public modules in lib.rs");
}

#[test]
fn only_the_composition_root_imports_config() {
    let importers: BTreeSet<String> = files()
        .into_iter()
        .filter(|(rel, code, _)| top(rel) != "config" && code.contains("crate::config"))
        .map(|(rel, _, _)| rel)
        .collect();
    assert!(
        importers.len() <= 3 && importers.iter().all(|rel| rel.starts_with("app/")),
        "config imported by {importers:?}"
    );
}
