//! The body of `GET /status`.
