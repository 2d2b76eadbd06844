//! The files a run writes and the report reads back.
