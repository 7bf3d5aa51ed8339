"""The client helper, re-exported from the ``delegation-client`` distribution (``clients/python``).

Kept so that ``from delegation_service.client import DelegationClient, error_details`` goes on working;
new code imports ``delegation_client``.
"""

from __future__ import annotations

from delegation_client import DelegationClient, ErrorDetails, error_details

__all__ = ["DelegationClient", "ErrorDetails", "error_details"]
