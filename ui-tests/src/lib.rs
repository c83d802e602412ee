//! Compile-time rules of `trust`, as trybuild cases: see README.md beside this file.
