//! The uwsgi server half of the zergling library: a uwsgi request becomes an http::Request.
