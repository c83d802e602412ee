//! Branded token cells (GhostCell). Not built yet.
