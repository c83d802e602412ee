use trust_core::entrust;
pub struct Stack<T: Clone + Send + 'static> {
    items: Vec<T>,
}
/// The delegated methods of [`Stack`]: a `Trust<Stack>` dereferences to this type, so every stub that `#[entrust]` generates on an impl block of `Stack` is called as a method of the handle.
#[repr(transparent)]
pub struct StackStubs<T: Clone + Send + 'static>(
    ::trust_core::__private::Trust<Stack<T>>,
);
impl<T: Clone + Send + 'static> ::core::fmt::Debug for StackStubs<T> {
    fn fmt(&self, __f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        __f.debug_tuple(::core::stringify!(StackStubs)).field(&self.0).finish()
    }
}
unsafe impl<T: Clone + Send + 'static> ::trust_core::__private::Entrusted for Stack<T>
where
    Stack<T>: ::core::marker::Send + 'static,
{
    type Stubs = StackStubs<T>;
}
impl<T: Clone + Send + 'static> Stack<T> {
    pub fn extend(&mut self, items: &[T]) -> usize {
        self.items.extend_from_slice(items);
        self.items.len()
    }
    /// `Self` in the signature is replaced by `Stack<T>`: inside the stubs, `Self` is the stubs type.
    pub(crate) fn snapshot(&self) -> Self {
        Stack { items: self.items.clone() }
    }
    pub fn first(&self) -> Option<&T> {
        self.items.first()
    }
    pub fn new() -> Self {
        Stack { items: Vec::new() }
    }
}
impl<T: Clone + Send + 'static> StackStubs<T>
where
    Stack<T>: ::trust_core::__private::Entrusted<Stubs = StackStubs<T>>,
{
    #[inline]
    pub fn extend(&self, items: &[T]) -> usize {
        ::trust_core::__private::trust_of::<Stack<T>>(self)
            .apply_with(
                |
                    __this: &mut Stack<T>,
                    (
                        items,
                    ): (
                        ::trust_core::__private::Arg<
                            ::trust_core::__private::CopiedSlice<T>,
                        >,
                    )|
                ::trust_core::__private::ret::<
                    usize,
                >(<Stack<T>>::extend(__this, &*items.into_inner())),
                (::trust_core::__private::slice_arg::<T>(items),),
            )
            .into_inner()
    }
    /// Non-blocking [`extend`](Self::extend): sends the same request and returns at once; `then` runs later on this thread with the result (see `Trust::apply_then`).
    #[inline]
    pub fn extend_then(
        &self,
        items: &[T],
        then: impl ::core::ops::FnOnce(usize) + 'static,
    ) {
        let __args = (::trust_core::__private::slice_arg::<T>(items),);
        ::trust_core::__private::trust_of::<Stack<T>>(self)
            .apply_then(
                move |__this: &mut Stack<T>| {
                    let (items,) = __args;
                    ::trust_core::__private::ret::<
                        usize,
                    >(<Stack<T>>::extend(__this, &*items.into_inner()))
                },
                move |__result: ::trust_core::__private::Returned<usize>| then(
                    __result.into_inner(),
                ),
            )
    }
    /// Asynchronous [`extend`](Self::extend): the future sends the same request on its first poll and resolves to the result (see `Trust::apply_async`).
    #[inline]
    pub fn extend_async(
        &self,
        items: &[T],
    ) -> impl ::core::future::Future<
        Output = usize,
    > + ::core::marker::Send + '_ + use<'_, T> {
        let __args = (::trust_core::__private::slice_arg::<T>(items),);
        let __future = ::trust_core::__private::trust_of::<Stack<T>>(self)
            .apply_async(move |__this: &mut Stack<T>| {
                let (items,) = __args;
                ::trust_core::__private::ret::<
                    usize,
                >(<Stack<T>>::extend(__this, &*items.into_inner()))
            });
        async move { __future.await.into_inner() }
    }
    /// `Self` in the signature is replaced by `Stack<T>`: inside the stubs, `Self` is the stubs type.
    #[inline]
    pub(crate) fn snapshot(&self) -> Stack<T> {
        ::trust_core::__private::trust_of::<Stack<T>>(self)
            .apply(|__this: &mut Stack<T>| ::trust_core::__private::ret::<
                Stack<T>,
            >(<Stack<T>>::snapshot(__this)))
            .into_inner()
    }
    /// Non-blocking [`snapshot`](Self::snapshot): sends the same request and returns at once; `then` runs later on this thread with the result (see `Trust::apply_then`).
    #[inline]
    pub(crate) fn snapshot_then(
        &self,
        then: impl ::core::ops::FnOnce(Stack<T>) + 'static,
    ) {
        ::trust_core::__private::trust_of::<Stack<T>>(self)
            .apply_then(
                |__this: &mut Stack<T>| ::trust_core::__private::ret::<
                    Stack<T>,
                >(<Stack<T>>::snapshot(__this)),
                move |__result: ::trust_core::__private::Returned<Stack<T>>| then(
                    __result.into_inner(),
                ),
            )
    }
    /// Asynchronous [`snapshot`](Self::snapshot): the future sends the same request on its first poll and resolves to the result (see `Trust::apply_async`).
    #[inline]
    pub(crate) fn snapshot_async(
        &self,
    ) -> impl ::core::future::Future<Output = Stack<T>> + ::core::marker::Send + '_ {
        let __future = ::trust_core::__private::trust_of::<Stack<T>>(self)
            .apply_async(|__this: &mut Stack<T>| ::trust_core::__private::ret::<
                Stack<T>,
            >(<Stack<T>>::snapshot(__this)));
        async move { __future.await.into_inner() }
    }
}
