//! Static-map offload: the pool (and the zergling library) serve mapped files themselves.
