//! Stage 1: what the annotated item is. Accepts a struct or an inherent impl block and reads each method into
//! a [`Method`] (receiver, arguments, return type, each classified by what it *is*); whether that may be
//! delegated is `validate.rs`'s business. Anything else gets one canonical error and is emitted unchanged.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote};
use syn::{
    Attribute, FnArg, Generics, Ident, ImplItem, Item, ItemImpl, ItemStruct, Pat, ReturnType,
    Signature, Type, Visibility,
};

use super::Errors;
use super::types::{self, ArgKind, ReturnKind};

pub(crate) enum Parsed {
    Struct(Box<StructInput>),
    Impl(Box<ImplInput>),
    /// Not something `#[entrust]` applies to: emitted as is, beside its error.
    Unsupported(TokenStream),
}

/// `#[entrust] struct S`.
pub(crate) struct StructInput {
    /// The attribute's own arguments (there must be none).
    pub(crate) args: TokenStream,
    pub(crate) item: ItemStruct,
    /// The generated wrapper of `Trust<S>` the stubs live on: `SStubs`.
    pub(crate) stubs: Ident,
}

/// `#[entrust] impl S { .. }`.
pub(crate) struct ImplInput {
    pub(crate) args: TokenStream,
    /// The user's impl block, minus our `#[entrust(skip)]` attributes.
    pub(crate) item: ItemImpl,
    /// `S<..>` as written after `impl`.
    pub(crate) self_ty: Type,
    /// The same path with its last segment renamed `SStubs`: the type the stubs are inherent methods of.
    pub(crate) stubs_ty: Type,
    /// Every method with a receiver, in order, except those marked `#[entrust(skip)]`.
    pub(crate) methods: Vec<Method>,
}

/// A method to delegate, with `Self` in its types already replaced by the impl's self type (inside the stub,
/// `Self` would name the stubs type).
pub(crate) struct Method {
    /// Attributes the stubs carry over: docs, `#[cfg]`s, `#[deprecated]`, `#[must_use]`.
    pub(crate) attrs: Vec<Attribute>,
    pub(crate) vis: Visibility,
    pub(crate) sig: Signature,
    pub(crate) receiver: ReceiverKind,
    pub(crate) args: Vec<Arg>,
    pub(crate) output: Output,
    /// Lifetime parameters and where clause, as written (type and const parameters are errors).
    pub(crate) generics: Generics,
    /// Set by validation: this method breaks a rule and gets no stub.
    pub(crate) rejected: bool,
}

pub(crate) enum ReceiverKind {
    /// `&self` or `self: &Self`.
    Shared,
    /// `&mut self` or `self: &mut Self`.
    Exclusive,
    /// `self` or `mut self` (the token, for the error).
    ByValue(TokenStream),
    /// `self: Box<Self>` and other typed receivers.
    Other(Box<Type>),
}

pub(crate) struct Arg {
    /// The parameter's name in the stub: the user's for a plain `name: T` pattern, else `argN`.
    pub(crate) name: Ident,
    pub(crate) ty: Type,
    pub(crate) kind: ArgKind,
}

pub(crate) struct Output {
    /// `None` for `()`.
    pub(crate) ty: Option<Type>,
    pub(crate) kind: ReturnKind,
}

pub(crate) fn parse(args: TokenStream, item: TokenStream, errors: &mut Errors) -> Parsed {
    let parsed = match syn::parse2::<Item>(item.clone()) {
        Ok(parsed) => parsed,
        // Not even an item: let rustc report the syntax error on the original tokens.
        Err(_) => return Parsed::Unsupported(item),
    };
    match parsed {
        Item::Struct(item) => {
            let stubs = format_ident!("{}Stubs", item.ident, span = item.ident.span());
            Parsed::Struct(Box::new(StructInput { args, item, stubs }))
        }
        Item::Impl(item) if item.trait_.is_none() => parse_impl(args, item, errors),
        Item::Impl(mut item) => {
            let (_, path, _) = item.trait_.as_ref().expect("a trait impl");
            errors.at(
                path,
                "`#[entrust]` cannot go on a trait impl: stubs are generated for inherent methods only; move \
                 the methods to an `#[entrust]` inherent impl block, or call the trait method through `apply`",
            );
            strip_skip_attrs(&mut item, errors);
            Parsed::Unsupported(item.into_token_stream())
        }
        Item::Enum(e) => {
            errors.at(
                e.enum_token,
                "`#[entrust]` cannot go on an enum: it declares a struct delegable; wrap the enum in a struct \
                 (`struct State(MyEnum)`) and put `#[entrust]` on that",
            );
            Parsed::Unsupported(item)
        }
        Item::Union(u) => {
            errors.at(
                u.union_token,
                "`#[entrust]` cannot go on a union: it declares a struct delegable; wrap the union in a \
                 struct and put `#[entrust]` on that",
            );
            Parsed::Unsupported(item)
        }
        Item::Trait(t) => {
            errors.at(
                t.trait_token,
                "`#[entrust]` cannot go on a trait: it goes on a struct and on that struct's inherent impl \
                 blocks",
            );
            Parsed::Unsupported(item)
        }
        Item::Fn(f) if is_skip(&args) => {
            errors.at(
                &f.sig.ident,
                "`#[entrust(skip)]` only means something inside an `#[entrust]` impl block: add `#[entrust]` \
                 to the impl block",
            );
            Parsed::Unsupported(item)
        }
        other => {
            errors.at(
                &other,
                "`#[entrust]` goes on a struct and on that struct's inherent impl blocks",
            );
            Parsed::Unsupported(item)
        }
    }
}

fn parse_impl(args: TokenStream, mut item: ItemImpl, errors: &mut Errors) -> Parsed {
    let skipped = strip_skip_attrs(&mut item, errors);
    // `impl $t` in a `macro_rules!` template: the path inside the fragment's invisible group.
    let self_ty = types::ungroup(&item.self_ty).clone();
    let Some(stubs_ty) = types::stubs_type(&self_ty) else {
        errors.at(
            &self_ty,
            "`#[entrust]` goes on the inherent impl block of an `#[entrust]` struct, named by its path \
             (`impl Account`, `impl<T> Account<T>`)",
        );
        return Parsed::Unsupported(item.into_token_stream());
    };
    let methods = item
        .items
        .iter()
        .enumerate()
        .filter_map(|(i, it)| match it {
            ImplItem::Fn(f) if !skipped.contains(&i) => Some(f),
            _ => None,
        })
        .filter(|f| f.sig.receiver().is_some())
        .map(|f| parse_method(&f.attrs, &f.vis, &f.sig, &self_ty))
        .collect();
    Parsed::Impl(Box::new(ImplInput {
        args,
        item,
        self_ty,
        stubs_ty,
        methods,
    }))
}

fn parse_method(attrs: &[Attribute], vis: &Visibility, sig: &Signature, self_ty: &Type) -> Method {
    let receiver = sig.receiver().expect("filtered on methods");
    let receiver = match types::reference_to_self(&receiver.ty, self_ty) {
        Some(false) => ReceiverKind::Shared,
        Some(true) => ReceiverKind::Exclusive,
        None if receiver.colon_token.is_none() || types::is_self(&receiver.ty) => {
            let (mutability, token) = (receiver.mutability, receiver.self_token);
            ReceiverKind::ByValue(quote!(#mutability #token))
        }
        None => ReceiverKind::Other(receiver.ty.clone()),
    };
    let args = sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(pat) => Some(pat),
            FnArg::Receiver(_) => None,
        })
        .enumerate()
        .map(|(i, pat)| {
            let name = match &*pat.pat {
                // The user's name where the user wrote it, but made by this macro (as the stubs' names are,
                // `expand::declared`): lints about the parameter are the method's business, not its stubs'
                // (clippy's `used_underscore_binding` fired on the stubs passing `_amount` on, `shadow_unrelated`
                // on their closures rebinding `amount`, review 94).
                Pat::Ident(p) if p.subpat.is_none() => {
                    let mut name = p.ident.clone();
                    name.set_span(Span::call_site().located_at(p.ident.span()));
                    name
                }
                // A destructuring pattern: the stub takes the whole value under a fresh, hygienic name.
                _ => Ident::new(&format!("arg{i}"), Span::mixed_site()),
            };
            let ty = types::replace_self(&pat.ty, self_ty);
            let kind = types::classify_arg(&ty);
            Arg { name, ty, kind }
        })
        .collect();
    let output = match &sig.output {
        // `-> ()` written out is the same method as no return type: the `_then` stub's continuation takes no
        // argument either way.
        ReturnType::Default => Output {
            ty: None,
            kind: ReturnKind::Owned,
        },
        ReturnType::Type(_, ty) if matches!(types::ungroup(ty), syn::Type::Tuple(t) if t.elems.is_empty()) => {
            Output {
                ty: None,
                kind: ReturnKind::Owned,
            }
        }
        ReturnType::Type(_, ty) => {
            let ty = types::replace_self(ty, self_ty);
            let kind = types::classify_return(&ty);
            Output { ty: Some(ty), kind }
        }
    };
    let mut generics = sig.generics.clone();
    if let Some(w) = &mut generics.where_clause {
        for predicate in &mut w.predicates {
            types::replace_self_in(predicate, self_ty);
        }
    }
    Method {
        // What the stubs may repeat: docs, `cfg`, `deprecated`, `must_use`, lint levels (`expect` becomes
        // `allow` on a stub: `expand::stub_attr`), and `cfg_attr`s that add only those.
        attrs: attrs.iter().filter(|a| stub_keeps(a)).cloned().collect(),
        vis: vis.clone(),
        sig: sig.clone(),
        receiver,
        args,
        output,
        generics,
        rejected: false,
    }
}

/// True for `#[entrust(skip)]`'s argument tokens.
fn is_skip(args: &TokenStream) -> bool {
    syn::parse2::<Ident>(args.clone()).is_ok_and(|i| i == "skip")
}

/// Removes our `#[entrust(..)]` attributes from the impl's items (they would otherwise expand this macro on
/// the item alone) and returns the indices of the items marked `#[entrust(skip)]`.
fn strip_skip_attrs(item: &mut ItemImpl, errors: &mut Errors) -> Vec<usize> {
    let mut skipped = Vec::new();
    for (i, it) in item.items.iter_mut().enumerate() {
        let attrs = match it {
            ImplItem::Fn(f) => &mut f.attrs,
            ImplItem::Const(c) => &mut c.attrs,
            ImplItem::Type(t) => &mut t.attrs,
            ImplItem::Macro(m) => &mut m.attrs,
            _ => continue,
        };
        attrs.retain(|a| {
            if !is_entrust_attr(a) {
                return true;
            }
            let args = match &a.meta {
                syn::Meta::List(list) => list.tokens.clone(),
                _ => TokenStream::new(),
            };
            if is_skip(&args) {
                skipped.push(i);
            } else {
                errors.at(
                    a,
                    "inside an `#[entrust]` impl block, a method takes only `#[entrust(skip)]` (no stub for it)",
                );
            }
            false
        });
    }
    skipped
}

fn is_entrust_attr(attr: &Attribute) -> bool {
    let path = attr.path();
    path.segments.last().is_some_and(|s| s.ident == "entrust")
        && (path.segments.len() == 1
            || (path.segments.len() == 2 && path.segments[0].ident == "trust_core"))
}

/// Attributes a method's stubs repeat (see `Method::attrs`).
fn stub_keeps(a: &Attribute) -> bool {
    const KEPT: &[&str] = &[
        "doc",
        "cfg",
        "deprecated",
        "must_use",
        "allow",
        "expect",
        "warn",
        "deny",
    ];
    attr_names(a).is_some_and(|names| {
        names
            .iter()
            .all(|name| KEPT.iter().any(|k| name.is_ident(k)))
    })
}

/// The names of the attributes `a` adds: its own, or for `#[cfg_attr(pred, x, y)]` those of `x` and `y`
/// (`None` when that does not parse).
pub(crate) fn attr_names(a: &Attribute) -> Option<Vec<syn::Path>> {
    if !a.path().is_ident("cfg_attr") {
        return Some(vec![a.path().clone()]);
    }
    let metas = a
        .parse_args_with(syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated)
        .ok()?;
    (metas.len() > 1).then(|| metas.iter().skip(1).map(|m| m.path().clone()).collect())
}
