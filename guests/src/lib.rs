//! guests (being written).
