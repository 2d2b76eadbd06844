//! Request and answer bodies of the `/admin/*` routes.
