//! Ring placement: which partition a key falls in and which nodes hold it.
