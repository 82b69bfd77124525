//! arch (being written).
