"""The fuzz targets as ordinary tests: a short run in `make test`, a long one in `make fuzz`."""

from tests.fuzz.targets import (
    test_grpc_surface_never_answers_internal_or_unknown,
    test_raw_bytes_never_answer_internal_or_unknown,
    test_scope_grammar_only_ever_refuses,
    test_token_preparser_only_ever_refuses,
)

__all__ = [
    "test_grpc_surface_never_answers_internal_or_unknown",
    "test_raw_bytes_never_answer_internal_or_unknown",
    "test_scope_grammar_only_ever_refuses",
    "test_token_preparser_only_ever_refuses",
]
