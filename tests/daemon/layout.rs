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

/// Every path a piece of code names after `prefix` (`crate::`, `super::`), use-trees expanded:
/// `use crate::{config::Settings, rpc}` names `config::Settings` and `rpc`.
fn paths_after(code: &str, prefix: &str) -> Vec<String> {
    /// Reads one use-tree at `at`, appending the paths it names (each after `base`).
    fn tree(code: &[u8], at: &mut usize, base: &str, out: &mut Vec<String>) {
        let skip = |at: &mut usize| {
            while *at < code.len() && code[*at].is_ascii_whitespace() {
                *at += 1;
            }
        };
        skip(at);
        if code.get(*at) == Some(&b'{') {
            *at += 1;
            loop {
                tree(code, at, base, out);
                skip(at);
                match code.get(*at) {
                    Some(b',') => *at += 1,
                    Some(b'}') => {
                        *at += 1;
                        return;
                    }
                    _ => return,
                }
                skip(at);
                if code.get(*at) == Some(&b'}') {
                    *at += 1;
                    return;
                }
            }
        }
        let start = *at;
        while *at < code.len() && (code[*at].is_ascii_alphanumeric() || code[*at] == b'_') {
            *at += 1;
        }
        let name = String::from_utf8_lossy(&code[start..*at]);
        let path = if base.is_empty() {
            name.into_owned()
        } else {
            format!("{base}::{name}")
        };
        if code[*at..].starts_with(b"::") {
            *at += 2;
            tree(code, at, &path, out);
        } else if !name_is_empty(&path) {
            out.push(path);
        }
    }
    fn name_is_empty(path: &str) -> bool {
        path.is_empty() || path.ends_with("::")
    }
    let bytes = code.as_bytes();
    let mut out = Vec::new();
    for (i, _) in code.match_indices(prefix) {
        // `super::` inside a longer name (`x_super::`) is not the keyword.
        let before = bytes[..i].last().copied().unwrap_or(b' ');
        if before.is_ascii_alphanumeric() || before == b'_' {
            continue;
        }
        let mut at = i + prefix.len();
        tree(bytes, &mut at, "", &mut out);
    }
    out
}

/// The top-level modules each one names through `crate::`.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let mut deps: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, code, _) in files() {
        let own = top(&rel);
        let entry = deps.entry(own.clone()).or_default();
        for path in paths_after(&code, "crate::") {
            let name = path.split("::").next().unwrap_or_default().to_owned();
            if !name.is_empty() && name != own {
                entry.insert(name);
            }
        }
    }
    deps
}

/// Within each folder, the sibling modules each file names (`super::request::…` or
/// `crate::call::request::…` from `call/log.rs` names `request`). mod.rs is the folder's face
/// (it declares and re-exports the others), so it is not a node.
fn sibling_imports() -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
    let files = files();
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|(rel, _, _)| {
            let (folder, file) = rel.split_once('/')?;
            let name = file.split('/').next()?.trim_end_matches(".rs");
            (name != "mod").then(|| format!("{folder}/{name}"))
        })
        .collect();
    let mut folders: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    for (rel, code, _) in &files {
        let Some((folder, file)) = rel.split_once('/') else {
            continue;
        };
        let own = file
            .split('/')
            .next()
            .unwrap_or_default()
            .trim_end_matches(".rs");
        if own == "mod" {
            continue;
        }
        let mut named: Vec<String> = paths_after(code, "super::");
        let inside = format!("{folder}::");
        named.extend(
            paths_after(code, "crate::")
                .into_iter()
                .filter_map(|p| p.strip_prefix(&inside).map(str::to_owned)),
        );
        let entry = folders
            .entry(folder.to_owned())
            .or_default()
            .entry(own.to_owned())
            .or_default();
        for path in named {
            let name = path.split("::").next().unwrap_or_default();
            if name != own && modules.contains(&format!("{folder}/{name}")) {
                entry.insert(name.to_owned());
            }
        }
    }
    folders
}

/// Panics with the first cycle in `deps`, found depth-first from every module.
fn assert_no_cycle(deps: &BTreeMap<String, BTreeSet<String>>, what: &str) {
    fn visit(
        module: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        what: &str,
    ) {
        if let Some(at) = path.iter().position(|m| m == module) {
            panic!("import cycle {what}: {} → {module}", path[at..].join(" → "));
        }
        if !done.insert(module.to_owned()) {
            return;
        }
        path.push(module.to_owned());
        for next in deps.get(module).into_iter().flatten() {
            visit(next, deps, path, done, what);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for module in deps.keys() {
        visit(module, deps, &mut Vec::new(), &mut done, what);
    }
}

#[test]
fn use_trees_are_read_as_the_compiler_reads_them() {
    let code = "use crate::{config::Settings, rpc::{self, Request}};\nlet x = crate::slots::Slots::new();\nuse super::request::Method;";
    assert_eq!(
        paths_after(code, "crate::"),
        [
            "config::Settings",
            "rpc::self",
            "rpc::Request",
            "slots::Slots::new"
        ]
    );
    assert_eq!(paths_after(code, "super::"), ["request::Method"]);
}

#[test]
fn no_cycle_between_modules_of_one_folder() {
    for (folder, deps) in sibling_imports() {
        assert_no_cycle(&deps, &format!("in {folder}/"));
    }
}

#[test]
fn no_cycle_between_top_level_modules() {
    assert_no_cycle(&imports(), "between top-level modules");
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
        .filter(|(rel, code, _)| {
            top(rel) != "config"
                && paths_after(code, "crate::")
                    .iter()
                    .any(|p| p.split("::").next() == Some("config"))
        })
        .map(|(rel, _, _)| rel)
        .collect();
    assert!(
        importers.len() <= 3 && importers.iter().all(|rel| rel.starts_with("app/")),
        "config imported by {importers:?}"
    );
}
