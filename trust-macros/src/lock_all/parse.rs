//! The parsed model: `KEY, [read|write] LOCK, ... [; nest]`.

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::{Expr, Ident, Token};

/// One `lock_all!` invocation.
pub struct LockAllInput {
    /// The key expression, e.g. `&mut key`.
    pub key: Expr,
    /// The locks, in argument order.
    pub locks: Vec<LockArg>,
    /// `; nest` was given: also return a `NestedKey` for the next rank level.
    pub nest: bool,
    /// Where the whole input starts, for errors about a missing piece.
    pub span: Span,
}

/// One lock argument.
pub struct LockArg {
    pub access: Access,
    pub expr: Expr,
}

/// How an argument is taken.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `a` or `write a`: exclusive.
    Write,
    /// `read a`: shared (the lock must be `Sharable`).
    Read,
}

impl LockAllInput {
    /// Parses the input of macro `name` (`lock_all` or `try_lock_all`, for the messages).
    pub fn parse(input: ParseStream<'_>, name: &str) -> syn::Result<Self> {
        let span = input.span();
        if input.is_empty() || input.peek(Token![;]) || input.peek(Token![,]) {
            return Err(syn::Error::new(
                span,
                format!(
                    "`{name}!` needs this thread's key and the locks: `{name}!(&mut key, a, b)`"
                ),
            ));
        }
        let key: Expr = input.parse()?;
        let mut locks = Vec::new();
        let mut nest = false;
        while !input.is_empty() {
            if input.peek(Token![;]) {
                let semi = input.parse::<Token![;]>()?;
                let word: Ident = input.parse().map_err(|error| {
                    syn::Error::new(
                        if input.is_empty() {
                            semi.span
                        } else {
                            error.span()
                        },
                        format!("expected `nest` after `;`: `{name}!(&mut key, a; nest)`"),
                    )
                })?;
                if word != "nest" {
                    return Err(syn::Error::new(
                        word.span(),
                        format!("unknown option `{word}`: the only option after `;` is `nest`"),
                    ));
                }
                nest = true;
                if !input.is_empty() {
                    return Err(input.error("nothing may follow `; nest`"));
                }
                break;
            }
            input.parse::<Token![,]>()?;
            if input.is_empty() || input.peek(Token![;]) {
                continue; // trailing comma
            }
            locks.push(input.parse()?);
        }
        Ok(LockAllInput {
            key,
            locks,
            nest,
            span,
        })
    }
}

impl Parse for LockArg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        // `read`/`write` are contextual: only a mode when another expression follows directly
        // (`read c`), so a variable named `read` still works as a lock.
        let access = if input.peek(Ident) && starts_expression_after_ident(input) {
            let fork = input.fork();
            let word = fork.call(Ident::parse_any)?;
            match word.to_string().as_str() {
                "read" => Some(Access::Read),
                "write" => Some(Access::Write),
                _ => None,
            }
        } else {
            None
        };
        if access.is_some() {
            input.call(Ident::parse_any)?;
        }
        Ok(LockArg {
            access: access.unwrap_or(Access::Write),
            expr: input.parse()?,
        })
    }
}

/// Whether the token after the leading identifier begins another expression (`read c`,
/// `read *p`, `read &x`, `read self.lock`, `read (c)`), as opposed to continuing this one
/// (`read.0`, `read[i]`, `read::X`, `read,`).
///
/// `read (c)` and `read(c)` are the mode on `(c)`, not a call of a function `read` (review 77): a
/// call is never a lock argument that compiles (its result is a temporary that dies while its
/// guard lives, E0716), so reading it as a call only ever led to "cannot find function `read`".
fn starts_expression_after_ident(input: ParseStream<'_>) -> bool {
    input.peek2(Ident::peek_any)
        || input.peek2(Token![*])
        || input.peek2(Token![&])
        || input.peek2(syn::token::Paren)
}
