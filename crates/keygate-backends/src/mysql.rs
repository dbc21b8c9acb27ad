//! `type = "mysql"`: not written yet.
