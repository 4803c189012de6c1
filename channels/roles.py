"""Organisation roles (assigned to each org in the genesis; checked per transaction type)."""

from __future__ import annotations

from typing import Final

BUREAU: Final = "bureau"
COURT: Final = "court"
RISK_CENTRE: Final = "risk_centre"
CREDIT_AGENCY: Final = "credit_agency"
SERVICE_PLATFORM: Final = "service_platform"
LENDER: Final = "lender"
CLERK: Final = "clerk"
AUDITOR: Final = "auditor"

ALL_ROLES: Final = frozenset(
    {BUREAU, COURT, RISK_CENTRE, CREDIT_AGENCY, SERVICE_PLATFORM, LENDER, CLERK, AUDITOR}
)
#: The five institutions, each running a node (and a relay).
INSTITUTION_ROLES: Final = frozenset({BUREAU, COURT, RISK_CENTRE, CREDIT_AGENCY, SERVICE_PLATFORM})
#: Pseudo-role of a transaction signed by a genesis node with its node key (a relay).
NODE: Final = "node"
