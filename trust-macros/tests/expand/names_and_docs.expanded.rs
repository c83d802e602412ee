use trust_core::entrust;
pub struct Ledger {
    total: u64,
}
/// The delegated methods of [`Ledger`]: a `Trust<Ledger>` dereferences to this type, so every stub that `#[entrust]` generates on an impl block of `Ledger` is called as a method of the handle.
#[repr(transparent)]
pub struct LedgerStubs(::trust_core::__private::Trust<Ledger>);
impl ::core::fmt::Debug for LedgerStubs {
    fn fmt(&self, __f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        __f.debug_tuple(::core::stringify!(LedgerStubs)).field(&self.0).finish()
    }
}
unsafe impl ::trust_core::__private::Entrusted for Ledger {
    type Stubs = LedgerStubs;
}
impl Ledger {
    pub fn r#type(&self) -> u64 {
        self.total
    }
    pub fn memo_len(&self, memo: &str) -> usize {
        memo.len()
    }
    #[doc(hidden)]
    pub fn hidden(&mut self, (a, b): (u64, u64)) {
        self.total = a + b;
    }
    pub fn post(&mut self, a: u64, b: u64, c: u64, d: u64, e: u64, _fee: u64) -> u64 {
        self.total += a + b + c + d + e;
        self.total
    }
}
impl LedgerStubs {
    #[inline]
    pub fn r#type(&self) -> u64 {
        ::trust_core::__private::trust_of::<Ledger>(self)
            .apply(|__this: &mut Ledger| ::trust_core::__private::ret::<
                u64,
            >(<Ledger>::r#type(__this)))
            .into_inner()
    }
    /// Non-blocking [`type`](Self::type): sends the same request and returns at once; `then` runs later on this thread with the result (see `Trust::apply_then`).
    #[inline]
    pub fn type_then(&self, then: impl ::core::ops::FnOnce(u64) + 'static) {
        ::trust_core::__private::trust_of::<Ledger>(self)
            .apply_then(
                |__this: &mut Ledger| ::trust_core::__private::ret::<
                    u64,
                >(<Ledger>::r#type(__this)),
                move |__result: ::trust_core::__private::Returned<u64>| then(
                    __result.into_inner(),
                ),
            )
    }
    /// Asynchronous [`type`](Self::type): the future sends the same request on its first poll and resolves to the result (see `Trust::apply_async`).
    #[inline]
    pub fn type_async(
        &self,
    ) -> impl ::core::future::Future<Output = u64> + ::core::marker::Send + '_ {
        let __future = ::trust_core::__private::trust_of::<Ledger>(self)
            .apply_async(|__this: &mut Ledger| ::trust_core::__private::ret::<
                u64,
            >(<Ledger>::r#type(__this)));
        async move { __future.await.into_inner() }
    }
    #[inline]
    pub fn memo_len(&self, memo: &str) -> usize {
        ::trust_core::__private::trust_of::<Ledger>(self)
            .apply_with(
                |
                    __this: &mut Ledger,
                    (
                        memo,
                    ): (
                        ::trust_core::__private::Arg<::trust_core::__private::CopiedStr>,
                    )|
                ::trust_core::__private::ret::<
                    usize,
                >(<Ledger>::memo_len(__this, &*memo.into_inner())),
                (::trust_core::__private::str_arg(memo),),
            )
            .into_inner()
    }
    /// Non-blocking [`memo_len`](Self::memo_len): sends the same request and returns at once; `then` runs later on this thread with the result (see `Trust::apply_then`).
    #[inline]
    pub fn memo_len_then(
        &self,
        memo: &str,
        then: impl ::core::ops::FnOnce(usize) + 'static,
    ) {
        let __args = (::trust_core::__private::str_arg(memo),);
        ::trust_core::__private::trust_of::<Ledger>(self)
            .apply_then(
                move |__this: &mut Ledger| {
                    let (memo,) = __args;
                    ::trust_core::__private::ret::<
                        usize,
                    >(<Ledger>::memo_len(__this, &*memo.into_inner()))
                },
                move |__result: ::trust_core::__private::Returned<usize>| then(
                    __result.into_inner(),
                ),
            )
    }
    /// Asynchronous [`memo_len`](Self::memo_len): the future sends the same request on its first poll and resolves to the result (see `Trust::apply_async`).
    #[inline]
    pub fn memo_len_async(
        &self,
        memo: &str,
    ) -> impl ::core::future::Future<
        Output = usize,
    > + ::core::marker::Send + '_ + use<'_> {
        let __args = (::trust_core::__private::str_arg(memo),);
        let __future = ::trust_core::__private::trust_of::<Ledger>(self)
            .apply_async(move |__this: &mut Ledger| {
                let (memo,) = __args;
                ::trust_core::__private::ret::<
                    usize,
                >(<Ledger>::memo_len(__this, &*memo.into_inner()))
            });
        async move { __future.await.into_inner() }
    }
    #[doc(hidden)]
    #[inline]
    pub fn hidden(&self, arg0: (u64, u64)) {
        ::trust_core::__private::trust_of::<Ledger>(self)
            .apply_with(
                |
                    __this: &mut Ledger,
                    (arg0,): (::trust_core::__private::Arg<(u64, u64)>,)|
                <Ledger>::hidden(__this, arg0.into_inner()),
                (::trust_core::__private::arg::<(u64, u64)>(arg0),),
            )
    }
    #[doc(hidden)]
    /// Non-blocking [`hidden`](Self::hidden): sends the same request and returns at once; `then` runs later on this thread once the method has run (see `Trust::apply_then`).
    #[inline]
    pub fn hidden_then(
        &self,
        arg0: (u64, u64),
        then: impl ::core::ops::FnOnce() + 'static,
    ) {
        let __args = (::trust_core::__private::arg::<(u64, u64)>(arg0),);
        ::trust_core::__private::trust_of::<Ledger>(self)
            .apply_then(
                move |__this: &mut Ledger| {
                    let (arg0,) = __args;
                    <Ledger>::hidden(__this, arg0.into_inner())
                },
                move |()| then(),
            )
    }
    #[doc(hidden)]
    /// Asynchronous [`hidden`](Self::hidden): the future sends the same request on its first poll and resolves to the result (see `Trust::apply_async`).
    #[inline]
    pub fn hidden_async(
        &self,
        arg0: (u64, u64),
    ) -> impl ::core::future::Future<Output = ()> + ::core::marker::Send + '_ {
        let __args = (::trust_core::__private::arg::<(u64, u64)>(arg0),);
        ::trust_core::__private::trust_of::<Ledger>(self)
            .apply_async(move |__this: &mut Ledger| {
                let (arg0,) = __args;
                <Ledger>::hidden(__this, arg0.into_inner())
            })
    }
    #[inline]
    pub fn post(&self, a: u64, b: u64, c: u64, d: u64, e: u64, _fee: u64) -> u64 {
        ::trust_core::__private::trust_of::<Ledger>(self)
            .apply_with(
                |
                    __this: &mut Ledger,
                    (
                        a,
                        b,
                        c,
                        d,
                        e,
                        _fee,
                    ): (
                        ::trust_core::__private::Arg<u64>,
                        ::trust_core::__private::Arg<u64>,
                        ::trust_core::__private::Arg<u64>,
                        ::trust_core::__private::Arg<u64>,
                        ::trust_core::__private::Arg<u64>,
                        ::trust_core::__private::Arg<u64>,
                    )|
                ::trust_core::__private::ret::<
                    u64,
                >(
                    <Ledger>::post(
                        __this,
                        a.into_inner(),
                        b.into_inner(),
                        c.into_inner(),
                        d.into_inner(),
                        e.into_inner(),
                        _fee.into_inner(),
                    ),
                ),
                (
                    ::trust_core::__private::arg::<u64>(a),
                    ::trust_core::__private::arg::<u64>(b),
                    ::trust_core::__private::arg::<u64>(c),
                    ::trust_core::__private::arg::<u64>(d),
                    ::trust_core::__private::arg::<u64>(e),
                    ::trust_core::__private::arg::<u64>(_fee),
                ),
            )
            .into_inner()
    }
    /// Non-blocking [`post`](Self::post): sends the same request and returns at once; `then` runs later on this thread with the result (see `Trust::apply_then`).
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn post_then(
        &self,
        a: u64,
        b: u64,
        c: u64,
        d: u64,
        e: u64,
        _fee: u64,
        then: impl ::core::ops::FnOnce(u64) + 'static,
    ) {
        let __args = (
            ::trust_core::__private::arg::<u64>(a),
            ::trust_core::__private::arg::<u64>(b),
            ::trust_core::__private::arg::<u64>(c),
            ::trust_core::__private::arg::<u64>(d),
            ::trust_core::__private::arg::<u64>(e),
            ::trust_core::__private::arg::<u64>(_fee),
        );
        ::trust_core::__private::trust_of::<Ledger>(self)
            .apply_then(
                move |__this: &mut Ledger| {
                    let (a, b, c, d, e, _fee) = __args;
                    ::trust_core::__private::ret::<
                        u64,
                    >(
                        <Ledger>::post(
                            __this,
                            a.into_inner(),
                            b.into_inner(),
                            c.into_inner(),
                            d.into_inner(),
                            e.into_inner(),
                            _fee.into_inner(),
                        ),
                    )
                },
                move |__result: ::trust_core::__private::Returned<u64>| then(
                    __result.into_inner(),
                ),
            )
    }
    /// Asynchronous [`post`](Self::post): the future sends the same request on its first poll and resolves to the result (see `Trust::apply_async`).
    #[inline]
    pub fn post_async(
        &self,
        a: u64,
        b: u64,
        c: u64,
        d: u64,
        e: u64,
        _fee: u64,
    ) -> impl ::core::future::Future<Output = u64> + ::core::marker::Send + '_ {
        let __args = (
            ::trust_core::__private::arg::<u64>(a),
            ::trust_core::__private::arg::<u64>(b),
            ::trust_core::__private::arg::<u64>(c),
            ::trust_core::__private::arg::<u64>(d),
            ::trust_core::__private::arg::<u64>(e),
            ::trust_core::__private::arg::<u64>(_fee),
        );
        let __future = ::trust_core::__private::trust_of::<Ledger>(self)
            .apply_async(move |__this: &mut Ledger| {
                let (a, b, c, d, e, _fee) = __args;
                ::trust_core::__private::ret::<
                    u64,
                >(
                    <Ledger>::post(
                        __this,
                        a.into_inner(),
                        b.into_inner(),
                        c.into_inner(),
                        d.into_inner(),
                        e.into_inner(),
                        _fee.into_inner(),
                    ),
                )
            });
        async move { __future.await.into_inner() }
    }
}
