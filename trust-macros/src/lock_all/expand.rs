//! Code generation: a block holding one generic local function (so each lock keeps its own type,
//! and the ranks can be read in a `const` block), the argument bindings, and the call. The type
//! rules (lock, readable, rank above the key's) are bounds of that function. Everything at run time
//! is named through `::trust_core::__private`.

use proc_macro2::{Ident, Literal, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use super::parse::{Access, LockAllInput};

/// The most locks acquired by straight-line code; longer lists loop over the order (see `expand`).
/// `happylock`'s tuples go to 14.
const UNROLLED_MAX: usize = 16;

/// `lock_all!` (waits, panics on a duplicate) or `try_lock_all!` (never waits, returns `Result`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Blocking {
    Wait,
    Try,
}

/// The whole expansion: `{ fn __trust_lock_all<..>(..) { .. } bindings; call }`.
pub fn expand(input: &LockAllInput, blocking: Blocking) -> TokenStream {
    let private = &quote!(::trust_core::__private);
    let n = input.locks.len();
    let internal = Span::mixed_site();
    let lock_types: Vec<Ident> = (0..n).map(|i| format_ident!("L{}", i)).collect();
    let params: Vec<Ident> = (0..n)
        .map(|i| format_ident!("__trust_p{}", i, span = internal))
        .collect();
    let slots: Vec<Ident> = (0..n)
        .map(|i| format_ident!("__trust_g{}", i, span = internal))
        .collect();
    let key = Ident::new("__trust_k", internal);
    let function = Ident::new("__trust_lock_all", internal);

    let guard_params: Vec<Ident> = (0..n).map(|i| format_ident!("G{}", i)).collect();
    let bounds = lock_bounds(input, &lock_types, &guard_params, private);
    // The nesting rule: every lock's rank is above what the key already holds.
    let rank_bounds: Vec<TokenStream> = lock_types
        .iter()
        .map(|ty| {
            quote! {
                <#ty as #private::Lock>::Rank:
                    #private::LockAfter<<K as #private::LockKey>::Held>
            }
        })
        .collect();
    let steps = acquire_steps(input, blocking, &params, &slots, private);
    // One `match` per position, not a loop: with a constant order (no ties) each one folds to a
    // direct call, so the acquisition is straight-line code. That is n matches of n arms, and
    // optimised builds slow down sharply past a few dozen locks (64 took four minutes, review 77):
    // past `UNROLLED_MAX`, one `match` in a loop over the order instead.
    let dispatch: Vec<TokenStream> = if n <= UNROLLED_MAX {
        (0..n)
            .map(|position| {
                let position = Literal::usize_unsuffixed(position);
                quote! {
                    match __trust_order[#position] {
                        #(#steps)*
                        _ => #private::unreachable_step(),
                    }
                }
            })
            .collect()
    } else {
        vec![quote! {
            for __trust_step in __trust_order {
                match __trust_step {
                    #(#steps)*
                    _ => #private::unreachable_step(),
                }
            }
        }]
    };

    let mut result_types: Vec<TokenStream> = guard_params.iter().map(|g| quote!(#g)).collect();
    let mut results: Vec<TokenStream> = slots
        .iter()
        .map(|slot| quote!(#private::acquired(#slot)))
        .collect();
    let mut nest_bounds = Vec::new();
    let mut rank_params = Vec::new();
    let mut unused_key = Some(quote!(let _ = #key;));
    if input.nest {
        let (highest, bounds, params) = highest_rank(&lock_types, private);
        rank_params = params;
        results.push(quote!(#private::nested_key::<K, #highest>(#key)));
        result_types.push(quote!(#private::NestedKey<'k, #highest>));
        nest_bounds = bounds;
        unused_key = None;
    }

    let (return_type, tail, on_duplicate) = match blocking {
        Blocking::Wait => (
            quote!((#(#result_types,)*)),
            quote!((#(#results,)*)),
            quote!(__trust_error.panic()),
        ),
        Blocking::Try => (
            quote!(::core::result::Result<(#(#result_types,)*), #private::LockAllError>),
            quote!(::core::result::Result::Ok((#(#results,)*))),
            quote!(return ::core::result::Result::Err(__trust_error)),
        ),
    };

    let (bindings, arguments) = bind_arguments(input);
    let key_expr = &input.key;
    let key_binding = Ident::new("__trust_key", internal);

    quote! {{
        #[allow(
            clippy::too_many_arguments,
            clippy::type_complexity,
            clippy::needless_lifetimes
        )]
        #[inline]
        #[track_caller]
        fn #function<'k, K, #(#lock_types,)* #(#guard_params,)* #(#rank_params,)*>(
            #key: &'k mut K,
            #(#params: &'k #lock_types,)*
        ) -> #return_type
        where
            K: #private::LockKey + ?::core::marker::Sized,
            #(#bounds,)*
            #(#rank_bounds,)*
            #(#nest_bounds,)*
        {
            #unused_key
            // The order by rank, computed by the compiler.
            let __trust_plan = const {
                #private::Plan::<#n>::new([
                    #(#private::rank_of::<#lock_types>(),)*
                ])
            };
            // Ties (equal ranks) are ordered by address; a duplicate shows up as an equal address.
            let __trust_order = match #private::order(
                &__trust_plan,
                [#(#private::lock_id(#params),)*],
            ) {
                ::core::result::Result::Ok(__trust_order) => __trust_order,
                ::core::result::Result::Err(__trust_error) => #on_duplicate,
            };
            // A guard per slot; if a raw lock panics, the guards already taken drop and release.
            #(let mut #slots = ::core::option::Option::None;)*
            #(#dispatch)*
            #tail
        }

        let #key_binding = #private::key(#key_expr);
        #(#bindings)*
        #function(#key_binding, #(#arguments,)*)
    }}
}

/// `L0: Lock + ?Sized` and `L0: Lockable<Guard<'k> = G0>` (or `Sharable<ReadGuard<'k> = G0>` for
/// `read`). Naming the guard through a type parameter, rather than a projection in the return
/// type, keeps a wrong argument at one error, pointing at the argument.
fn lock_bounds(
    input: &LockAllInput,
    lock_types: &[Ident],
    guards: &[Ident],
    private: &TokenStream,
) -> Vec<TokenStream> {
    input
        .locks
        .iter()
        .zip(lock_types.iter().zip(guards))
        .map(|(lock, (ty, guard))| match lock.access {
            Access::Write => quote! {
                #ty: #private::Lock
                    + #private::Lockable<Guard<'k> = #guard>
                    + ?::core::marker::Sized
            },
            Access::Read => quote! {
                #ty: #private::Lock
                    + #private::Sharable<ReadGuard<'k> = #guard>
                    + ?::core::marker::Sized
            },
        })
        .collect()
}

/// One `match` arm per argument: acquire it into its slot (or give up, for `try_lock_all!`).
fn acquire_steps(
    input: &LockAllInput,
    blocking: Blocking,
    params: &[Ident],
    slots: &[Ident],
    private: &TokenStream,
) -> Vec<TokenStream> {
    input
        .locks
        .iter()
        .enumerate()
        .map(|(i, lock)| {
            let (param, slot) = (&params[i], &slots[i]);
            let position = Literal::usize_unsuffixed(i);
            match (blocking, lock.access) {
                (Blocking::Wait, Access::Write) => quote! {
                    #position => #slot = ::core::option::Option::Some(
                        #private::acquire(#param)
                    ),
                },
                (Blocking::Wait, Access::Read) => quote! {
                    #position => #slot = ::core::option::Option::Some(
                        #private::acquire_read(#param)
                    ),
                },
                (Blocking::Try, access) => {
                    let attempt = match access {
                        Access::Write => quote!(#private::try_acquire(#param)),
                        Access::Read => quote!(#private::try_acquire_read(#param)),
                    };
                    quote! {
                        #position => match #attempt {
                            ::core::option::Option::Some(__trust_guard) => {
                                #slot = ::core::option::Option::Some(__trust_guard)
                            }
                            ::core::option::Option::None => {
                                return ::core::result::Result::Err(
                                    #private::LockAllError::WouldBlock,
                                )
                            }
                        },
                    }
                }
            }
        })
        .collect()
}

/// The highest rank among the arguments, folded with `MaxRank`: the bounds `R0: MaxRank<R1, Output
/// = M1>`, `M1: MaxRank<R2, Output = M2>`, ..., the extra type parameters `M1..`, and the last one
/// (the rank the `NestedKey` holds). Type parameters rather than projections in the return type
/// keep ranks from two `lock_ranks!` lists at one error.
fn highest_rank(
    lock_types: &[Ident],
    private: &TokenStream,
) -> (TokenStream, Vec<TokenStream>, Vec<Ident>) {
    let rank = |ty: &Ident| quote!(<#ty as #private::Lock>::Rank);
    let mut highest = rank(&lock_types[0]);
    let mut bounds = Vec::new();
    let mut params = Vec::new();
    for (i, ty) in lock_types.iter().enumerate().skip(1) {
        let next = rank(ty);
        let max = format_ident!("M{}", i);
        bounds.push(quote!(#highest: #private::MaxRank<#next, Output = #max>));
        bounds.push(quote!(#max: #private::Rank));
        highest = quote!(#max);
        params.push(max);
    }
    (highest, bounds, params)
}

/// `let __trust_lN = &(expr);` per argument, and the call arguments. Names are hygienic
/// (`mixed_site`) but placed at the user's expression, so a type error about an argument (not a
/// lock, not readable, rank too low) points at that argument.
fn bind_arguments(input: &LockAllInput) -> (Vec<TokenStream>, Vec<Ident>) {
    input
        .locks
        .iter()
        .enumerate()
        .map(|(i, lock)| {
            let expr = without_borrows(&lock.expr);
            let at = Span::mixed_site().located_at(expr.span());
            let binding = Ident::new(&format!("__trust_l{i}"), at);
            (quote_spanned!(at=> let #binding = &(#expr);), binding)
        })
        .unzip()
}

/// `&a` (or `&&a`) names the lock `a`: bound as `&(&a)`, the guard would borrow a temporary that dies with its
/// `let` (E0716, review 65). `&mut a` is left alone: it is a place the user means to borrow mutably.
fn without_borrows(expr: &syn::Expr) -> &syn::Expr {
    match expr {
        syn::Expr::Reference(r) if r.mutability.is_none() => without_borrows(&r.expr),
        _ => expr,
    }
}
