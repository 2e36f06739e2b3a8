//! lab harness.
