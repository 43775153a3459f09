//! The architecture's import rules, checked on the parsed source: the workers decode, call the
//! engine and respond — they never reach the storage module (`baton_edge::d1`), so they never
//! compose SQL of their own — and no SHA-256 or HMAC is written by hand anywhere.

// Helpers outside `#[test]` functions; a panic there is the failure report.
#![allow(clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A macro's tokens, flat: identifiers and punctuation as text, each literal as "" (so that
/// the text inside strings never matches a path).
fn flatten(tokens: proc_macro2::TokenStream) -> Vec<String> {
    let mut out = Vec::new();
    for token in tokens {
        match token {
            proc_macro2::TokenTree::Group(g) => out.extend(flatten(g.stream())),
            proc_macro2::TokenTree::Ident(i) => out.push(i.to_string()),
            proc_macro2::TokenTree::Punct(p) => out.push(p.as_char().to_string()),
            proc_macro2::TokenTree::Literal(_) => out.push(String::new()),
        }
    }
    out
}

/// Where a source file reaches into `baton_edge::d1`, in any spelling: a `use` (grouped,
/// renamed or a glob of the crate), a path in code, or a path inside a macro's tokens. The
/// crate may be renamed (`use baton_edge as e;`, `extern crate baton_edge as e;`,
/// `use baton_edge::{self as e}`). Comments and strings do not count.
fn reaches_into_d1(source: &str) -> Vec<String> {
    use syn::visit::Visit;

    struct Finder {
        edge_names: Vec<String>,
        found: Vec<String>,
    }
    impl Finder {
        fn is_edge(&self, name: &str) -> bool {
            self.edge_names.iter().any(|n| n == name)
        }
        /// `prefix` are the segments above `tree`: records each import under `baton_edge::d1`,
        /// and every glob of the crate itself (it brings `d1` into scope).
        fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
            match tree {
                syn::UseTree::Path(p) => {
                    prefix.push(p.ident.to_string());
                    self.use_tree(prefix, &p.tree);
                    prefix.pop();
                }
                syn::UseTree::Name(n) => self.check_use(prefix, &n.ident.to_string()),
                syn::UseTree::Rename(r) => self.check_use(prefix, &r.ident.to_string()),
                syn::UseTree::Glob(_) => self.check_use(prefix, "*"),
                syn::UseTree::Group(g) => g.items.iter().for_each(|item| self.use_tree(prefix, item)),
            }
        }
        fn check_use(&mut self, prefix: &[String], last: &str) {
            let mut path: Vec<&str> = prefix.iter().map(String::as_str).collect();
            if last != "self" {
                path.push(last);
            }
            let reaches = match path.as_slice() {
                [first, "d1", ..] => self.is_edge(first),
                [first, "*"] => self.is_edge(first),
                _ => false,
            };
            if reaches {
                self.found.push(format!("use {}", path.join("::")));
            }
        }
        fn tokens(&mut self, tokens: proc_macro2::TokenStream) {
            let flat: Vec<String> = flatten(tokens);
            for window in flat.windows(4) {
                if self.is_edge(&window[0]) && window[1] == ":" && window[2] == ":" && window[3] == "d1" {
                    self.found.push(format!("{}::d1 in a macro", window[0]));
                }
            }
        }
    }
    impl<'ast> Visit<'ast> for Finder {
        fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
            self.use_tree(&mut Vec::new(), &item.tree);
        }
        fn visit_path(&mut self, path: &'ast syn::Path) {
            let names: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            if names.len() >= 2 && self.is_edge(&names[0]) && names[1] == "d1" {
                self.found.push(names.join("::"));
            }
            syn::visit::visit_path(self, path);
        }
        fn visit_macro(&mut self, mac: &'ast syn::Macro) {
            self.tokens(mac.tokens.clone());
            syn::visit::visit_macro(self, mac);
        }
    }

    /// Every name the crate goes by in this file.
    fn edge_names(file: &syn::File) -> Vec<String> {
        fn renames(tree: &syn::UseTree, parent: Option<&str>, out: &mut Vec<String>) {
            match tree {
                syn::UseTree::Rename(r) if r.ident == "baton_edge" => out.push(r.rename.to_string()),
                syn::UseTree::Rename(r) if r.ident == "self" && parent == Some("baton_edge") => {
                    out.push(r.rename.to_string())
                }
                syn::UseTree::Path(p) => renames(&p.tree, Some(&p.ident.to_string()), out),
                syn::UseTree::Group(g) => g.items.iter().for_each(|t| renames(t, parent, out)),
                _ => {}
            }
        }
        let mut names = vec!["baton_edge".to_string()];
        for item in &file.items {
            match item {
                syn::Item::Use(u) => renames(&u.tree, None, &mut names),
                syn::Item::ExternCrate(e) if e.ident == "baton_edge" => {
                    names.extend(e.rename.as_ref().map(|(_, name)| name.to_string()))
                }
                _ => {}
            }
        }
        names
    }

    let file = syn::parse_file(source).unwrap_or_else(|e| panic!("parsing a source file: {e}"));
    let mut finder = Finder { edge_names: edge_names(&file), found: Vec::new() };
    finder.visit_file(&file);
    finder.found
}

#[test]
fn the_d1_check_sees_every_spelling_and_nothing_else() {
    for reaching in [
        "use baton_edge::d1::Db;",
        "use baton_edge::{d1::Db};",
        "use baton_edge::{auth, d1::{self, Arg}};",
        "use baton_edge::d1;",
        "use baton_edge::d1 as storage;",
        "use baton_edge::*;",
        "use ::baton_edge::{d1::Db};",
        "use baton_edge as e; use e::d1::Db;",
        "use baton_edge::{self as e}; fn f() { e::d1::runs::get(); }",
        "extern crate baton_edge as e; fn f() { let _ = e::d1::Arg::Null; }",
        "fn f() { baton_edge::d1::runs::get(); }",
        "fn f() -> baton_edge::d1::Db { todo!() }",
        "fn f() { let _ = vec![baton_edge::d1::Arg::Null]; }",
    ] {
        assert!(!reaches_into_d1(reaching).is_empty(), "not seen: {reaching}");
    }
    for clean in [
        "use baton_edge::engine::Engine;",
        "use baton_edge::{auth, engine::{self, Engine}};",
        "// baton_edge::d1 in a comment\nfn f() {}",
        "fn f() -> &'static str { \"baton_edge::d1\" }",
        "mod d1 { pub struct Db; } use self::d1::Db;",
    ] {
        assert_eq!(reaches_into_d1(clean), Vec::<String>::new(), "{clean}");
    }
}

#[test]
fn workers_import_nothing_from_the_d1_module_in_any_spelling() {
    let mut offenders = Vec::new();
    for worker in ["orchestrator", "consumer", "poller", "sample-services"] {
        let mut files = Vec::new();
        rust_files(&crates_dir().join(worker).join("src"), &mut files);
        for file in files {
            let source = fs::read_to_string(&file).expect("a readable source file");
            for found in reaches_into_d1(&source) {
                offenders.push(format!("{}: {found}", file.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "worker code reaches into baton_edge::d1 (SQL lives in edge): {offenders:#?}");
}

#[test]
fn no_hand_written_sha256_round_constants_anywhere() {
    let mut files = Vec::new();
    rust_files(&crates_dir(), &mut files);
    // The first SHA-256 round constant: any hand-written compression function carries it.
    let constant = format!("0x{:x}", 1_116_352_408u32);
    let offenders: Vec<String> = files
        .iter()
        .filter(|f| fs::read_to_string(f).is_ok_and(|t| t.to_lowercase().contains(&constant)))
        .map(|f| f.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "hand-written SHA-256 in {offenders:?}");
}

/// The functions of a storage module (`d1/runs.rs`, ...) that write: their body holds a SQL
/// `INSERT`, `UPDATE` or `DELETE` (in a string literal, or in a macro's, e.g. `format!`).
fn writing_functions(source: &str) -> Vec<String> {
    use syn::visit::Visit;

    #[derive(Default)]
    struct Texts(Vec<String>);
    fn literals(tokens: proc_macro2::TokenStream, out: &mut Vec<String>) {
        for token in tokens {
            match token {
                proc_macro2::TokenTree::Group(g) => literals(g.stream(), out),
                proc_macro2::TokenTree::Literal(l) => out.push(l.to_string()),
                _ => {}
            }
        }
    }
    impl<'ast> Visit<'ast> for Texts {
        fn visit_lit_str(&mut self, lit: &'ast syn::LitStr) {
            self.0.push(lit.value());
        }
        fn visit_macro(&mut self, mac: &'ast syn::Macro) {
            literals(mac.tokens.clone(), &mut self.0);
        }
    }
    let file = syn::parse_file(source).unwrap_or_else(|e| panic!("parsing a storage module: {e}"));
    let mut writers = Vec::new();
    for item in &file.items {
        let syn::Item::Fn(f) = item else { continue };
        let mut texts = Texts::default();
        texts.visit_block(&f.block);
        let writes = texts.0.iter().any(|t| {
            let t = t.trim_start_matches(['r', '#', '"']).trim_start();
            ["INSERT", "UPDATE", "DELETE"].iter().any(|verb| t.starts_with(verb))
        });
        if writes {
            writers.push(f.sig.ident.to_string());
        }
    }
    writers
}

/// Where a source file calls or imports one of `writers` of the storage module `module`
/// (`runs`, `steps`, ...), in any spelling: `runs::gate(..)`, `d1::runs::gate`, an import of
/// `gate` from it, the module renamed (`use crate::d1::runs as r; r::gate(..)`), or inside a
/// macro's tokens.
fn calls_writers(source: &str, module: &str, writers: &[String]) -> Vec<String> {
    use syn::visit::Visit;

    struct Finder<'w> {
        modules: Vec<String>,
        writers: &'w [String],
        found: Vec<String>,
    }
    impl Finder<'_> {
        fn is_writer(&self, name: &str) -> bool {
            self.writers.iter().any(|w| w == name)
        }
        fn check(&mut self, segments: &[String]) {
            for pair in segments.windows(2) {
                if self.modules.contains(&pair[0]) && self.is_writer(&pair[1]) {
                    self.found.push(segments.join("::"));
                    return;
                }
            }
        }
        fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
            match tree {
                syn::UseTree::Path(p) => {
                    prefix.push(p.ident.to_string());
                    self.use_tree(prefix, &p.tree);
                    prefix.pop();
                }
                syn::UseTree::Name(n) => {
                    let mut path = prefix.clone();
                    path.push(n.ident.to_string());
                    self.check(&path);
                }
                syn::UseTree::Rename(r) => {
                    let mut path = prefix.clone();
                    path.push(r.ident.to_string());
                    self.check(&path);
                }
                syn::UseTree::Glob(_) => {
                    if prefix.last().is_some_and(|last| self.modules.contains(last)) {
                        self.found.push(format!("{}::*", prefix.join("::")));
                    }
                }
                syn::UseTree::Group(g) => g.items.iter().for_each(|item| self.use_tree(prefix, item)),
            }
        }
    }
    impl<'ast> Visit<'ast> for Finder<'_> {
        fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
            self.use_tree(&mut Vec::new(), &item.tree);
        }
        fn visit_path(&mut self, path: &'ast syn::Path) {
            let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
            self.check(&segments);
            syn::visit::visit_path(self, path);
        }
        fn visit_macro(&mut self, mac: &'ast syn::Macro) {
            let flat = flatten(mac.tokens.clone());
            for window in flat.windows(4) {
                if self.modules.contains(&window[0])
                    && window[1] == ":"
                    && window[2] == ":"
                    && self.is_writer(&window[3])
                {
                    self.found.push(format!("{}::{} in a macro", window[0], window[3]));
                }
            }
            syn::visit::visit_macro(self, mac);
        }
    }
    /// The names the module goes by in this file: its own, and every rename of it.
    fn module_names(tree: &syn::UseTree, module: &str, out: &mut Vec<String>) {
        match tree {
            syn::UseTree::Rename(r) if r.ident == module => out.push(r.rename.to_string()),
            syn::UseTree::Path(p) => module_names(&p.tree, module, out),
            syn::UseTree::Group(g) => g.items.iter().for_each(|t| module_names(t, module, out)),
            _ => {}
        }
    }
    let file = syn::parse_file(source).unwrap_or_else(|e| panic!("parsing a source file: {e}"));
    let mut modules = vec![module.to_string()];
    for item in &file.items {
        if let syn::Item::Use(u) = item {
            module_names(&u.tree, module, &mut modules);
        }
    }
    let mut finder = Finder { modules, writers, found: Vec::new() };
    finder.visit_file(&file);
    finder.found
}

#[test]
fn the_writer_check_sees_every_spelling_and_nothing_else() {
    let writers = vec!["gate".to_string(), "compare_and_set".to_string()];
    for calling in [
        "fn f() { runs::gate(db, id, 1, 2); }",
        "fn f() { crate::d1::runs::gate(db, id, 1, 2); }",
        "use crate::d1::runs::gate; fn f() { gate(db, id, 1, 2); }",
        "use crate::d1::{runs::{self, gate as g}};",
        "use crate::d1::runs as r; fn f() { r::gate(db, id, 1, 2); }",
        "use crate::d1::runs::*;",
        "fn f() { let v = vec![runs::gate(db, id, 1, 2)]; }",
    ] {
        assert!(!calls_writers(calling, "runs", &writers).is_empty(), "not seen: {calling}");
    }
    for clean in [
        "fn f() { runs::get(db, id); }",
        "use crate::d1::runs::{self, RunRow};",
        "// runs::gate in a comment\nfn f() {}",
        "fn f() -> &'static str { \"runs::gate\" }",
        "fn f() { steps::gate(); }",
    ] {
        assert_eq!(calls_writers(clean, "runs", &writers), Vec::<String>::new(), "{clean}");
    }
    let module = r#"
        pub fn get(db: &Db) -> Stmt { db.stmt("SELECT * FROM runs", &[]) }
        pub fn gate(db: &Db) -> Stmt { db.stmt("UPDATE runs SET version = ?2", &[]) }
        pub fn finish(db: &Db) -> Stmt { db.stmt(&format!("UPDATE runs SET status = ?2 {}", x), &[]) }
        pub fn insert(db: &Db) -> Stmt { db.stmt("INSERT INTO runs VALUES (?1)", &[]) }
    "#;
    assert_eq!(writing_functions(module), ["gate", "finish", "insert"]);
}

/// Every change to a run or its steps is written by the interpreter (`engine/apply/`): no
/// other code calls a function of `d1::runs` or `d1::steps` that writes (found from their SQL,
/// not listed by hand). The storage modules themselves and the test hooks (whose SQL only
/// tests reach) are exempt. A service's concurrency slots (`d1::service_slots`) are not a
/// run's rows: an attempt takes one before its call, and the interpreter gives it back.
#[test]
fn only_the_interpreter_writes_runs_and_steps() {
    let edge = crates_dir().join("edge").join("src");
    let mut tables = Vec::new();
    for module in ["runs", "steps"] {
        let source = fs::read_to_string(edge.join("d1").join(format!("{module}.rs"))).expect("a storage module");
        let writers = writing_functions(&source);
        assert!(!writers.is_empty(), "no writing function found in d1/{module}.rs: the check would see nothing");
        tables.push((module, writers));
    }
    let mut files = Vec::new();
    for krate in ["edge", "orchestrator", "consumer", "poller", "sample-services"] {
        rust_files(&crates_dir().join(krate).join("src"), &mut files);
    }
    let interpreter = edge.join("engine").join("apply");
    let exempt =
        |f: &Path| f.starts_with(edge.join("d1")) || f.starts_with(&interpreter) || f.ends_with("test_hooks.rs");
    let mut offenders = Vec::new();
    for file in files.iter().filter(|f| !exempt(f)) {
        let source = fs::read_to_string(file).expect("a readable source file");
        for (module, writers) in &tables {
            for found in calls_writers(&source, module, writers) {
                offenders.push(format!("{}: {found}", file.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "run and step rows written outside engine/apply/: {offenders:#?}");
}

/// Where a source file reads the clock or entropy, or reaches the Workers runtime:
/// `SystemTime::now`, `Instant::now`, `Utc::now`, `Local::now`, `getrandom`, `js_sys`,
/// `wasm_bindgen`, `web_sys`, `worker`, in paths and imports (comments and strings aside).
fn reaches_the_runtime(source: &str) -> Vec<String> {
    use syn::visit::Visit;

    const CRATES: [&str; 5] = ["getrandom", "js_sys", "wasm_bindgen", "web_sys", "worker"];
    const CLOCKS: [&str; 4] = ["SystemTime", "Instant", "Utc", "Local"];
    struct Finder(Vec<String>);
    impl Finder {
        fn check(&mut self, segments: &[String]) {
            let first = segments.first().map(String::as_str).unwrap_or_default();
            let first = if first.is_empty() { segments.get(1).map(String::as_str).unwrap_or_default() } else { first };
            let clock = segments.windows(2).any(|w| CLOCKS.contains(&w[0].as_str()) && w[1] == "now");
            // A one-segment path is a local name (a variable called `worker`), not the crate.
            if (CRATES.contains(&first) && segments.len() > 1) || clock {
                self.0.push(segments.join("::"));
            }
        }
        fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
            match tree {
                syn::UseTree::Path(p) => {
                    prefix.push(p.ident.to_string());
                    self.use_tree(prefix, &p.tree);
                    prefix.pop();
                }
                syn::UseTree::Name(n) => self.check(&[prefix.clone(), vec![n.ident.to_string(), "_".into()]].concat()),
                syn::UseTree::Rename(r) => {
                    self.check(&[prefix.clone(), vec![r.ident.to_string(), "_".into()]].concat())
                }
                syn::UseTree::Glob(_) => self.check(&[prefix.clone(), vec!["*".into()]].concat()),
                syn::UseTree::Group(g) => g.items.iter().for_each(|item| self.use_tree(prefix, item)),
            }
        }
    }
    impl<'ast> Visit<'ast> for Finder {
        fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
            self.use_tree(&mut Vec::new(), &item.tree);
        }
        fn visit_path(&mut self, path: &'ast syn::Path) {
            self.check(&path.segments.iter().map(|s| s.ident.to_string()).collect::<Vec<_>>());
            syn::visit::visit_path(self, path);
        }
    }
    let file = syn::parse_file(source).unwrap_or_else(|e| panic!("parsing a source file: {e}"));
    let mut finder = Finder(Vec::new());
    finder.visit_file(&file);
    finder.0
}

#[test]
fn the_runtime_check_sees_clocks_entropy_and_workers() {
    for reaching in [
        "fn f() { let _ = std::time::SystemTime::now(); }",
        "use std::time::Instant; fn f() { let _ = Instant::now(); }",
        "fn f() { let _ = chrono::Utc::now(); }",
        "use worker::Env;",
        "fn f() { getrandom::fill(&mut [0u8; 4]).ok(); }",
        "use wasm_bindgen::JsValue;",
    ] {
        assert!(!reaches_the_runtime(reaching).is_empty(), "not seen: {reaching}");
    }
    for clean in ["use crate::time::Millis;", "fn f(now: Millis) -> Millis { now }", "// SystemTime::now()\nfn f() {}"]
    {
        assert_eq!(reaches_the_runtime(clean), Vec::<String>::new(), "{clean}");
    }
}

/// Core knows nothing of Workers: no dependency on the runtime's crates, and no read of the
/// clock or of entropy in its source (`now` and random sources are parameters).
#[test]
fn core_reads_no_clock_no_entropy_and_nothing_of_workers() {
    let core = crates_dir().join("core");
    let manifest = fs::read_to_string(core.join("Cargo.toml")).expect("core's manifest");
    let mut section = "";
    let mut offenders = Vec::new();
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            section = line;
            continue;
        }
        let name = line.split(['=', ' ']).next().unwrap_or_default();
        let runtime = ["worker", "wasm-bindgen", "js-sys", "web-sys", "getrandom"].contains(&name);
        if section == "[dependencies]" && runtime {
            offenders.push(format!("Cargo.toml: depends on {name}"));
        }
    }
    let mut files = Vec::new();
    rust_files(&core.join("src"), &mut files);
    for file in files {
        let source = fs::read_to_string(&file).expect("a readable source file");
        for found in reaches_the_runtime(&source) {
            offenders.push(format!("{}: {found}", file.display()));
        }
    }
    assert!(offenders.is_empty(), "core reaches the runtime, the clock or entropy: {offenders:#?}");
}
