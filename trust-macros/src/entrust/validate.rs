//! Stage 2: every rule a method must obey to be delegated, each failing with an error on the offending token
//! that says why and what to do instead. A method that breaks a rule is marked `rejected` (no stub); the rest
//! are still expanded. Rules that need types (is it `Send`? is the struct `#[entrust]`?) are checked by the
//! generated code instead, through bounds whose `on_unimplemented` wording names the problem: see
//! `expand::packed` and `trust_core::__private`.

use std::collections::HashSet;

use syn::GenericParam;
use syn::ext::IdentExt;

use super::Errors;
use super::expand::variant_names;
use super::parse::{ImplInput, Method, ReceiverKind, StructInput};
use super::types::{ArgKind, ReturnKind, display};

/// Methods of `Trust<T>` (inherent, or of a trait in the prelude) that a stub of the same name could never be
/// reached past: method lookup finds them on the handle before it dereferences to the stubs.
const SHADOWED: &[&str] = &[
    "apply",
    "apply_with",
    "apply_then",
    "apply_async",
    "trustee",
    "try_unwrap",
    "into_inner",
    "clone",
    "clone_from",
    "clone_into",
    "to_owned",
    "into",
    "try_into",
    "drop",
    "deref",
];

pub(crate) fn structure(input: &StructInput, errors: &mut Errors) {
    if !input.args.is_empty() {
        errors.at(&input.args, "`#[entrust]` on a struct takes no arguments");
    }
    for param in &input.item.generics.params {
        if let GenericParam::Lifetime(l) = param {
            errors.at(
                l,
                "an `#[entrust]` struct cannot have lifetime parameters: an entrusted value lives on its \
                 trustee for as long as any handle does, so it must be `'static`; own the data instead",
            );
        }
    }
}

pub(crate) fn implementation(input: &mut ImplInput, errors: &mut Errors) {
    if !input.args.is_empty() {
        errors.at(
            &input.args,
            "`#[entrust]` on an impl block takes no arguments (`#[entrust(skip)]` goes on a method inside it)",
        );
    }
    for method in &mut input.methods {
        let before = errors.count();
        method_rules(method, errors);
        method.rejected = errors.count() > before;
    }
    // The blocking stubs' names, for clashes with the `_then` / `_async` stubs of other methods. A rejected
    // method gets no stubs, so it clashes with nothing (its own error is enough).
    let defined: HashSet<String> = input
        .methods
        .iter()
        .filter(|m| !m.rejected)
        .map(|m| m.sig.ident.to_string())
        .collect();
    for method in input.methods.iter_mut().filter(|m| !m.rejected) {
        let before = errors.count();
        stub_names_clash(&method.sig.ident, &defined, errors);
        method.rejected = errors.count() > before;
    }
}

fn method_rules(method: &Method, errors: &mut Errors) {
    let sig = &method.sig;
    let name = &sig.ident;
    match &method.receiver {
        ReceiverKind::Shared | ReceiverKind::Exclusive => {}
        ReceiverKind::ByValue(token) => errors.at(
            token,
            format_args!(
                "`{name}` takes `self` by value, which cannot be delegated: the value stays on its trustee \
                 and never moves out; take `&mut self` (use `std::mem::take` to move a field out), or mark \
                 the method `#[entrust(skip)]`"
            ),
        ),
        ReceiverKind::Other(ty) => errors.at(
            ty,
            format_args!(
                "`{name}` has a `self: {}` receiver, which cannot be delegated: a stub calls the method on \
                 the value the trustee holds, as `&self` or `&mut self`; take one of those, or mark the \
                 method `#[entrust(skip)]`",
                display(ty)
            ),
        ),
    }
    if let Some(token) = &sig.asyncness {
        errors.at(
            token,
            format_args!(
                "`async fn {name}` cannot be delegated: the trustee runs each call to completion and never \
                 awaits; make it a plain `fn` (callers can still await it through the generated \
                 `{name}_async` stub), or mark it `#[entrust(skip)]`"
            ),
        );
    }
    if let Some(token) = &sig.unsafety {
        errors.at(
            token,
            format_args!(
                "`unsafe fn {name}` cannot be delegated: its safety contract would have to hold on the \
                 trustee's thread, which the caller cannot see; wrap it in a safe method, or mark it \
                 `#[entrust(skip)]`"
            ),
        );
    }
    for param in &sig.generics.params {
        let what = match param {
            GenericParam::Lifetime(_) => continue,
            GenericParam::Type(_) => "type",
            GenericParam::Const(_) => "const",
        };
        errors.at(
            param,
            format_args!(
                "`{name}` has a generic {what} parameter, which cannot be delegated: each stub sends one \
                 monomorphic function pointer, fixed when the impl is compiled; use a concrete type (the \
                 struct itself may be generic), or mark the method `#[entrust(skip)]`"
            ),
        );
    }
    for arg in &method.args {
        let ty = display(&arg.ty);
        match &arg.kind {
            ArgKind::Moved | ArgKind::Str | ArgKind::Slice(_) | ArgKind::Ref(_) => {}
            ArgKind::MutRef => errors.at(
                &arg.ty,
                format_args!(
                    "`{}: {ty}` cannot be delegated: a `&mut` parameter would let the trustee write into the \
                     caller's memory while the caller may be running; take the value by value and return \
                     the new one",
                    arg.name
                ),
            ),
            ArgKind::Borrowed(at) => errors.at(
                at,
                format_args!(
                    "`{}: {ty}` borrows from the caller, which cannot be delegated: arguments are moved \
                     into the request and must be `'static`; only `&str`, `&[T]` and `&T` (`T: Clone`, borrowing \
                     nothing) are copied for you. Pass an owned value (`String`, `Vec<T>`, the value itself)",
                    arg.name
                ),
            ),
            ArgKind::ImplTrait(at) => errors.at(
                at,
                format_args!(
                    "`{}: {ty}` is a generic parameter in disguise, which cannot be delegated: each stub \
                     sends one monomorphic function pointer; use a concrete type, or mark the method \
                     `#[entrust(skip)]`",
                    arg.name
                ),
            ),
        }
    }
    let output = display(&method.output.ty);
    match &method.output.kind {
        ReturnKind::Owned => {}
        ReturnKind::Borrowed(at) => errors.at(
            at,
            format_args!(
                "`{name}` returns `{output}`, a borrow of `self`, which cannot be delegated: the value \
                 stays on its trustee and the borrow would outlive the call; return an owned value (clone \
                 or copy it), or mark the method `#[entrust(skip)]` and read through `apply`"
            ),
        ),
        ReturnKind::ImplTrait(at) => errors.at(
            at,
            format_args!(
                "`{name}` returns an opaque `impl Trait`, which cannot be delegated: the result must be a \
                 nameable `Send + 'static` type; return a concrete type (e.g. collect into a `Vec`)"
            ),
        ),
    }
    // `r#into_inner` is `into_inner` all the same.
    let plain = name.unraw();
    if SHADOWED.contains(&plain.to_string().as_str()) {
        errors.at(
            name,
            format_args!(
                "a stub named `{plain}` would be unreachable: `Trust<T>` has its own `{plain}` method, which \
                 method lookup finds first; rename the method, or mark it `#[entrust(skip)]`"
            ),
        );
    }
}

fn stub_names_clash(name: &syn::Ident, defined: &HashSet<String>, errors: &mut Errors) {
    for variant in variant_names(name) {
        if defined.contains(&variant.to_string()) {
            errors.at(
                name,
                format_args!(
                    "the stubs of `{name}` include `{variant}`, which is also the stub of this block's method \
                     `{variant}`; rename one of them, or mark one `#[entrust(skip)]`"
                ),
            );
        }
    }
}
