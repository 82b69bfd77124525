//! devices (being written).
