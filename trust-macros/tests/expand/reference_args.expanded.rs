use trust_core::entrust;
pub struct Table {
    map: std::collections::HashMap<String, u64>,
}
/// The delegated methods of [`Table`]: a `Trust<Table>` dereferences to this type, so every stub that `#[entrust]` generates on an impl block of `Table` is called as a method of the handle.
#[repr(transparent)]
pub struct TableStubs(::trust_core::__private::Trust<Table>);
impl ::core::fmt::Debug for TableStubs {
    fn fmt(&self, __f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
        __f.debug_tuple(::core::stringify!(TableStubs)).field(&self.0).finish()
    }
}
unsafe impl ::trust_core::__private::Entrusted for Table {
    type Stubs = TableStubs;
}
impl Table {
    pub fn get(&self, key: &String) -> Option<u64> {
        self.map.get(key).copied()
    }
}
impl TableStubs {
    #[inline]
    pub fn get(&self, key: &String) -> Option<u64> {
        ::trust_core::__private::trust_of::<Table>(self)
            .apply_with(
                |__this: &mut Table, (key,): (::trust_core::__private::Arg<String>,)| ::trust_core::__private::ret::<
                    Option<u64>,
                >(<Table>::get(__this, &key.into_inner())),
                (::trust_core::__private::ref_arg::<String>(key),),
            )
            .into_inner()
    }
    /// Non-blocking [`get`](Self::get): sends the same request and returns at once; `then` runs later on this thread with the result (see `Trust::apply_then`).
    #[inline]
    pub fn get_then(
        &self,
        key: &String,
        then: impl ::core::ops::FnOnce(Option<u64>) + 'static,
    ) {
        let __args = (::trust_core::__private::ref_arg::<String>(key),);
        ::trust_core::__private::trust_of::<Table>(self)
            .apply_then(
                move |__this: &mut Table| {
                    let (key,) = __args;
                    ::trust_core::__private::ret::<
                        Option<u64>,
                    >(<Table>::get(__this, &key.into_inner()))
                },
                move |__result: ::trust_core::__private::Returned<Option<u64>>| then(
                    __result.into_inner(),
                ),
            )
    }
    /// Asynchronous [`get`](Self::get): the future sends the same request on its first poll and resolves to the result (see `Trust::apply_async`).
    #[inline]
    pub fn get_async(
        &self,
        key: &String,
    ) -> impl ::core::future::Future<
        Output = Option<u64>,
    > + ::core::marker::Send + '_ + use<'_> {
        let __args = (::trust_core::__private::ref_arg::<String>(key),);
        let __future = ::trust_core::__private::trust_of::<Table>(self)
            .apply_async(move |__this: &mut Table| {
                let (key,) = __args;
                ::trust_core::__private::ret::<
                    Option<u64>,
                >(<Table>::get(__this, &key.into_inner()))
            });
        async move { __future.await.into_inner() }
    }
}
