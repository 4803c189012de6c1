"""Offline signing: the lender's key stays in an HSM; the SDK builds, the HSM signs.

    python examples/offline_signing.py --network network [--org lender1]

The "HSM" here is a plain Ed25519 key loaded from the key file (standing in for a
PKCS#11 ``CKM_EDDSA`` sign call): it receives only ``signing_message`` bytes.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path

import nacl.signing

from clients import Client, LoanEvent
from clients._config import network_lender
from ledger.genesis import load_genesis
from ledger.keyfile import load_key_file


class PretendHSM:
    """Signs raw messages with Ed25519 (pure EdDSA), like an HSM's EDDSA mechanism."""

    def __init__(self, seed: bytes) -> None:
        self._key = nacl.signing.SigningKey(seed)

    def sign(self, message: bytes) -> bytes:
        return bytes(self._key.sign(message).signature)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--network", required=True)
    ap.add_argument("--org")
    args = ap.parse_args()
    data = Path(args.network)
    org = network_lender(data, load_genesis(data / "genesis.json"), args.org)
    hsm = PretendHSM(load_key_file(data / "keys" / f"{org}.key").signer.seed)

    with Client.from_network(data, org=org) as client:
        ref = bytes.fromhex("ab" * 32)  # a borrower reference computed earlier
        loan = f"L-{secrets.token_hex(4)}"
        event = LoanEvent(
            report_id=f"{loan}-1", loan_id=loan, borrower_ref=ref, event="contract",
            amount_cents=500_000, rate_bp=1500, term_months=6,
            event_time_ms=int(time.time() * 1000),
        )  # fmt: skip
        # 1. build (and store durably, unsigned): the tx id is already final
        unsigned = client.prepare_unsigned_report(event)
        print(f"built {unsigned.tx_id.hex()[:16]}…; {len(unsigned.signing_message)} bytes to sign")
        # 2. the HSM signs the exact message
        signature = hsm.sign(unsigned.signing_message)
        # 3. attach (checked against the transaction's public key), then submit
        prepared = client.attach(unsigned, signature)
        status = client.submit(prepared)
        print(f"committed at height {status.height}: same tx id {status.tx_id == unsigned.tx_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
