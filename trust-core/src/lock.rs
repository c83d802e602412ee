//! Deadlock-free locks: ThreadKey, Mutex, RwLock, collections. Not built yet.
