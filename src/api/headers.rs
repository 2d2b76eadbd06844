//! Names of the `X-Dynamo-*` HTTP headers.
