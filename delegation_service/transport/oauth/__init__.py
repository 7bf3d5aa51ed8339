"""The OAuth port: the endpoints (:mod:`.endpoints`), the HTTP rules around them (:mod:`.protocol`)
and the server that carries them (:mod:`.threads`, the standard library's)."""
