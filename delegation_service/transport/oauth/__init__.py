"""The OAuth port: the endpoints (:mod:`.endpoints`), the HTTP rules around them (:mod:`.protocol`)
and the two servers that carry them, chosen by ``oauth.server``: the standard library's
(:mod:`.threads`) and granian's native core (:mod:`.granian_server`, the ``fast-http`` extra)."""
