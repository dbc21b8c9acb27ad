//! `type = "postgres"`: not written yet.
