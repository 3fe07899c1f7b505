//! Lightweight daemon for appliances (filled by a later issue).
