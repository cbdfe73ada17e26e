//! End-to-end tests on fresh Debian systems (the lab).
