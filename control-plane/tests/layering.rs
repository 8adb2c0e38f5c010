//! The architecture invariants of ARCHITECTURE.md that are about imports,
//! checked on the source: the top-level modules of `control-plane/src` form
//! no import cycle (rooms only look down), nothing imports the wiring
//! (`app`) but the command line, only the store (`store/`) holds SQL and names a backend, and only
//! the Docker module (`docker/`) speaks bollard. Test code (`#[cfg(test)]`
//! modules, `*_tests.rs`, `testing.rs`) is left out: tests may reach
//! anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every non-test source file of the crate: (path relative to `src/`,
/// contents without its trailing `#[cfg(test)]` module).
fn sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).expect("src dir") {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    walk(&root, &mut files);
    files
        .into_iter()
        .filter_map(|path| {
            let rel = path
                .strip_prefix(&root)
                .ok()?
                .to_string_lossy()
                .into_owned();
            let name = path.file_name()?.to_string_lossy().into_owned();
            if name.ends_with("_tests.rs") || name == "testing.rs" {
                return None;
            }
            let text = std::fs::read_to_string(&path).ok()?;
            let code = match text.find("#[cfg(test)]") {
                Some(i) => text[..i].to_owned(),
                None => text,
            };
            // Comments may name anything.
            let code: String = code
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            Some((rel, code))
        })
        .collect()
}

/// The top-level module a path relative to `src/` belongs to.
fn top_module(rel: &str) -> String {
    rel.split('/')
        .next()
        .unwrap_or(rel)
        .trim_end_matches(".rs")
        .to_owned()
}

/// `crate::<module>` references, by top-level module.
fn import_graph() -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (rel, code) in sources() {
        let from = top_module(&rel);
        let mut rest = code.as_str();
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let to: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !to.is_empty() && to != from {
                graph.entry(from.clone()).or_default().insert(to);
            }
        }
    }
    graph
}

#[test]
fn top_level_modules_form_no_import_cycle() {
    let graph = import_graph();
    // Depth-first search for a back edge, reporting the cycle it closes.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            let mut cycle = path[i..].to_vec();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(cycle) = visit(node, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {}", cycle.join(" → "));
        }
    }
}

#[test]
fn only_the_command_line_imports_the_wiring() {
    for (from, to) in import_graph() {
        if to.contains("app") {
            assert!(
                ["cli", "main", "lib"].contains(&from.as_str()),
                "{from} imports crate::app; the HTTP state is crate::api::AppState"
            );
        }
    }
}

#[test]
fn only_the_store_holds_sql_and_only_the_docker_module_speaks_bollard() {
    for (rel, code) in sources() {
        let top = top_module(&rel);
        if top != "store" {
            for sql in ["sqlx::query", "query_as(", "query_scalar(", "QueryBuilder"] {
                assert!(
                    !code.contains(sql),
                    "{rel} holds SQL ({sql}): it belongs in store/"
                );
            }
            for backend in [
                "store::sqlite",
                "store::postgres",
                "SqlitePool",
                "PgPool",
                "sqlx::Sqlite",
                "sqlx::Postgres",
            ] {
                assert!(
                    !code.contains(backend),
                    "{rel} names a store backend ({backend}): speak the Store traits"
                );
            }
        }
        if top != "docker" {
            assert!(
                !code.contains("bollard::"),
                "{rel} uses bollard: only docker/ speaks to the engine's API"
            );
        }
    }
}

#[test]
fn the_reconciler_and_the_api_speak_the_orchestrator_seam() {
    // Only docker/ and the wiring (app.rs) and the commands that drive the
    // engine directly (cli.rs, gc.rs) name the Docker implementation.
    for (rel, code) in sources() {
        let top = top_module(&rel);
        if ["reconciler", "api", "addressing", "orchestrator", "error"].contains(&top.as_str()) {
            for name in ["crate::docker", "DockerRuntime"] {
                assert!(
                    !code.contains(name),
                    "{rel} names {name}: speak crate::orchestrator::Orchestrator"
                );
            }
        }
    }
}

#[test]
fn the_engine_module_knows_no_protocol() {
    // Transport below, protocol above: docker/ implements the seam and
    // never reaches up into the reconciler (pairing codes, plans) or the
    // HTTP layer.
    for (rel, code) in sources() {
        if top_module(&rel) == "docker" {
            for name in ["crate::reconciler", "crate::api", "crate::app"] {
                assert!(!code.contains(name), "{rel} names {name}");
            }
        }
    }
}
