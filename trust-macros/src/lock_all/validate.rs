//! The rules the tokens alone can decide: at least one lock, and no place named twice.

use proc_macro2::Span;
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::{Expr, Lit};

use super::parse::LockAllInput;

/// Checks the parsed input; the first broken rule becomes the error.
/// `name` is the macro's (`lock_all` or `try_lock_all`), for the messages.
pub fn validate(input: &LockAllInput, name: &str) -> syn::Result<()> {
    if input.locks.is_empty() {
        return Err(syn::Error::new(
            input.span,
            format!("`{name}!` needs at least one lock after the key: `{name}!(&mut key, a, b)`"),
        ));
    }
    let mut seen: Vec<String> = Vec::new();
    for lock in &input.locks {
        // Only place expressions name the same lock every time they are evaluated; `v[f()]` twice
        // may be two locks, and is left to the run-time check.
        let Some(place) = place_key(&lock.expr) else {
            continue;
        };
        if seen.contains(&place) {
            return Err(syn::Error::new_spanned(
                &lock.expr,
                format!(
                    "`{}` is locked twice in this `{name}!`: {}; pass each lock once",
                    compact(&lock.expr.to_token_stream().to_string()),
                    if name == "try_lock_all" {
                        "trying would always fail (the lock is taken by the time it comes again)"
                    } else {
                        "a thread would wait for itself forever"
                    }
                ),
            ));
        }
        seen.push(place);
    }
    Ok(())
}

/// A canonical spelling of a place expression (`a`, `self.x`, `v[3]`, `v[i]`, `*p`, `&a`), or
/// `None` if evaluating it could name different locks on two evaluations.
fn place_key(expr: &Expr) -> Option<String> {
    match expr {
        Expr::Path(path) if path.qself.is_none() => Some(hygienic_path(&path.path)),
        Expr::Field(field) => Some(format!(
            "{}.{}",
            place_key(&field.base)?,
            field.member.to_token_stream()
        )),
        Expr::Index(index) => {
            let position = match &*index.index {
                Expr::Lit(lit) => match &lit.lit {
                    Lit::Int(int) => int.base10_digits().to_owned(),
                    _ => return None,
                },
                other => place_key(other)?,
            };
            Some(format!("{}[{position}]", place_key(&index.expr)?))
        }
        // `&a`, `(a)` and `*a` (through a reference) name the same lock as `a`.
        Expr::Reference(reference) => place_key(&reference.expr),
        Expr::Paren(paren) => place_key(&paren.expr),
        Expr::Group(group) => place_key(&group.expr),
        Expr::Unary(unary) if matches!(unary.op, syn::UnOp::Deref(_)) => place_key(&unary.expr),
        _ => None,
    }
}

/// A path's text with each segment's hygiene context: `m` written in a `macro_rules!` body and a
/// caller's `m` passed in as `$a` print alike but are two variables (review 77), so they must not
/// compare equal. Which context resolves to which variable is the compiler's business; two
/// identifiers in one context with one name are one variable, which is all this check needs. (An
/// identifier that reaches the same variable from another context is missed here and caught by
/// address at run time.)
fn hygienic_path(path: &syn::Path) -> String {
    let mut out = String::new();
    if path.leading_colon.is_some() {
        out.push_str("::");
    }
    for (i, segment) in path.segments.iter().enumerate() {
        if i > 0 {
            out.push_str("::");
        }
        // `r#m` is `m`.
        out.push_str(&segment.ident.unraw().to_string());
        out.push_str(&segment.arguments.to_token_stream().to_string());
        out.push_str(&syntax_context(segment.ident.span()));
    }
    out
}

/// The hygiene context of a span, as the compiler prints it (`#3` in `#3 bytes(10..11)`). Stable
/// Rust gives macros no other way to compare contexts. Outside rustc's expansion (unit tests, an
/// IDE's own macro server) or if the format ever changes, this is empty: every identifier then
/// counts as one context, the behaviour before review 77 (and `tests/adversarial_review77.rs`
/// stops compiling, which is how a change of format would show).
fn syntax_context(span: Span) -> String {
    let debug = format!("{span:?}");
    match debug
        .strip_prefix('#')
        .and_then(|rest| rest.split_once(' '))
    {
        Some((digits, _)) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            format!("#{digits}")
        }
        _ => String::new(),
    }
}

/// A token stream's text without the spaces `to_string` puts between tokens (`accounts [0]` ->
/// `accounts[0]`), keeping those that separate two words.
fn compact(text: &str) -> String {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    for (i, &c) in chars.iter().enumerate() {
        let between_words =
            i > 0 && i + 1 < chars.len() && word(chars[i - 1]) && word(chars[i + 1]);
        if c != ' ' || between_words {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::compact;

    #[test]
    fn compact_drops_spaces_between_punctuation_only() {
        assert_eq!(compact("accounts [0]"), "accounts[0]");
        assert_eq!(compact("self . locks [i] . 0"), "self.locks[i].0");
        assert_eq!(compact("* boxed"), "*boxed");
        assert_eq!(compact("& mut a"), "&mut a");
    }
}
