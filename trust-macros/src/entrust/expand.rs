//! Stage 3: the generated code. For `#[entrust] struct Account` the stubs type (a transparent wrapper of
//! `Trust<Account>` that `Trust<Account>` dereferences to) and the `Entrusted` impl that ties them together;
//! for `#[entrust] impl Account` the user's impl unchanged and, per method, three stubs on the
//! stubs type: `name` (blocking, `Trust::apply_with`), `name_then` (`Trust::apply_then`) and `name_async`
//! (`Trust::apply_async`). Each kind of stub is one function below; a new kind is one more.
//!
//! Every stub sends one request: a closure that calls the method by path (`<Account>::deposit`), so it
//! compiles to one monomorphic function, and the packed arguments. Packing (`__private::arg`, `str_arg`,
//! `slice_arg`, `ref_arg`, and `ret` for the result) is where `Send + 'static` is checked, once per type and at the user's
//! token; the packed values are then `Send` without rustc asking again at each `apply*` call. Generated code names
//! the runtime only as `::trust_core::__private::*`; its own locals use mixed-site hygiene so they can never
//! clash with the user's parameter names.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{GenericParam, Ident, Type};

use super::parse::{Arg, ImplInput, Method, StructInput, attr_names};
use super::types::ArgKind;

/// The names of the non-blocking stubs of method `name`, spanned at it.
pub(crate) fn variant_names(name: &Ident) -> [Ident; 2] {
    [
        format_ident!("{}_then", name, span = name.span()),
        format_ident!("{}_async", name, span = name.span()),
    ]
}

/// A stub's name as it is declared: where the method's name is, but made by this macro, so that `dead_code`
/// (most methods are only ever called one way; a private struct's method called only through its `_then`
/// stub would be "never used", review 37) stays quiet about the stub as about any item an external macro
/// makes, with no `allow`, which a crate's `forbid(dead_code)` would refuse (review 58).
fn declared(name: &Ident) -> Ident {
    let mut declared = name.clone();
    declared.set_span(proc_macro2::Span::call_site().located_at(name.span()));
    declared
}

/// `#[entrust] struct S`: the struct, its stubs type, and `unsafe impl Entrusted`. With errors (`ok` false),
/// the struct alone.
pub(crate) fn structure(input: &StructInput, ok: bool) -> TokenStream {
    let item = &input.item;
    if !ok {
        return item.to_token_stream();
    }
    let (vis, ident, stubs) = (&item.vis, &item.ident, &input.stubs);
    let generics = &item.generics;
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let doc = format!(
        " The delegated methods of [`{ident}`]: a `Trust<{ident}>` dereferences to this type, so every stub \
         that `#[entrust]` generates on an impl block of `{ident}` is called as a method of the handle."
    );
    let entrusted_where = send_static_bound(generics, &quote!(#ident #ty_generics), where_clause);
    // Each item below names the struct: a deprecated struct's own expansion must not warn (review 73), as a
    // deprecated method's stubs do not (`stub_allows`).
    let allows: TokenStream = item.attrs.iter().filter_map(allow_deprecated).collect();
    let f = local("f");
    quote! {
        #item

        #[doc = #doc]
        #allows
        #[repr(transparent)]
        #vis struct #stubs #generics (::trust_core::__private::Trust<#ident #ty_generics>) #where_clause;

        #allows
        impl #impl_generics ::core::fmt::Debug for #stubs #ty_generics #where_clause {
            fn fmt(&self, #f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                #f.debug_tuple(::core::stringify!(#stubs)).field(&self.0).finish()
            }
        }

        // Sound by construction: the stubs type above is `#[repr(transparent)]` over `Trust<Self>`.
        #allows
        unsafe impl #impl_generics ::trust_core::__private::Entrusted for #ident #ty_generics #entrusted_where {
            type Stubs = #stubs #ty_generics;
        }
    }
}

/// `where` plus `ty: Send + 'static` when the item is generic: the bound then holds per instantiation (a
/// non-generic type is checked by `Entrusted`'s supertraits directly, with rustc's own message).
fn send_static_bound(
    generics: &syn::Generics,
    ty: &TokenStream,
    where_clause: Option<&syn::WhereClause>,
) -> TokenStream {
    extra_bound(
        generics,
        &quote!(#ty: ::core::marker::Send + 'static),
        where_clause,
    )
}

fn extra_bound(
    generics: &syn::Generics,
    bound: &TokenStream,
    where_clause: Option<&syn::WhereClause>,
) -> TokenStream {
    let generic = generics
        .params
        .iter()
        .any(|p| !matches!(p, GenericParam::Lifetime(_)));
    let predicates = where_clause.map(|w| &w.predicates);
    match (generic, predicates) {
        (false, _) => where_clause.to_token_stream(),
        (true, Some(p)) if !p.empty_or_trailing() => quote!(where #p, #bound),
        (true, Some(p)) => quote!(where #p #bound),
        (true, None) => quote!(where #bound),
    }
}

/// `#[entrust] impl S`: the impl as written, and the stubs of every method that passed validation.
pub(crate) fn implementation(input: &ImplInput) -> TokenStream {
    let item = &input.item;
    let self_ty = &input.self_ty;
    let stubs_ty = &input.stubs_ty;
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    // A generic impl states what it relies on: that `S<..>` is entrusted, with this stubs type.
    let stubs_where = extra_bound(
        &item.generics,
        &quote!(#self_ty: ::trust_core::__private::Entrusted<Stubs = #stubs_ty>),
        where_clause,
    );
    let stubs = input.methods.iter().filter(|m| !m.rejected).map(|m| {
        let [blocking, then, asynchronous] = [
            blocking_stub(self_ty, m),
            then_stub(self_ty, m),
            async_stub(self_ty, &item.generics, m),
        ];
        quote!(#blocking #then #asynchronous)
    });
    // The impl's `#[cfg]`s and lint levels hold for its stubs too (an `#[allow(deprecated)]` over an impl whose
    // methods take a deprecated type: the stubs repeat the type).
    let attrs = item
        .attrs
        .iter()
        .filter(|a| {
            attr_names(a).is_some_and(|names| {
                names.iter().all(|n| {
                    ["cfg", "allow", "expect", "warn", "deny", "forbid"]
                        .iter()
                        .any(|k| n.is_ident(k))
                })
            })
        })
        .map(stub_attr);
    quote! {
        #item

        #(#attrs)*
        impl #impl_generics #stubs_ty #stubs_where {
            #(#stubs)*
        }
    }
}

/// Locals of the generated code, hygienic: they cannot capture or shadow the user's variables. Prefixed too:
/// hygiene does not keep a pattern from naming a constant or unit struct in scope (a `const this` in the
/// user's module made `|this: &mut S|` a constant pattern, review 94), and no one names a constant `__this`.
fn local(name: &str) -> Ident {
    Ident::new(&format!("__{name}"), Span::mixed_site())
}

/// The handle inside the stubs value. Spanned at the impl's type, so that if the struct lacks `#[entrust]`
/// every stub reports the same error there (and rustc shows it once). Its `self` and the stub's receiver's
/// (`receiver`) have the same span, as hygiene requires inside a `macro_rules!` (review 59).
fn trust(self_ty: &Type) -> TokenStream {
    quote_spanned!(self_ty.span()=> ::trust_core::__private::trust_of::<#self_ty>(self))
}

/// A stub's receiver: `&self`, with the method's lifetime if it names one (`&'a self`: a lifetime parameter
/// the stub would not use otherwise, review 59), spanned as the `self` of `trust`.
fn receiver(m: &Method, self_ty: &Type) -> TokenStream {
    let lifetime = receiver_lifetime(m);
    quote_spanned!(self_ty.span()=> & #lifetime self)
}

/// The lifetime the method's receiver names, if any: `&'a self`, `self: &'a Self` (also through a
/// `macro_rules!` fragment's invisible group).
fn receiver_lifetime(m: &Method) -> Option<syn::Lifetime> {
    m.sig
        .receiver()
        .and_then(|r| match (&r.reference, super::types::ungroup(&r.ty)) {
            (Some((_, lifetime)), _) => lifetime.clone(),
            (None, Type::Reference(reference)) => reference.lifetime.clone(),
            _ => None,
        })
}

/// The stub's parameters after `&self`: the method's own, with `Self` replaced.
fn params(m: &Method) -> impl Iterator<Item = TokenStream> + '_ {
    m.args.iter().map(|Arg { name, ty, .. }| quote!(#name: #ty))
}

/// How an argument travels: its type in the request, the expression that packs it (in the stub: the
/// `Send + 'static` check happens here, at the user's type), and the one that unpacks it (on the trustee).
fn packed(arg: &Arg) -> (TokenStream, TokenStream, TokenStream) {
    let name = &arg.name;
    match &arg.kind {
        ArgKind::Str => (
            quote!(::trust_core::__private::Arg<::trust_core::__private::CopiedStr>),
            quote!(::trust_core::__private::str_arg(#name)),
            quote!(&*#name.into_inner()),
        ),
        ArgKind::Slice(elem) => (
            quote!(::trust_core::__private::Arg<::trust_core::__private::CopiedSlice<#elem>>),
            quote!(::trust_core::__private::slice_arg::<#elem>(#name)),
            quote!(&*#name.into_inner()),
        ),
        ArgKind::Ref(elem) => (
            quote!(::trust_core::__private::Arg<#elem>),
            quote!(::trust_core::__private::ref_arg::<#elem>(#name)),
            quote!(&#name.into_inner()),
        ),
        _ => {
            let ty = &arg.ty;
            (
                quote!(::trust_core::__private::Arg<#ty>),
                quote!(::trust_core::__private::arg::<#ty>(#name)),
                quote!(#name.into_inner()),
            )
        }
    }
}

/// The call on the trustee, `<S>::name(this, unpacked args..)`, its result packed by `ret` (checked there).
fn call(self_ty: &Type, m: &Method, this: &Ident) -> TokenStream {
    let name = &m.sig.ident;
    let unpacked = m.args.iter().map(|a| packed(a).2);
    let call = quote!(<#self_ty>::#name(#this #(, #unpacked)*));
    match &m.output.ty {
        Some(ret) => quote!(::trust_core::__private::ret::<#ret>(#call)),
        None => call,
    }
}

/// `.into_inner()` where a result was packed by `ret`.
fn unpack_result(m: &Method) -> TokenStream {
    match &m.output.ty {
        Some(_) => quote!(.into_inner()),
        None => quote!(),
    }
}

/// `name(&self, args..) -> R`: blocks until the trustee has run the method. One request: a closure that
/// captures nothing (one function pointer, in effect) and the packed arguments beside it (`apply_with`).
fn blocking_stub(self_ty: &Type, m: &Method) -> TokenStream {
    let (attrs, vis, name) = (&m.attrs, &m.vis, &m.sig.ident);
    let (generics, where_clause) = (&m.generics, &m.generics.where_clause);
    let params = params(m);
    let ret = m.output.ty.iter();
    let this = local("this");
    let call = call(self_ty, m, &this);
    let declared = declared(name);
    let trust = trust(self_ty);
    let receiver = receiver(m, self_ty);
    let unpack = unpack_result(m);
    let body = if m.args.is_empty() {
        quote!(#trust.apply(|#this: &mut #self_ty| #call)#unpack)
    } else {
        let (types, packs): (Vec<_>, Vec<_>) = m
            .args
            .iter()
            .map(|a| {
                let (ty, pack, _) = packed(a);
                (ty, pack)
            })
            .unzip();
        let names = m.args.iter().map(|a| &a.name);
        quote! {
            #trust.apply_with(
                |#this: &mut #self_ty, (#(#names,)*): (#(#types,)*)| #call,
                (#(#packs,)*),
            )#unpack
        }
    };
    // Spanned at the method's name, as in `then_stub`. The method's attributes as stubs carry them.
    let attrs = attrs.iter().map(stub_attr);
    let allows = stub_allows(m);
    quote_spanned! {declared.span()=>
        #(#attrs)*
        #allows
        #[inline]
        #vis fn #declared #generics (#receiver #(, #params)*) #(-> #ret)* #where_clause {
            #body
        }
    }
}

/// The closure shared by the non-blocking stubs: it captures the packed arguments (`args`) and unpacks them.
fn capturing_closure(self_ty: &Type, m: &Method) -> (TokenStream, TokenStream) {
    let this = local("this");
    let args = local("args");
    let call = call(self_ty, m, &this);
    if m.args.is_empty() {
        return (TokenStream::new(), quote!(|#this: &mut #self_ty| #call));
    }
    let packs = m.args.iter().map(|a| packed(a).1);
    let names = m.args.iter().map(|a| &a.name);
    let pack = quote!(let #args = (#(#packs,)*););
    let closure = quote! {
        move |#this: &mut #self_ty| {
            let (#(#names,)*) = #args;
            #call
        }
    };
    (pack, closure)
}

/// Attributes of the non-blocking stubs: the method's `#[cfg]`s, `#[deprecated]`, and lint levels (`allow`,
/// `expect` read as `allow`, `warn`, `deny`, also under `cfg_attr`: a stub repeats the method's parameters),
/// and a doc line of their own.
fn variant_attrs(m: &Method, doc: String) -> TokenStream {
    // All of `Method::attrs` but the docs and `must_use` (the variant's result is not the method's); a hidden
    // method's variants are hidden too (they were listed, linking to it, review 94).
    let kept = m
        .attrs
        .iter()
        .filter(|a| {
            doc_hidden(a)
                || attr_names(a).is_some_and(|names| {
                    names
                        .iter()
                        .all(|n| !n.is_ident("doc") && !n.is_ident("must_use"))
                })
        })
        .map(stub_attr);
    let allows = stub_allows(m);
    quote! {
        #(#kept)*
        #[doc = #doc]
        #allows
        #[inline]
    }
}

/// `#[doc(hidden)]`.
fn doc_hidden(a: &syn::Attribute) -> bool {
    a.path().is_ident("doc") && a.parse_args::<Ident>().is_ok_and(|arg| arg == "hidden")
}

/// What a stub allows, only where it needs to (a crate's `forbid` of the lint would refuse the `allow`):
/// `deprecated` where the method is deprecated (its stubs call it: a deprecated method nothing calls does not
/// warn in its own crate, review 39), under the same `cfg_attr` predicate if it is deprecated under one; and
/// `unused_lifetimes` where a lifetime parameter of the method appears only in its body (the stub repeats the
/// receiver's lifetime, the parameters, the result and the where clause). `dead_code` needs none (see
/// `declared`).
fn stub_allows(m: &Method) -> TokenStream {
    let mut allows: TokenStream = m.attrs.iter().filter_map(allow_deprecated).collect();
    let seen = {
        let (receiver, params, output, where_clause) = (
            m.sig.receiver(),
            params(m),
            &m.output.ty,
            &m.generics.where_clause,
        );
        quote!(#receiver #(#params)* #output #where_clause)
    };
    if m.generics
        .lifetimes()
        .any(|l| !mentions(seen.clone(), &l.lifetime.ident))
    {
        allows.extend(quote!(#[allow(unused_lifetimes)]));
    }
    allows
}

/// `#[allow(deprecated)]` for a `#[deprecated]` attribute, `#[cfg_attr(p, allow(deprecated))]` for a
/// `#[cfg_attr(p, .., deprecated, ..)]`.
fn allow_deprecated(a: &syn::Attribute) -> Option<TokenStream> {
    if a.path().is_ident("deprecated") {
        return Some(quote!(#[allow(deprecated)]));
    }
    if !a.path().is_ident("cfg_attr") {
        return None;
    }
    let metas = a
        .parse_args_with(syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated)
        .ok()?;
    let mut metas = metas.into_iter();
    let predicate = metas.next()?;
    metas
        .any(|m| m.path().is_ident("deprecated"))
        .then(|| quote!(#[cfg_attr(#predicate, allow(deprecated))]))
}

/// Whether lifetime `'name` appears in `tokens`.
fn mentions(tokens: TokenStream, name: &Ident) -> bool {
    let mut quote_before = false;
    tokens.into_iter().any(|t| match t {
        proc_macro2::TokenTree::Group(g) => {
            quote_before = false;
            mentions(g.stream(), name)
        }
        proc_macro2::TokenTree::Punct(p) => {
            quote_before = p.as_char() == '\'';
            false
        }
        proc_macro2::TokenTree::Ident(i) => std::mem::take(&mut quote_before) && i == *name,
        proc_macro2::TokenTree::Literal(_) => {
            quote_before = false;
            false
        }
    })
}

/// A method's attribute as its stubs carry it: `#[expect(..)]` becomes `#[allow(..)]` (the lint the method
/// expects may not fire on a stub, and an unfulfilled `expect` warns), also inside `cfg_attr`.
fn stub_attr(a: &syn::Attribute) -> TokenStream {
    let tokens = a.to_token_stream().into_iter().map(|t| match t {
        proc_macro2::TokenTree::Group(g) => proc_macro2::TokenTree::Group(proc_macro2::Group::new(
            g.delimiter(),
            expect_as_allow(g.stream()),
        )),
        other => other,
    });
    tokens.collect()
}

/// `expect` -> `allow` wherever it names an attribute in `stream` (at the top, or under `cfg_attr`).
fn expect_as_allow(stream: TokenStream) -> TokenStream {
    let mut out = Vec::new();
    let mut iter = stream.into_iter().peekable();
    while let Some(t) = iter.next() {
        match t {
            proc_macro2::TokenTree::Ident(i)
                if i == "expect"
                    && matches!(iter.peek(), Some(proc_macro2::TokenTree::Group(g)) if g.delimiter() == proc_macro2::Delimiter::Parenthesis) =>
            {
                out.push(proc_macro2::TokenTree::Ident(Ident::new("allow", i.span())));
            }
            proc_macro2::TokenTree::Group(g)
                if g.delimiter() == proc_macro2::Delimiter::Parenthesis =>
            {
                out.push(proc_macro2::TokenTree::Group(proc_macro2::Group::new(
                    g.delimiter(),
                    expect_as_allow(g.stream()),
                )));
            }
            other => out.push(other),
        }
    }
    out.into_iter().collect()
}

/// How a variant's doc names its method, `[`name`](Self::name)`: a raw identifier without its `r#`, which
/// rustdoc reads as the start of a URL fragment (`Self::r#type` was a dead link, review 94).
fn doc_link(name: &Ident) -> String {
    let name = name.unraw();
    format!("[`{name}`](Self::{name})")
}

/// `name_then(&self, args.., then)`: returns at once; `then(result)` runs later on this thread
/// (`Trust::apply_then`).
fn then_stub(self_ty: &Type, m: &Method) -> TokenStream {
    let name = &m.sig.ident;
    let [then_name, _] = variant_names(name).map(|n| declared(&n));
    // Not `local`: callers read this name in the stub's signature and docs (a `const then` in scope breaks
    // the stub: a known limit, `ui-tests`' `entrust/constant-named-then.rs`).
    let then = Ident::new("then", Span::mixed_site());
    let result = local("result");
    // A method returning `()` takes a continuation of no argument.
    let (continuation, pass, with) = match &m.output.ty {
        Some(ret) => (
            quote!(#ret),
            quote!(move |#result: ::trust_core::__private::Returned<#ret>| #then(#result.into_inner())),
            "with the result",
        ),
        None => (
            quote!(),
            quote!(move |()| #then()),
            "once the method has run",
        ),
    };
    let attrs = variant_attrs(
        m,
        format!(
            " Non-blocking {}: sends the same request and returns at once; `then` runs later on this \
             thread {with} (see `Trust::apply_then`).",
            doc_link(name)
        ),
    );
    let (vis, generics, where_clause) = (&m.vis, &m.generics, &m.generics.where_clause);
    let params = params(m);
    let (pack, closure) = capturing_closure(self_ty, m);
    let trust = trust(self_ty);
    let receiver = receiver(m, self_ty);
    // Clippy's `too_many_arguments` (more than seven, by default) counts `then`: a method of seven parameters
    // (the receiver and six) is fine and its `_then` stub is not, and no `allow` of the user's is needed on the
    // method (clippy lints the functions a proc macro makes; review 94). Allowed only there, as in
    // `stub_allows`: a crate that forbids the lint would refuse it.
    let too_many = (m.args.len() == 6).then(|| quote!(#[allow(clippy::too_many_arguments)]));
    // Spanned at the method's name: a stub that clashes with another block's (E0592) is reported there, not at
    // the blocks' `#[entrust]` attributes.
    quote_spanned! {then_name.span()=>
        #attrs
        #too_many
        #vis fn #then_name #generics (
            #receiver,
            #(#params,)*
            #then: impl ::core::ops::FnOnce(#continuation) + 'static,
        ) #where_clause {
            #pack
            #trust.apply_then(#closure, #pass)
        }
    }
}

/// What an `_async` stub's future captures (`use<..>`): the receiver's lifetime (`'_`, or the one it names), and
/// the impl's parameters and the method's early-bound lifetimes (named in its where clause or bounded), which
/// the closure's type carries; not the lifetimes of the arguments, which the stub copied into the request
/// before the future exists (edition 2024 would capture them all: review 73).
///
/// Nothing where no argument brings a lifetime into scope and the receiver's is the only lifetime: `use<..>`
/// would then name everything edition 2024 captures anyway, which `impl_trait_redundant_captures` refuses in a
/// crate that denies it (review 94); and edition 2021, which captures only type parameters unasked, has the
/// receiver's lifetime from the `+ '_` bound.
fn async_captures(m: &Method, impl_generics: &syn::Generics, self_ty: &Type) -> TokenStream {
    let receiver = receiver_lifetime(m).map(|l| l.ident);
    let only_the_receivers_lifetime = impl_generics.lifetimes().next().is_none()
        && m.generics
            .lifetimes()
            .all(|l| Some(&l.lifetime.ident) == receiver.as_ref());
    // Other arguments are `'static` (or rejected): only the copied and cloned references have a lifetime.
    let borrowing_argument = m
        .args
        .iter()
        .any(|a| matches!(a.kind, ArgKind::Str | ArgKind::Slice(_) | ArgKind::Ref(_)));
    if only_the_receivers_lifetime && !borrowing_argument {
        return TokenStream::new();
    }
    let mut captures: Vec<TokenStream> = Vec::new();
    let mut named: Vec<String> = Vec::new();
    let mut add_lifetime = |l: &syn::Lifetime, captures: &mut Vec<TokenStream>| {
        if !named.contains(&l.ident.to_string()) {
            named.push(l.ident.to_string());
            captures.push(quote!(#l));
        }
    };
    match &receiver_lifetime(m) {
        // `&'static self`: nothing to name (rustc refuses `use<'static>`; the stub's closure fails on its own,
        // with rustc's E0521, as it did before `use<..>`).
        Some(l) if l.ident == "static" => {}
        Some(l) => add_lifetime(l, &mut captures),
        None => captures.push(quote_spanned!(self_ty.span()=> '_)),
    }
    for l in impl_generics.lifetimes() {
        add_lifetime(&l.lifetime, &mut captures);
    }
    let where_clause = &m.generics.where_clause;
    let bounded: Vec<String> = m
        .generics
        .lifetimes()
        .flat_map(|l| {
            let own = (!l.bounds.is_empty()).then(|| l.lifetime.ident.to_string());
            own.into_iter()
                .chain(l.bounds.iter().map(|b| b.ident.to_string()))
        })
        .collect();
    for l in m.generics.lifetimes() {
        if bounded.contains(&l.lifetime.ident.to_string())
            || mentions(quote!(#where_clause), &l.lifetime.ident)
        {
            add_lifetime(&l.lifetime, &mut captures);
        }
    }
    for p in &impl_generics.params {
        match p {
            GenericParam::Type(t) => {
                let ident = &t.ident;
                captures.push(quote!(#ident));
            }
            GenericParam::Const(c) => {
                let ident = &c.ident;
                captures.push(quote!(#ident));
            }
            GenericParam::Lifetime(_) => {}
        }
    }
    quote!(+ use<#(#captures),*>)
}

/// `name_async(&self, args..)`: a future that sends the request on its first poll and resolves to the result
/// (`Trust::apply_async`).
fn async_stub(self_ty: &Type, impl_generics: &syn::Generics, m: &Method) -> TokenStream {
    let name = &m.sig.ident;
    let [_, async_name] = variant_names(name).map(|n| declared(&n));
    let attrs = variant_attrs(
        m,
        format!(
            " Asynchronous {}: the future sends the same request on its first poll and resolves to the \
             result (see `Trust::apply_async`).",
            doc_link(name)
        ),
    );
    let (vis, generics, where_clause) = (&m.vis, &m.generics, &m.generics.where_clause);
    let params = params(m);
    let output = m.output.ty.clone().unwrap_or_else(|| syn::parse_quote!(()));
    let (pack, closure) = capturing_closure(self_ty, m);
    let trust = trust(self_ty);
    let receiver = receiver(m, self_ty);
    let future = local("future");
    let captures = async_captures(m, impl_generics, self_ty);
    let body = match &m.output.ty {
        Some(_) => quote! {
            let #future = #trust.apply_async(#closure);
            async move { #future.await.into_inner() }
        },
        None => quote!(#trust.apply_async(#closure)),
    };
    // Spanned at the method's name, as in `then_stub`.
    quote_spanned! {async_name.span()=>
        #attrs
        #vis fn #async_name #generics (#receiver #(, #params)*)
            -> impl ::core::future::Future<Output = #output> + ::core::marker::Send + '_ #captures
            #where_clause
        {
            #pack
            #body
        }
    }
}
