//! Interval readers-writer locks. Not built yet.
