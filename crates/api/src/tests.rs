//! The committed `openapi.json` holds exactly the schemas derived from the types.

use serde_json::Value;

const OPENAPI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../orchestrator/openapi.json");

#[test]
fn openapi_json_holds_the_derived_schemas() {
    let text = std::fs::read_to_string(OPENAPI).expect("reading openapi.json");
    let mut document: Value = serde_json::from_str(&text).expect("openapi.json is JSON");
    let derived = crate::schemas();
    let committed = &mut document["components"]["schemas"];
    let differing: Vec<&String> =
        derived.iter().filter(|(name, schema)| committed.get(name) != Some(schema)).map(|(name, _)| name).collect();
    for (name, schema) in &derived {
        committed[name] = schema.clone();
    }
    let regenerated = serde_json::to_string_pretty(&document).expect("serialising") + "\n";
    if regenerated == text {
        return;
    }
    if std::env::var_os("BATON_WRITE_OPENAPI").is_some() {
        std::fs::write(OPENAPI, regenerated).expect("writing openapi.json");
        return;
    }
    panic!(
        "crates/orchestrator/openapi.json is not the document derived from the types in crates/api \
         (schemas that differ: {differing:?}; otherwise its layout):\n{}\n\
         Regenerate it with: BATON_WRITE_OPENAPI=1 cargo test -p baton-api openapi",
        diff(&text, &regenerated)
    );
}

/// The lines that differ, as `-`/`+` pairs (a plain line-by-line diff of two pretty-printed
/// documents whose keys keep their order).
fn diff(old: &str, new: &str) -> String {
    let (old, new): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut out = String::new();
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        if i < old.len() && j < new.len() && old[i] == new[j] {
            i += 1;
            j += 1;
            continue;
        }
        // Resynchronise on the next line both share.
        let next = (i..old.len()).find_map(|a| (j..new.len()).find(|&b| old[a] == new[b]).map(|b| (a, b)));
        let (a, b) = next.unwrap_or((old.len(), new.len()));
        old[i..a].iter().for_each(|l| out.push_str(&format!("-{l}\n")));
        new[j..b].iter().for_each(|l| out.push_str(&format!("+{l}\n")));
        (i, j) = (a, b);
    }
    out
}
