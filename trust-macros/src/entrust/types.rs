//! What a type written in a method signature is, for delegation: moved as is, copied (`&str`, `&[T]`), cloned
//! (`&T`), or a borrow that cannot travel; plus `Self` replacement (inside a stub, `Self` is the stubs type) and the
//! stubs type's name.

use proc_macro2::TokenStream;
use quote::{ToTokens, format_ident};
use syn::visit_mut::{self, VisitMut};
use syn::{
    Lifetime, ParenthesizedGenericArguments, TraitBound, Type, TypeBareFn, TypePath,
    WherePredicate, parse_quote,
};

/// How an argument reaches the trustee.
pub(crate) enum ArgKind {
    /// Moved into the request (checked `Send + 'static` by the generated code).
    Moved,
    /// `&str`: copied into a `CopiedStr`.
    Str,
    /// `&[T]`: cloned into a `CopiedSlice<T>`.
    Slice(Type),
    /// `&T` (`T` borrowing nothing, not `str`, a slice or `dyn Trait`): `T` cloned into the request, checked
    /// `Clone + Send + 'static` by the generated code. The `T`.
    Ref(Type),
    /// `&mut T`: cannot be delegated.
    MutRef,
    /// Borrows from the caller (`Cow<'_, T>`, `Option<&T>`, `&dyn Trait`, ...): cannot be delegated. The offending tokens.
    Borrowed(TokenStream),
    /// `impl Trait` in argument position: a generic parameter in disguise.
    ImplTrait(TokenStream),
}

/// How a result comes back.
pub(crate) enum ReturnKind {
    Owned,
    /// A reference or a type with a non-`'static` lifetime: a borrow of `self`. The offending tokens.
    Borrowed(TokenStream),
    ImplTrait(TokenStream),
}

/// `ty` without the invisible groups a `macro_rules!` fragment (`$t:ty`, `$p:path`) is handed over in: `impl $t`
/// with `$t` = `Account` names `Account`, `memo: $t` with `$t` = `&str` is a `&str`. (Parentheses stay: the
/// docs promise `-> (())` the `then(())` continuation.)
pub(crate) fn ungroup(ty: &Type) -> &Type {
    match ty {
        Type::Group(g) => ungroup(&g.elem),
        _ => ty,
    }
}

pub(crate) fn classify_arg(ty: &Type) -> ArgKind {
    if let Some(t) = find(ty, Find::ImplTrait) {
        return ArgKind::ImplTrait(t);
    }
    if let Type::Reference(r) = ungroup(ty) {
        if r.mutability.is_some() {
            return ArgKind::MutRef;
        }
        if !r.lifetime.as_ref().is_some_and(is_static) {
            match ungroup(&r.elem) {
                Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => {
                    return ArgKind::Str;
                }
                Type::Slice(s) if find(&s.elem, Find::Borrow).is_none() => {
                    return ArgKind::Slice((*s.elem).clone());
                }
                // A trait object has no `Clone`; it stays a borrow, with the borrow's message.
                Type::TraitObject(_) => {}
                elem if find(elem, Find::Borrow).is_none() => {
                    return ArgKind::Ref(elem.clone());
                }
                _ => {}
            }
        }
    }
    match find(ty, Find::Borrow) {
        Some(t) => ArgKind::Borrowed(t),
        None => ArgKind::Moved,
    }
}

pub(crate) fn classify_return(ty: &Type) -> ReturnKind {
    if let Some(t) = find(ty, Find::ImplTrait) {
        return ReturnKind::ImplTrait(t);
    }
    match find(ty, Find::Borrow) {
        Some(t) => ReturnKind::Borrowed(t),
        None => ReturnKind::Owned,
    }
}

fn is_static(l: &Lifetime) -> bool {
    l.ident == "static"
}

#[derive(Clone, Copy, PartialEq)]
enum Find {
    /// A reference or lifetime other than `'static`.
    Borrow,
    ImplTrait,
}

/// The first part of `ty` that is `what`, as tokens (for the error's span).
fn find(ty: &Type, what: Find) -> Option<TokenStream> {
    struct Finder {
        what: Find,
        found: Option<TokenStream>,
    }
    impl VisitMut for Finder {
        fn visit_type_mut(&mut self, ty: &mut Type) {
            if self.found.is_some() {
                return;
            }
            match ty {
                Type::Reference(r)
                    if self.what == Find::Borrow && !r.lifetime.as_ref().is_some_and(is_static) =>
                {
                    self.found = Some(r.to_token_stream());
                }
                Type::ImplTrait(t) if self.what == Find::ImplTrait => {
                    self.found = Some(t.to_token_stream());
                }
                _ => visit_mut::visit_type_mut(self, ty),
            }
        }
        fn visit_lifetime_mut(&mut self, l: &mut Lifetime) {
            if self.what == Find::Borrow && self.found.is_none() && !is_static(l) {
                self.found = Some(l.to_token_stream());
            }
        }
        // Lifetimes inside `fn(&str)`, `dyn Fn(&str)` and `for<'a> ..` are bound there (higher-ranked): they
        // borrow nothing from the caller.
        fn visit_type_bare_fn_mut(&mut self, _: &mut TypeBareFn) {}
        fn visit_parenthesized_generic_arguments_mut(
            &mut self,
            _: &mut ParenthesizedGenericArguments,
        ) {
        }
        fn visit_trait_bound_mut(&mut self, b: &mut TraitBound) {
            if b.lifetimes.is_none() {
                visit_mut::visit_trait_bound_mut(self, b);
            }
        }
    }
    let mut finder = Finder { what, found: None };
    finder.visit_type_mut(&mut ty.clone());
    finder.found
}

/// Tokens as a user would write them (`&mut Vec<u8>`, not `& mut Vec < u8 >`), for error messages.
pub(crate) fn display(tokens: impl ToTokens) -> String {
    let raw = tokens.to_token_stream().to_string();
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ' ' {
            let prev = out.chars().last().unwrap_or(' ');
            let next = chars.peek().copied().unwrap_or(' ');
            let glue_after = matches!(prev, '&' | '<' | '(' | '[' | ':');
            let glue_before = matches!(next, '<' | '>' | ',' | ';' | ')' | ']' | ':')
                || (next == '(' && (prev.is_alphanumeric() || prev == '_'));
            // `->` keeps its spaces (the space after it follows a `>` that closes nothing).
            if (glue_after || glue_before) && prev != '-' && !out.ends_with("->") {
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// `Some(false)` for `&Self`, `Some(true)` for `&mut Self` (any lifetime), else `None`; `&S` and `&mut S`, `S`
/// the impl's self type as written after `impl`, are the same receivers (`self: &Account`).
pub(crate) fn reference_to_self(ty: &Type, self_ty: &Type) -> Option<bool> {
    match ungroup(ty) {
        Type::Reference(r) if is_self(&r.elem) || same_type(&r.elem, self_ty) => {
            Some(r.mutability.is_some())
        }
        _ => None,
    }
}

pub(crate) fn is_self(ty: &Type) -> bool {
    matches!(ungroup(ty), Type::Path(p) if p.qself.is_none() && p.path.is_ident("Self"))
}

/// The same tokens, invisible groups aside.
fn same_type(a: &Type, b: &Type) -> bool {
    ungroup(a).to_token_stream().to_string() == ungroup(b).to_token_stream().to_string()
}

/// `S<..>` -> `SStubs<..>` for a path type; `None` for anything else (`[T]`, `<T as Tr>::X`, ...).
pub(crate) fn stubs_type(self_ty: &Type) -> Option<Type> {
    let Type::Path(TypePath { qself: None, path }) = ungroup(self_ty) else {
        return None;
    };
    let mut path = path.clone();
    let last = path.segments.last_mut()?;
    if last.ident == "Self" {
        return None;
    }
    // Spanned at the user's type name: if the struct lacks `#[entrust]`, rustc's "cannot find type" points there.
    last.ident = format_ident!("{}Stubs", last.ident, span = last.ident.span());
    Some(Type::Path(TypePath { qself: None, path }))
}

struct ReplaceSelf<'a>(&'a Type);

impl VisitMut for ReplaceSelf<'_> {
    fn visit_type_mut(&mut self, ty: &mut Type) {
        if let Type::Path(p) = ty
            && p.qself.is_none()
            && p.path.leading_colon.is_none()
            && p.path.segments.first().is_some_and(|s| s.ident == "Self")
        {
            let self_ty = self.0;
            if p.path.segments.len() == 1 {
                *ty = self_ty.clone();
            } else {
                let rest = p.path.segments.iter().skip(1);
                *ty = parse_quote!(<#self_ty>::#(#rest)::*);
            }
            return;
        }
        visit_mut::visit_type_mut(self, ty);
    }
}

/// `ty` with every `Self` replaced by `self_ty`.
pub(crate) fn replace_self(ty: &Type, self_ty: &Type) -> Type {
    let mut ty = ty.clone();
    ReplaceSelf(self_ty).visit_type_mut(&mut ty);
    ty
}

pub(crate) fn replace_self_in(predicate: &mut WherePredicate, self_ty: &Type) {
    ReplaceSelf(self_ty).visit_where_predicate_mut(predicate);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(ty: Type) -> &'static str {
        match classify_arg(&ty) {
            ArgKind::Moved => "moved",
            ArgKind::Str => "str",
            ArgKind::Slice(_) => "slice",
            ArgKind::Ref(_) => "ref",
            ArgKind::MutRef => "mut",
            ArgKind::Borrowed(_) => "borrowed",
            ArgKind::ImplTrait(_) => "impl",
        }
    }

    #[test]
    fn arguments_are_classified() {
        assert_eq!(arg(parse_quote!(i64)), "moved");
        assert_eq!(arg(parse_quote!(String)), "moved");
        assert_eq!(arg(parse_quote!(&str)), "str");
        assert_eq!(arg(parse_quote!(&'a str)), "str");
        assert_eq!(arg(parse_quote!(&'static str)), "moved");
        assert_eq!(arg(parse_quote!(&[u8])), "slice");
        assert_eq!(arg(parse_quote!(&[String])), "slice");
        assert_eq!(arg(parse_quote!(&[&str])), "borrowed");
        assert_eq!(arg(parse_quote!(&mut Vec<u8>)), "mut");
        assert_eq!(arg(parse_quote!(&mut str)), "mut");
        assert_eq!(arg(parse_quote!(&u64)), "ref");
        assert_eq!(arg(parse_quote!(&'a String)), "ref");
        assert_eq!(arg(parse_quote!(&Vec<Self>)), "ref");
        assert_eq!(arg(parse_quote!(&[u8; 4])), "ref");
        assert_eq!(arg(parse_quote!(&Option<&str>)), "borrowed");
        assert_eq!(arg(parse_quote!(&&u64)), "borrowed");
        assert_eq!(arg(parse_quote!(&dyn std::fmt::Display)), "borrowed");
        assert_eq!(arg(parse_quote!(&'static u64)), "moved");
        assert_eq!(arg(parse_quote!(Option<&str>)), "borrowed");
        assert_eq!(arg(parse_quote!(Cow<'_, str>)), "borrowed");
        assert_eq!(
            arg(parse_quote!(Box<dyn Fn(&str) -> usize + Send>)),
            "moved"
        );
        assert_eq!(arg(parse_quote!(fn(&str) -> &str)), "moved");
        assert_eq!(arg(parse_quote!(Box<dyn for<'a> Tr<'a> + Send>)), "moved");
        assert_eq!(arg(parse_quote!(impl Into<String>)), "impl");
        assert_eq!(arg(parse_quote!(Vec<impl Send>)), "impl");
    }

    #[test]
    fn types_display_as_written() {
        let shown = |ty: Type| display(ty);
        assert_eq!(shown(parse_quote!(&mut Vec<u8>)), "&mut Vec<u8>");
        assert_eq!(shown(parse_quote!(&'a str)), "&'a str");
        assert_eq!(
            shown(parse_quote!(std::slice::Iter<'_, Vec<String>>)),
            "std::slice::Iter<'_, Vec<String>>"
        );
        assert_eq!(
            shown(parse_quote!(Box<dyn Fn(&str) -> (i64, u8) + Send>)),
            "Box<dyn Fn(&str) -> (i64, u8) + Send>"
        );
        assert_eq!(shown(parse_quote!([u8; 4])), "[u8; 4]");
        assert_eq!(shown(parse_quote!(impl Into<String>)), "impl Into<String>");
    }

    #[test]
    fn self_is_replaced() {
        let self_ty: Type = parse_quote!(Account<T>);
        let replaced = replace_self(&parse_quote!(Vec<Self>), &self_ty);
        assert_eq!(
            replaced.to_token_stream().to_string(),
            "Vec < Account < T > >"
        );
        let replaced = replace_self(&parse_quote!(Self::Item), &self_ty);
        assert_eq!(
            replaced.to_token_stream().to_string(),
            "< Account < T > > :: Item"
        );
    }

    #[test]
    fn receivers_naming_the_struct_and_grouped_types() {
        let self_ty: Type = parse_quote!(Counter);
        assert_eq!(
            reference_to_self(&parse_quote!(&Self), &self_ty),
            Some(false)
        );
        assert_eq!(
            reference_to_self(&parse_quote!(&Counter), &self_ty),
            Some(false)
        );
        assert_eq!(
            reference_to_self(&parse_quote!(&'a mut Counter), &self_ty),
            Some(true)
        );
        assert_eq!(reference_to_self(&parse_quote!(&Other), &self_ty), None);
        assert_eq!(
            reference_to_self(&parse_quote!(Box<Counter>), &self_ty),
            None
        );
        // `$t:ty` in a `macro_rules!`: an invisible group around the type.
        let grouped = Type::Group(syn::TypeGroup {
            group_token: Default::default(),
            elem: Box::new(parse_quote!(&str)),
        });
        assert_eq!(arg(grouped), "str");
        let grouped = Type::Group(syn::TypeGroup {
            group_token: Default::default(),
            elem: Box::new(parse_quote!(crate::Counter)),
        });
        assert_eq!(
            stubs_type(&grouped).unwrap().to_token_stream().to_string(),
            "crate :: CounterStubs"
        );
    }

    #[test]
    fn stubs_type_renames_the_last_segment() {
        let t = stubs_type(&parse_quote!(crate::bank::Account<T>)).unwrap();
        assert_eq!(
            t.to_token_stream().to_string(),
            "crate :: bank :: AccountStubs < T >"
        );
        assert!(stubs_type(&parse_quote!([u8])).is_none());
        assert!(stubs_type(&parse_quote!(<T as Tr>::X)).is_none());
    }
}
