//! Expansion snapshots: `tests/expand/NAME.rs` holds items marked `#[entrust]`; the test expands them with this
//! crate's own code (no cargo-expand needed), pretty-prints the result with `prettyplease`, and compares it to
//! the checked-in `tests/expand/NAME.expanded.rs`, so a reviewer can read what the macro generates.
//! Regenerate with `ENTRUST_SNAPSHOTS=overwrite cargo test -p trust-macros snapshots` and read the diff.

use std::fs;
use std::path::Path;

use quote::ToTokens;
use syn::{Attribute, File, Item};

/// Expands every `#[entrust]` item of `file`, recursing into inline modules.
fn expand_items(items: Vec<Item>) -> Vec<Item> {
    let mut out = Vec::new();
    for mut item in items {
        if let Item::Mod(m) = &mut item
            && let Some((brace, inner)) = m.content.take()
        {
            m.content = Some((brace, expand_items(inner)));
            out.push(item);
            continue;
        }
        let attrs = match &mut item {
            Item::Struct(s) => Some(&mut s.attrs),
            Item::Impl(i) => Some(&mut i.attrs),
            Item::Enum(e) => Some(&mut e.attrs),
            Item::Union(u) => Some(&mut u.attrs),
            Item::Trait(t) => Some(&mut t.attrs),
            Item::Fn(f) => Some(&mut f.attrs),
            _ => None,
        };
        let Some(attrs) = attrs else {
            out.push(item);
            continue;
        };
        let Some(at) = attrs.iter().position(is_entrust) else {
            out.push(item);
            continue;
        };
        let attr = attrs.remove(at);
        let args = match attr.meta {
            syn::Meta::List(list) => list.tokens,
            _ => Default::default(),
        };
        let expanded = super::entrust(args, item.into_token_stream());
        let file: File = syn::parse2(expanded).expect("the expansion parses as items");
        out.extend(file.items);
    }
    out
}

fn is_entrust(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "entrust")
}

#[test]
fn snapshots() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/expand");
    let overwrite = std::env::var("ENTRUST_SNAPSHOTS").is_ok_and(|v| v == "overwrite");
    let mut cases = 0;
    let mut stale = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .expect("tests/expand exists")
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap().to_str().unwrap();
        if !name.ends_with(".rs") || name.ends_with(".expanded.rs") {
            continue;
        }
        cases += 1;
        let source = fs::read_to_string(&path).unwrap();
        let mut file: File = syn::parse_file(&source).expect("the case parses");
        file.items = expand_items(std::mem::take(&mut file.items));
        let expanded = prettyplease::unparse(&file);
        let snapshot = path.with_extension("expanded.rs");
        if overwrite {
            fs::write(&snapshot, &expanded).unwrap();
        } else if fs::read_to_string(&snapshot).ok().as_deref() != Some(expanded.as_str()) {
            stale.push(snapshot.display().to_string());
        }
    }
    assert!(cases > 0, "no cases in {}", dir.display());
    assert!(
        stale.is_empty(),
        "expansion changed for {stale:?}: review it, then run \
         `ENTRUST_SNAPSHOTS=overwrite cargo test -p trust-macros snapshots`"
    );
}
