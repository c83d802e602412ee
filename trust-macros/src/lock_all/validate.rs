//! The rules the tokens alone can decide: at least one lock, and no place named twice.

use quote::ToTokens;
use syn::{Expr, Lit};

use super::parse::LockAllInput;

/// Checks the parsed input; the first broken rule becomes the error.
pub fn validate(input: &LockAllInput) -> syn::Result<()> {
    if input.locks.is_empty() {
        return Err(syn::Error::new(
            input.span,
            "`lock_all!` needs at least one lock after the key: `lock_all!(&mut key, a, b)`",
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
                    "`{}` is locked twice in this `lock_all!`: a thread would wait for itself \
                     forever; pass each lock once",
                    lock.expr.to_token_stream()
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
        Expr::Path(path) if path.qself.is_none() => Some(path.path.to_token_stream().to_string()),
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
