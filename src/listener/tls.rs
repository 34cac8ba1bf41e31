//! TLS: certificates, SNI, client authentication and reload, for the https listeners.
