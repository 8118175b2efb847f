"""LOCK: requirements + targets -> one multi-platform lock. The entry point is `api.lock`.

Modules, from the top: `api` (LockRequest -> LockResult), `resolve` (pip per target, then
`reconcile` and `merge`), `runner` (running pip, reusing unchanged runs), `pip` (the pip tool
and its launcher), `sources` (DirectSource / ProxySource), `proxy` + `proxy_http` (the loopback
metadata proxy), `fetcher` + `metadata` + `metadata_store` (core metadata without downloads),
`replay` (whole-lock reuse and the page-bound cache both reuses share), `errors`.
"""
