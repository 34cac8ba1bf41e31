//! Pure parser of the uwsgi protocol packet (what nginx sends with uwsgi_pass).
