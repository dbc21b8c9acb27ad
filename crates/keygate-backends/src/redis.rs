//! `type = "redis"`: not written yet.
