use trust_core::entrust;
pub enum NotAStruct {
    A,
}
::core::compile_error! {
    "`#[entrust]` cannot go on an enum: it declares a struct delegable; wrap the enum in a struct (`struct State(MyEnum)`) and put `#[entrust]` on that"
}
impl Account {
    pub fn close(self) -> i64 {
        self.balance
    }
    pub fn read_into(&self, out: &mut i64) {
        *out = self.balance;
    }
    pub fn balance(&self) -> i64 {
        self.balance
    }
}
impl AccountStubs {
    #[inline]
    pub fn balance(&self) -> i64 {
        ::trust_core::__private::trust_of::<Account>(self)
            .apply(|__this: &mut Account| ::trust_core::__private::ret::<
                i64,
            >(<Account>::balance(__this)))
            .into_inner()
    }
    /// Non-blocking [`balance`](Self::balance): sends the same request and returns at once; `then` runs later on this thread with the result (see `Trust::apply_then`).
    #[inline]
    pub fn balance_then(&self, then: impl ::core::ops::FnOnce(i64) + 'static) {
        ::trust_core::__private::trust_of::<Account>(self)
            .apply_then(
                |__this: &mut Account| ::trust_core::__private::ret::<
                    i64,
                >(<Account>::balance(__this)),
                move |__result: ::trust_core::__private::Returned<i64>| then(
                    __result.into_inner(),
                ),
            )
    }
    /// Asynchronous [`balance`](Self::balance): the future sends the same request on its first poll and resolves to the result (see `Trust::apply_async`).
    #[inline]
    pub fn balance_async(
        &self,
    ) -> impl ::core::future::Future<Output = i64> + ::core::marker::Send + '_ {
        let __future = ::trust_core::__private::trust_of::<Account>(self)
            .apply_async(|__this: &mut Account| ::trust_core::__private::ret::<
                i64,
            >(<Account>::balance(__this)));
        async move { __future.await.into_inner() }
    }
}
::core::compile_error! {
    "`close` takes `self` by value, which cannot be delegated: the value stays on its trustee and never moves out; take `&mut self` (use `std::mem::take` to move a field out), or mark the method `#[entrust(skip)]`"
}
::core::compile_error! {
    "`out: &mut i64` cannot be delegated: a `&mut` parameter would let the trustee write into the caller's memory while the caller may be running; take the value by value and return the new one"
}
