//! Helpers for the end-to-end tests in `tests/it.rs`.
