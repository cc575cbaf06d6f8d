//! wsevents
