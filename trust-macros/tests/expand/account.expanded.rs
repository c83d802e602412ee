use trust_core::entrust;
pub struct Account {
    balance: i64,
    memo: String,
}
/// The delegated methods of [`Account`]: a `Trust<Account>` dereferences to this type, so every stub that `#[entrust]` generates on an impl block of `Account` is called as a method of the handle.
#[repr(transparent)]
pub struct AccountStubs(::trust_core::__private::Trust<Account>);
impl ::core::fmt::Debug for AccountStubs {
    fn fmt(&self, __f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        __f.debug_tuple(::core::stringify!(AccountStubs)).field(&self.0).finish()
    }
}
unsafe impl ::trust_core::__private::Entrusted for Account {
    type Stubs = AccountStubs;
}
impl Account {
    /// Adds `amount` and returns the new balance.
    pub fn deposit(&mut self, amount: i64) -> i64 {
        self.balance += amount;
        self.balance
    }
    pub fn balance(&self) -> i64 {
        self.balance
    }
    pub fn set_memo(&mut self, memo: &str) {
        self.memo = memo.to_owned();
    }
}
impl AccountStubs {
    /// Adds `amount` and returns the new balance.
    #[inline]
    pub fn deposit(&self, amount: i64) -> i64 {
        ::trust_core::__private::trust_of::<Account>(self)
            .apply_with(
                |__this: &mut Account, (amount,): (::trust_core::__private::Arg<i64>,)| ::trust_core::__private::ret::<
                    i64,
                >(<Account>::deposit(__this, amount.into_inner())),
                (::trust_core::__private::arg::<i64>(amount),),
            )
            .into_inner()
    }
    /// Non-blocking [`deposit`](Self::deposit): sends the same request and returns at once; `then` runs later on this thread with the result (see `Trust::apply_then`).
    #[inline]
    pub fn deposit_then(
        &self,
        amount: i64,
        then: impl ::core::ops::FnOnce(i64) + 'static,
    ) {
        let __args = (::trust_core::__private::arg::<i64>(amount),);
        ::trust_core::__private::trust_of::<Account>(self)
            .apply_then(
                move |__this: &mut Account| {
                    let (amount,) = __args;
                    ::trust_core::__private::ret::<
                        i64,
                    >(<Account>::deposit(__this, amount.into_inner()))
                },
                move |__result: ::trust_core::__private::Returned<i64>| then(
                    __result.into_inner(),
                ),
            )
    }
    /// Asynchronous [`deposit`](Self::deposit): the future sends the same request on its first poll and resolves to the result (see `Trust::apply_async`).
    #[inline]
    pub fn deposit_async(
        &self,
        amount: i64,
    ) -> impl ::core::future::Future<Output = i64> + ::core::marker::Send + '_ {
        let __args = (::trust_core::__private::arg::<i64>(amount),);
        let __future = ::trust_core::__private::trust_of::<Account>(self)
            .apply_async(move |__this: &mut Account| {
                let (amount,) = __args;
                ::trust_core::__private::ret::<
                    i64,
                >(<Account>::deposit(__this, amount.into_inner()))
            });
        async move { __future.await.into_inner() }
    }
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
    #[inline]
    pub fn set_memo(&self, memo: &str) {
        ::trust_core::__private::trust_of::<Account>(self)
            .apply_with(
                |
                    __this: &mut Account,
                    (
                        memo,
                    ): (
                        ::trust_core::__private::Arg<::trust_core::__private::CopiedStr>,
                    )|
                <Account>::set_memo(__this, &*memo.into_inner()),
                (::trust_core::__private::str_arg(memo),),
            )
    }
    /// Non-blocking [`set_memo`](Self::set_memo): sends the same request and returns at once; `then` runs later on this thread once the method has run (see `Trust::apply_then`).
    #[inline]
    pub fn set_memo_then(&self, memo: &str, then: impl ::core::ops::FnOnce() + 'static) {
        let __args = (::trust_core::__private::str_arg(memo),);
        ::trust_core::__private::trust_of::<Account>(self)
            .apply_then(
                move |__this: &mut Account| {
                    let (memo,) = __args;
                    <Account>::set_memo(__this, &*memo.into_inner())
                },
                move |()| then(),
            )
    }
    /// Asynchronous [`set_memo`](Self::set_memo): the future sends the same request on its first poll and resolves to the result (see `Trust::apply_async`).
    #[inline]
    pub fn set_memo_async(
        &self,
        memo: &str,
    ) -> impl ::core::future::Future<Output = ()> + ::core::marker::Send + '_ + use<'_> {
        let __args = (::trust_core::__private::str_arg(memo),);
        ::trust_core::__private::trust_of::<Account>(self)
            .apply_async(move |__this: &mut Account| {
                let (memo,) = __args;
                <Account>::set_memo(__this, &*memo.into_inner())
            })
    }
}
