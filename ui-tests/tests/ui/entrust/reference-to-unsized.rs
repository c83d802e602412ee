// MESSAGE (review 73). A `&T` argument is cloned into the request, so `T` must be `Clone` and sized: a `&Path`
// (or `&OsStr`, `&CStr`) gets our E0277, whose note suggests taking `Path` by value (which cannot be done), and
// three more errors about `[u8]: Sized`, one at `#[entrust]`. Take a `PathBuf`, or mark the method
// `#[entrust(skip)]`. (A `ToOwned`-based `ref_arg` would carry a `PathBuf`: see review 73's report.)
use std::path::{Path, PathBuf};

use trust_core::entrust;

#[entrust]
pub struct Files {
    last: PathBuf,
}

#[entrust]
impl Files {
    pub fn open(&mut self, path: &Path) -> usize {
        self.last = path.to_owned();
        self.last.as_os_str().len()
    }
}

fn main() {}
