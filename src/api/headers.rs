//! Names of the `X-Dynamo-*` HTTP headers.
//!
//! The node writes them and the client reads them; one list keeps the two
//! spelling them alike. Lower case, as HTTP/1.1 header names compare.

/// The opaque causal context a read returns and a write sends back.
pub const CONTEXT: &str = "x-dynamo-context";
/// The same clock readably (`node1:5,node3:2`), for people and the driver.
pub const CLOCK: &str = "x-dynamo-clock";
/// The dot a write was given.
pub const DOT: &str = "x-dynamo-dot";
/// How many versions (siblings) the key holds after a write: above 1, the
/// write was concurrent with another one.
pub const SIBLINGS: &str = "x-dynamo-siblings";
/// The node that coordinated the request.
pub const COORDINATOR: &str = "x-dynamo-coordinator";
