// `&T` arguments (T: Clone + Send + 'static) are cloned into the request, as `&[T]` ones are.
use trust_core::entrust;

#[entrust]
pub struct Table {
    map: std::collections::HashMap<String, u64>,
}

#[entrust]
impl Table {
    pub fn get(&self, key: &String) -> Option<u64> {
        self.map.get(key).copied()
    }
}
